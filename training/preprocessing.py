"""Per-image transforms of the NFNet ImageNet recipe, as TensorFlow ops for `tf.data`.

* `eval_preprocess`: the evaluation protocol of docs/nfnet_reference.md §15 (squash-resize the whole
  image to (S+32)x(S+32), bicubic, no antialias, unclamped; centre-crop SxS at offset 16;
  ImageNet mean/std).
* `random_resized_crop`, `train_preprocess`: the training crop, flip and bicubic resize of §14.6
  steps 1-3. Randomness comes from stateless ops driven by an explicit ``seed`` (shape ``[2]``),
  so a pipeline that derives one seed per example is deterministic and resumable.

The ops are TensorFlow ops because the reference numerics are TensorFlow's (§15: bicubic kernels
differ between backends); they run inside `tf.data` whatever the Keras backend.
"""

from __future__ import annotations

import tensorflow as tf

from keras_nfnet.models.imagenet_utils import IMAGENET_MEAN, IMAGENET_STD, preprocess_input

# §14.6 step 1: `sample_distorted_bounding_box` settings of the DeepMind pipeline.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_MIN_OBJECT_COVERED = 0.1
CROP_MAX_ATTEMPTS = 10
# §15: the resize margin of `eval_preproc='resize_crop_32'`.
EVAL_RESIZE_MARGIN = 32


def _check_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer. Received: {image_size!r}.")
    return image_size


