"""`tf.data` input pipelines: TFDS datasets (``imagenet2012`` with its manual directory), image
folders, and the embedded scikit-learn digits (docs/nfnet_reference.md §14.6, §15).

Design:

* A **source** yields ``(encoded_or_decoded_image, label, index)``; ``index`` is the example's
  position in the whole split, so per-example randomness does not depend on sharding.
* Sharding is element-wise (`Dataset.shard`) by the input pipeline id that
  `tf.distribute` passes to `distribute_datasets_from_function`; that works the same under
  MirroredStrategy, MultiWorkerMirroredStrategy and TPUStrategy, and each pipeline knows exactly
  how many examples it holds (needed to resume mid-epoch). TFDS images are read undecoded
  (``SkipDecoding``) so shards and skipped examples cost no JPEG decode.
* The training stream is epoch after epoch, each shuffled with seed ``seed + epoch``; every random
  op is stateless, seeded from ``(seed, epoch, index)``. So the stream is a pure function of the
  step it starts at: `train_dataset(..., start_step=s)` skips whole epochs and then the examples
  already used, which is how a resumed run sees exactly the batches the interrupted run would have.
* Per-replica batching: each pipeline batches ``global_batch_size / num_replicas`` (twice that,
  raw, when MixUp/CutMix consume two images per output, §14.6 step 4).

Corrupt files in an image folder are found up front (every file is decoded once in a parallel
pass), **skipped with a warning that counts them**, and reported in ``metrics.json``
(``skipped_images``: distinct files, once even when train and eval read the same folder;
``skipped_images_per_split``: per split); set ``skip_corrupt_images=False`` to get a ValueError
that lists them instead.

Settings the data cannot satisfy (a missing folder or ImageNet manual directory, an unknown TFDS
dataset, corrupt files with ``skip_corrupt_images=False``, a batch that does not split over the
replicas) raise `training.configs.ConfigError`, before the run writes anything.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from training import preprocessing
from training.augment import mixup_cutmix
from training.configs import EVAL_TRANSFORMS, SOURCES, ConfigError, DataConfig
from training.randaugment import parse_level, randaugment_float

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
IMAGENET_INSTRUCTIONS = (
    "ImageNet cannot be downloaded automatically. Download ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar from https://image-net.org/ (an account is needed), put both files in "
    "one directory and pass it as train_data.manual_dir and eval_data.manual_dir "
    "(e.g. --params_override=train_data.manual_dir=/data/imagenet,eval_data.manual_dir="
    "/data/imagenet); TFDS then prepares the dataset into data_dir once. Alternatively point "
    "data_dir at an already prepared TFDS directory."
)
DIGITS_TEST_FRACTION = 0.2


@dataclasses.dataclass
class Source:
    """A split's examples, as ``(image, label, index)`` with ``image`` encoded bytes
    (``encoded=True``) or a uint8 HxWx3 tensor.

    In-memory arrays and file lists have random access (``lookup(index) -> (image, label)``), so
    each epoch is a full stateless permutation (`tf.random.experimental.index_shuffle`). TFDS
    splits are sequential (``dataset``)."""

    num_examples: int
    num_classes: int
    encoded: bool
    lookup: Callable | None = None
    dataset: tf.data.Dataset | None = None
    skipped_files: tuple[str, ...] = ()

    def examples(self, num_shards: int = 1, shard: int = 0) -> tf.data.Dataset:
        """Shard ``shard`` of the examples in their stored order."""
        if self.lookup is None:
            return self.dataset.shard(num_shards, shard)
        indices = tf.data.Dataset.range(shard, self.num_examples, num_shards)
        return indices.map(lambda i: (*self.lookup(i), i))


# ----------------------------------------------------------------------------- sources


def digits_arrays(split: str, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled ``load_digits`` (1,797 real 8x8 digits), stratified 80/20 split,
    scaled from [0, 16] to [0, 255], bilinearly upsampled to ``image_size`` and copied to RGB.

    Example:
    >>> x, y = digits_arrays("test", 32)
    >>> x.shape, x.dtype.name, int(y.max())
    ((360, 32, 32, 3), 'uint8', 9)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ConfigError(f"digits splits are 'train' and 'test'. Received: split={split!r}.")
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=seed,
    )
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    x = tf.image.resize(x[..., None] * (255.0 / 16.0), [image_size, image_size], "bilinear")
    x = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
    return np.repeat(x.numpy(), 3, axis=-1), y.astype("int64")


def _digits_source(cfg: DataConfig) -> Source:
    x, y = digits_arrays(cfg.split, cfg.image_size)
    images, labels = tf.constant(x), tf.constant(y)
    return Source(
        len(y), 10, encoded=False, lookup=lambda i: (tf.gather(images, i), tf.gather(labels, i))
    )


def list_image_folder(folder: str) -> tuple[list[str], list[int], list[str]]:
    """Files and labels of ``folder/<class>/<image>`` (classes sorted by name)."""
    if not folder or not tf.io.gfile.isdir(folder):
        raise ConfigError(
            f"Image folder {folder!r} does not exist or is not a directory. Expected "
            "folder/<class name>/<image files> (extensions: " + ", ".join(IMAGE_EXTENSIONS) + ")."
        )
    classes = sorted(
        d for d in tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(os.path.join(folder, d))
    )
    classes = [c.rstrip("/") for c in classes]
    files, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted(tf.io.gfile.listdir(os.path.join(folder, name))):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, name, f))
                labels.append(label)
    if not files:
        raise ConfigError(
            f"No images found in {folder!r}. Expected folder/<class name>/<image files> "
            "(extensions: " + ", ".join(IMAGE_EXTENSIONS) + ")."
        )
    return files, labels, classes


def _decode(contents) -> tf.Tensor:
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def find_corrupt_images(files: list[str]) -> list[str]:
    """Files that `tf.io.decode_image` cannot decode (one parallel pass over all files)."""
    ds = tf.data.Dataset.from_tensor_slices((files, np.arange(len(files), dtype="int64")))
    ds = ds.map(
        lambda f, i: (i, tf.shape(_decode(tf.io.read_file(f)))[0]),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).ignore_errors()
    good = {int(i) for i, _ in ds.as_numpy_iterator()}
    return [f for i, f in enumerate(files) if i not in good]


def _folder_source(cfg: DataConfig) -> Source:
    files, labels, classes = list_image_folder(cfg.folder)
    bad = find_corrupt_images(files)
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        if not cfg.skip_corrupt_images:
            raise ConfigError(
                f"{len(bad)} of {len(files)} files in {cfg.folder!r} cannot be decoded as images: "
                f"{shown}. Remove them, or set skip_corrupt_images=True to skip them."
            )
        warnings.warn(
            f"Skipping {len(bad)} corrupt image file(s) of {len(files)} in {cfg.folder!r}: {shown}",
            stacklevel=2,
        )
        keep = [i for i, f in enumerate(files) if f not in set(bad)]
        files = [files[i] for i in keep]
        labels = [labels[i] for i in keep]
    paths, targets = tf.constant(files), tf.constant(labels, tf.int64)
    return Source(
        len(files),
        len(classes),
        encoded=True,
        lookup=lambda i: (tf.io.read_file(tf.gather(paths, i)), tf.gather(targets, i)),
        skipped_files=tuple(bad),
    )


def _tfds_source(cfg: DataConfig) -> Source:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
    except Exception as err:  # tfds raises its own DatasetNotFoundError
        raise ConfigError(f"Unknown TFDS dataset {cfg.name!r}: {err}") from err
    needs_manual = bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
    if cfg.manual_dir is not None and not tf.io.gfile.isdir(cfg.manual_dir):
        raise ConfigError(
            f"manual_dir {cfg.manual_dir!r} for TFDS dataset {cfg.name!r} does not exist. "
            + (IMAGENET_INSTRUCTIONS if cfg.name.startswith("imagenet2012") else "")
        )
    decoders = {"image": tfds.decode.SkipDecoding()} if "image" in builder.info.features else None
    try:
        ds = builder.as_dataset(split=cfg.split, shuffle_files=False, decoders=decoders)
    except Exception as first:
        if needs_manual and cfg.manual_dir is None:
            raise ConfigError(
                f"TFDS dataset {cfg.name!r} is not prepared in data_dir={cfg.data_dir!r} and "
                f"needs manually downloaded files. {IMAGENET_INSTRUCTIONS}"
            ) from first
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=cfg.manual_dir)
        )
        ds = builder.as_dataset(split=cfg.split, shuffle_files=False, decoders=decoders)
    try:
        num_examples = int(builder.info.splits[cfg.split].num_examples)
    except KeyError:  # no split metadata (e.g. tfds.testing.mock_data): count the records
        num_examples = int(ds.cardinality())
        if num_examples < 0:
            num_examples = int(ds.reduce(0, lambda n, _: n + 1))
    num_classes = int(builder.info.features["label"].num_classes)
    ds = ds.enumerate().map(lambda i, ex: (ex["image"], ex["label"], i))
    return Source(num_examples, num_classes, encoded=decoders is not None, dataset=ds)


def make_source(cfg: DataConfig) -> Source:
    """The examples of ``cfg.split`` of ``cfg.source``."""
    if cfg.source not in SOURCES:
        raise ConfigError(f"Unknown data source {cfg.source!r}. Accepted: {', '.join(SOURCES)}.")
    if cfg.eval_transform not in EVAL_TRANSFORMS:
        raise ConfigError(
            f"Unknown eval_transform {cfg.eval_transform!r}. Accepted: "
            f"{', '.join(EVAL_TRANSFORMS)}."
        )
    if cfg.source == "digits":
        return _digits_source(cfg)
    if cfg.source == "image_folder":
        return _folder_source(cfg)
    return _tfds_source(cfg)


# ----------------------------------------------------------------------------- pipelines


def _options(cfg: DataConfig) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    # Sharding is done here, element-wise, by input pipeline id.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _parallel(cfg: DataConfig) -> int:
    return tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls


def _pipeline(input_context) -> tuple[int, int, int]:
    if input_context is None:
        return 1, 0, 1
    return (
        input_context.num_input_pipelines,
        input_context.input_pipeline_id,
        input_context.num_replicas_in_sync,
    )


def shard_size(num_examples: int, num_shards: int, shard: int) -> int:
    """Examples in shard ``shard`` of ``Dataset.shard(num_shards, shard)``.

    Example:
    >>> [shard_size(10, 3, i) for i in range(3)]
    [4, 3, 3]
    """
    return num_examples // num_shards + int(shard < num_examples % num_shards)


def per_replica_batch(global_batch_size: int, num_replicas: int) -> int:
    if global_batch_size % num_replicas:
        raise ConfigError(
            f"global_batch_size={global_batch_size} must be divisible by the number of replicas "
            f"({num_replicas})."
        )
    return global_batch_size // num_replicas


def train_dataset(
    cfg: DataConfig,
    source: Source,
    num_classes: int,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Infinite training stream of ``(normalized images, labels)`` batches starting at step
    ``start_step`` (§14.6, in order: crop, flip, bicubic resize, MixUp/CutMix on a 2x raw batch,
    RandAugment per mixed image, normalize, batch). Labels are one-hot or mixed, not smoothed."""
    num_pipelines, pipeline_id, num_replicas = _pipeline(input_context)
    batch = per_replica_batch(cfg.global_batch_size, num_replicas)
    mixing = cfg.mixup_cutmix
    if mixing and batch % 2:
        raise ConfigError(
            f"MixUp/CutMix split each per-replica batch in two halves; the per-replica batch "
            f"{batch} (global_batch_size={cfg.global_batch_size}) must be even."
        )
    raw_batch = 2 * batch if mixing else batch
    examples = shard_size(source.num_examples, num_pipelines, pipeline_id)
    if examples < 1:
        raise ConfigError(
            f"Input pipeline {pipeline_id} of {num_pipelines} holds no examples "
            f"({source.num_examples} in the split)."
        )
    if cfg.randaugment is not None:
        parse_level(cfg.randaugment)
    first_epoch, skip = divmod(start_step * raw_batch, examples)
    size = cfg.image_size
    seed = tf.constant(cfg.seed, tf.int64)

    def keyed(e):
        return lambda x, y, i: (x, y, tf.stack([seed, e, i]))

    if source.lookup is not None:
        # Random access: epoch e visits this shard in a stateless permutation seeded by (seed, e).
        def epoch(e):
            positions = tf.data.Dataset.range(examples)

            def pick(j):
                k = tf.raw_ops.RandomIndexShuffle(
                    index=j, seed=tf.stack([seed, e, 0]), max_index=examples - 1
                )
                i = pipeline_id + k * num_pipelines
                return (*source.lookup(i), i)

            return positions.map(pick).map(keyed(e))

    else:
        # Sequential (TFDS): a seeded shuffle buffer, then an epoch-seeded permutation inside
        # blocks of the buffer size (tf.data's shuffle seed cannot vary with a traced epoch).
        base = source.examples(num_pipelines, pipeline_id)
        if cfg.cache:
            base = base.cache()
        buffer = max(1, min(cfg.shuffle_buffer_size, examples))
        base = base.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=False)

        def epoch(e):
            def permute(x, y, i):
                keys = tf.map_fn(
                    lambda k: tf.random.stateless_uniform([], tf.stack([seed + e, k])),
                    i,
                    fn_output_signature=tf.float32,
                )
                order = tf.argsort(keys)
                return tf.gather(x, order), tf.gather(y, order), tf.gather(i, order)

            blocks = base.batch(buffer).map(permute).unbatch()
            return blocks.map(keyed(e))

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)

    def prepare(x, y, key):
        image = _decode(x) if source.encoded else x
        seed = tf.random.experimental.stateless_fold_in(key[:2], key[2])
        image = preprocessing.train_preprocess(
            image, size, seed, random_crop=cfg.random_crop, random_flip=cfg.random_flip
        )
        return image, tf.one_hot(y, num_classes), seed

    ds = ds.map(prepare, num_parallel_calls=_parallel(cfg), deterministic=cfg.deterministic)
    ds = ds.batch(raw_batch, drop_remainder=True)
    if mixing:

        def mix(images, labels, seeds):
            batch_seed = tf.random.experimental.stateless_fold_in(seeds[0], 1)
            images, labels, _ = mixup_cutmix(images, labels, batch_seed, cfg.mixup_alpha)
            # Each output keeps the seed of its first image (Q1 or Q3) for RandAugment.
            quarter = tf.shape(seeds)[0] // 4
            out_seeds = tf.concat([seeds[:quarter], seeds[2 * quarter : 3 * quarter]], 0)
            return images, labels, out_seeds

        ds = ds.map(mix, num_parallel_calls=_parallel(cfg), deterministic=cfg.deterministic)
    ds = ds.unbatch()

    def finish(image, label, seed):
        if cfg.randaugment is not None:
            ra_seed = tf.random.experimental.stateless_fold_in(seed, 2)
            image = randaugment_float(image, cfg.randaugment, ra_seed)
        return preprocessing.normalize(image), label

    ds = ds.map(finish, num_parallel_calls=_parallel(cfg), deterministic=cfg.deterministic)
    ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options(cfg))


