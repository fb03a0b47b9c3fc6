"""Top-1 / top-5 of an NFNet on ImageNet validation with the DeepMind protocol (ref §15).

``python -m training.eval --variant F0 --weights imagenet --data_dir DIR [--image_size 256]``

Images go through `training.preprocessing.eval_preprocess` (squash-resize to (S+32)², bicubic,
no antialias; centre crop S; ImageNet mean/std) via `training.data.eval_dataset`; S defaults to
the variant's test resolution. One float32 crop per image; a progress bar runs over the batches
and the result is printed (and written with ``--output``) as JSON. The published figures to
compare with are in the README ("Pretrained weights") and checkpoints.md §4.

ImageNet is never downloaded: ``--data_dir`` is a TFDS directory with ``imagenet2012`` prepared,
or add ``--manual_dir`` holding ``ILSVRC2012_img_val.tar`` (and the train tar, which TFDS's
builder requires) for TFDS to prepare it once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import keras
import numpy as np

from keras_nfnet.models.nfnet import NFNet, get_variant
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.eval", description=__doc__)
    parser.add_argument("--variant", default="F0", help="F0 ... F7, F0+ ... F7+")
    parser.add_argument(
        "--weights", default="imagenet", help="'imagenet', a .weights.h5 path, or 'none'"
    )
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir with imagenet2012")
    parser.add_argument("--manual_dir", default=None, help="folder with the ImageNet tars")
    parser.add_argument("--dataset", default="imagenet2012", help="TFDS dataset name")
    parser.add_argument("--source", default="tfds", choices=SOURCES)
    parser.add_argument("--split", default="validation")
    parser.add_argument(
        "--image_size", type=int, default=None, help="default: the variant's test size"
    )
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--numerics", default="deepmind", choices=("deepmind", "timm"))
    parser.add_argument("--output", default=None, help="also write the JSON result here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    image_size = args.image_size or get_variant(args.variant).test_size
    cfg = DataConfig(
        source=args.source,
        name=args.dataset,
        split=args.split,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
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