def _check_image(image: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError(
            f"Expected one HxWx3 image (rank 3). Received shape {image.shape}; map the transform "
            "over a batch instead."
        )
    if image.shape[-1] is not None and image.shape[-1] != 3:
        raise ValueError(f"Expected 3 RGB channels in the last axis. Received {image.shape}.")
    return image


def normalize(image: tf.Tensor) -> tf.Tensor:
    """§14.6 step 6 / §15 step 4: ``(x - 255 mean) / (255 std)`` in float32.

    Delegates to `keras_nfnet.preprocess_input` (the one home of the formula) after a TF cast, so
    the result stays a TF tensor inside `tf.data`.

    Example:
    >>> import numpy as np
    >>> x = normalize(np.full((1, 1, 3), 255.0, "float32"))
    >>> [round(float(v), 4) for v in x.numpy()[0, 0]]
    [2.2489, 2.4286, 2.64]
    """
    return preprocess_input(tf.cast(image, tf.float32))


def eval_preprocess(image, image_size: int) -> tf.Tensor:
    """§15 evaluation transform: squash-resize to (S+32)x(S+32), centre-crop SxS, normalize.

    The whole image is resized (the aspect ratio is ignored) with `tf.image.resize` bicubic and
    ``antialias=False``; the float result is not clamped. The crop starts at
    ``((S + 32 - S) + 1) // 2 = 16`` on both axes.

    Args:
        image: an HxWx3 image, uint8 or float, values in [0, 255].
        image_size: S, the evaluation resolution (the variant's ``test_size``).

    Returns:
        A float32 SxSx3 tensor normalized with the ImageNet mean and std.

    Example:
    >>> import numpy as np
    >>> eval_preprocess(np.zeros((300, 400, 3), "uint8"), 256).shape
    TensorShape([256, 256, 3])
    """
    size = _check_size(image_size)
    image = _check_image(image)
    resized = tf.image.resize(
        tf.cast(image, tf.float32),
        [size + EVAL_RESIZE_MARGIN, size + EVAL_RESIZE_MARGIN],
        method="bicubic",
        antialias=False,
    )
    offset = (EVAL_RESIZE_MARGIN + 1) // 2  # ((S + 32 - S) + 1) // 2 = 16
    cropped = resized[offset : offset + size, offset : offset + size, :]
    return normalize(cropped)


def center_crop_fallback(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """§14.6 step 1 fallback: aspect-preserving centre crop of side ``S·min(H, W)/(S+32)``.

    Same arithmetic as DeepMind's ``_decode_and_center_crop``: the side is truncated to an
    integer and the offsets are ``((H - side) + 1) // 2``.

    Example:
    >>> import numpy as np
    >>> center_crop_fallback(np.zeros((100, 200, 3), "uint8"), 224).shape
    TensorShape([87, 87, 3])
    """
    size = _check_size(image_size)
    image = _check_image(image)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(
        (size / (size + EVAL_RESIZE_MARGIN)) * tf.cast(tf.minimum(height, width), tf.float32),
        tf.int32,
    )
    top = ((height - side) + 1) // 2
    left = ((width - side) + 1) // 2
    return tf.image.crop_to_bounding_box(image, top, left, side, side)


def random_resized_crop(image, image_size: int, seed) -> tf.Tensor:
    """§14.6 step 1: Inception-style crop with DeepMind's settings and fallback.

    `tf.image.stateless_sample_distorted_bounding_box` with area (0.08, 1.0), aspect ratio
    (3/4, 4/3), ``min_object_covered=0.1``, 10 attempts and the whole image as the box. When the
    sampler fails it returns the whole image; as in DeepMind's ``_decode_and_random_crop``, that is
    detected by comparing shapes and replaced by `center_crop_fallback`.

    Args:
        image: an HxWx3 image.
        image_size: S, the training resolution (used only by the fallback).
        seed: int32/int64 tensor of shape ``[2]`` (stateless RNG seed).

    Example:
    >>> import numpy as np
    >>> crop = random_resized_crop(np.zeros((64, 80, 3), "uint8"), 32, seed=[1, 2])
    >>> crop.shape[-1], crop.dtype.name
    (3, 'uint8')
    """
    size = _check_size(image_size)
    image = _check_image(image)
    shape = tf.shape(image)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=CROP_MIN_OBJECT_COVERED,
        aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE,
        max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    failed = tf.reduce_all(tf.equal(shape, tf.shape(crop)))
    return tf.cond(failed, lambda: center_crop_fallback(image, size), lambda: crop)


def resize_bicubic(image, image_size: int) -> tf.Tensor:
    """Squash-resize to SxS with `tf.image.resize` bicubic, no antialias, float32, unclamped.

    Example:
    >>> import numpy as np
    >>> resize_bicubic(np.zeros((8, 8, 3), "uint8"), 32).shape
    TensorShape([32, 32, 3])
    """
    size = _check_size(image_size)
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [size, size], method="bicubic", antialias=False
    )
    return tf.ensure_shape(resized, [size, size, 3])


def train_preprocess(
    image, image_size: int, seed, random_crop: bool = True, random_flip: bool = True
) -> tf.Tensor:
    """§14.6 steps 1-3: random-resized crop, random horizontal flip, bicubic resize to SxS.

    The output is float32, **unclamped** (bicubic overshoot kept) and **not normalized**: mixing
    and RandAugment (steps 4-5) work on the [0, 255] scale, and `normalize` comes last.

    Args:
        image: an HxWx3 image, uint8 or float in [0, 255].
        image_size: S, the training resolution.
        seed: int tensor of shape ``[2]``; the crop and the flip use independent child seeds.
        random_crop: step 1 (off: the whole image is resized, e.g. for the digits).
        random_flip: step 2.

    Example:
    >>> import numpy as np
    >>> out = train_preprocess(np.zeros((64, 80, 3), "uint8"), 32, seed=[3, 4])
    >>> out.shape, out.dtype.name
    (TensorShape([32, 32, 3]), 'float32')
    """
    size = _check_size(image_size)
    image = _check_image(image)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    if random_crop:
        image = random_resized_crop(image, size, seeds[0])
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return resize_bicubic(image, size)


__all__ = [
    "CROP_AREA_RANGE",
    "CROP_ASPECT_RATIO_RANGE",
    "CROP_MAX_ATTEMPTS",
    "CROP_MIN_OBJECT_COVERED",
    "EVAL_RESIZE_MARGIN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "center_crop_fallback",
    "eval_preprocess",
    "normalize",
    "random_resized_crop",
    "resize_bicubic",
    "train_preprocess",
]