def eval_dataset(
    cfg: DataConfig,
    source: Source,
    num_classes: int,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Evaluation batches ``(normalized images, one-hot labels)``; ``eval_transform`` is the §15
    protocol (``resize_crop_32``), DeepMind's base-experiment ``crop_resize`` (centre crop at
    S/(S+32) of the short side, then bicubic resize) or a plain squash-resize (``resize``)."""
    num_pipelines, pipeline_id, num_replicas = _pipeline(input_context)
    batch = per_replica_batch(cfg.global_batch_size, num_replicas)
    size = cfg.image_size

    def prepare(x, y, _):
        image = _decode(x) if source.encoded else x
        if cfg.eval_transform == "resize_crop_32":
            image = preprocessing.eval_preprocess(image, size)
        elif cfg.eval_transform == "crop_resize":
            crop = preprocessing.center_crop_fallback(image, size)
            image = preprocessing.normalize(preprocessing.resize_bicubic(crop, size))
        else:
            image = preprocessing.normalize(preprocessing.resize_bicubic(image, size))
        return tf.ensure_shape(image, [size, size, 3]), tf.one_hot(y, num_classes)

    ds = source.examples(num_pipelines, pipeline_id)
    ds = ds.map(prepare, num_parallel_calls=_parallel(cfg), deterministic=True)
    ds = ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options(cfg))
