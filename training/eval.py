"""Top-1 / top-5 accuracy of an NFNet on ImageNet validation, with the DeepMind protocol.

    python -m training.eval --variant F0 --weights imagenet --data_dir DIR [--image_size 256]

Each image is squash-resized to (S+32)x(S+32) (bicubic, no antialiasing), centre-cropped to SxS
and normalized with the ImageNet mean and standard deviation (training.preprocessing.eval_preprocess
through training.data.eval_dataset); S defaults to the variant's test resolution. One float32 crop
per image. A progress bar runs over the batches, then the result is printed as JSON (and written to
--output). The published accuracies to compare with are in the README, "Pretrained weights".

ImageNet is never downloaded: --data_dir is a TFDS data directory where imagenet2012 is prepared,
or add --manual_dir, a folder holding ILSVRC2012_img_val.tar and ILSVRC2012_img_train.tar (TFDS's
builder needs both), for TFDS to prepare imagenet2012 there once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import keras_nfnet.quiet  # noqa: F401  (before keras: quiets TensorFlow's start-up lines)

# isort: split
import keras
import numpy as np

from keras_nfnet.models import NFNET_VARIANTS
from keras_nfnet.models.nfnet import NUMERICS, NFNet, get_variant
from training.configs import DataConfig
from training.data import SOURCES, eval_dataset, make_source


def evaluate(model: keras.Model, dataset, steps: int | None = None, verbose: int = 1) -> dict:
    """Top-1 and top-5 accuracy (in %) of ``model`` over ``(images, one-hot labels)`` batches.

    ``steps`` (the number of batches) only sizes the progress bar.

    A prediction is top-k correct when the label is among the k largest logits (ties broken by
    NumPy's stable sort, as the reference sorts the logits).

    Example:
    >>> import numpy as np, tensorflow as tf, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    >>> ds = tf.data.Dataset.from_tensors((np.eye(2, dtype="f4"), np.eye(2, dtype="f4")))
    >>> evaluate(model, ds, verbose=0)["top1"]
    100.0
    """
    bar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["top1", "top5"])
    seen = top1 = top5 = 0
    for step, (images, labels) in enumerate(dataset, start=1):
        # predict_on_batch runs the compiled inference function (eager calls are far slower).
        logits = np.asarray(model.predict_on_batch(images), dtype="float64")
        label = np.argmax(np.asarray(labels), axis=-1)
        ranked = np.argsort(-logits, axis=-1, kind="stable")[:, :5]
        top1 += int(np.sum(ranked[:, 0] == label))
        top5 += int(np.sum(np.any(ranked == label[:, None], axis=-1)))
        seen += len(label)
        bar.update(step, [("top1", 100.0 * top1 / seen), ("top5", 100.0 * top5 / seen)])
    if seen == 0:
        raise ValueError("The evaluation dataset is empty.")
    return {"examples": seen, "top1": 100.0 * top1 / seen, "top5": 100.0 * top5 / seen}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m training.eval`` (every flag says its default)."""
    parser = argparse.ArgumentParser(
        prog="python -m training.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the paragraphs
    )
    add = parser.add_argument
    add(
        "--variant",
        default="F0",
        help=f"NFNet variant: {', '.join(NFNET_VARIANTS)} (default: %(default)s)",
    )
    add(
        "--weights",
        default="imagenet",
        help="'imagenet' (the published ImageNet weights of F0 to F6, downloaded once and cached), "
        "the path of a .weights.h5 file, or 'none' (random initialization) (default: %(default)s)",
    )
    add(
        "--data_dir",
        default=None,
        help="TFDS data directory holding the prepared dataset, or where to prepare it "
        "(default: TFDS's, $TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )
    add(
        "--manual_dir",
        default=None,
        help="folder holding ILSVRC2012_img_val.tar and ILSVRC2012_img_train.tar, for TFDS to "
        "prepare imagenet2012 into --data_dir once (default: none; the dataset must be prepared)",
    )
    add("--dataset", default="imagenet2012", help="TFDS dataset name (default: %(default)s)")
    add(
        "--source",
        default="tfds",
        choices=SOURCES,
        help="where the images come from: 'tfds' (--dataset, --split, --data_dir), "
        "'image_folder' (--folder) or 'digits' (scikit-learn's bundled digits, --split train "
        "or test) (default: %(default)s)",
    )
    add(
        "--folder",
        default=None,
        help="with --source image_folder: the folder of folder/<class name>/<image> files "
        "(default: none)",
    )
    add("--split", default="validation", help="TFDS split to evaluate (default: %(default)s)")
    add(
        "--image_size",
        type=int,
        default=None,
        help="crop size S: images are resized to (S+32)x(S+32), then centre-cropped to SxS "
        "(default: the variant's test size, 256 for F0)",
    )
    add("--batch_size", type=int, default=50, help="images per batch (default: %(default)s)")
    add(
        "--numerics",
        default="deepmind",
        choices=NUMERICS,
        help="'deepmind' (tanh GELU, max(n var, 1e-4): what the DeepMind weights were trained "
        "with) or 'timm' (exact GELU, var + 1e-5: reproduces timm's dm_nfnet outputs) "
        "(default: %(default)s)",
    )
    add(
        "--output",
        default=None,
        help="also write the JSON result to this file (default: none, only print it)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    image_size = args.image_size or get_variant(args.variant).test_size
    cfg = DataConfig(
        source=args.source,
        name=args.dataset,
        split=args.split,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
        folder=args.folder,
        image_size=image_size,
        global_batch_size=args.batch_size,
        eval_transform="resize_crop_32",
        deterministic=True,
    )
    source = make_source(cfg)
    weights = None if args.weights.lower() == "none" else args.weights
    model = NFNet(
        args.variant,
        weights=weights,
        input_shape=(image_size, image_size, 3),
        classes=source.num_classes,
        classifier_activation=None,
        numerics=args.numerics,
    )
    start = time.perf_counter()
    steps = -(-source.num_examples // args.batch_size)  # the last batch may be smaller
    result = evaluate(model, eval_dataset(cfg, source, source.num_classes), steps)
    result = {
        "variant": args.variant,
        "weights": args.weights,
        "numerics": args.numerics,
        "dataset": f"{args.dataset}:{args.split}" if args.source == "tfds" else args.source,
        "image_size": image_size,
        **result,
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
