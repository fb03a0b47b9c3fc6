"""``python -m keras_nfnet.convert --source {deepmind,timm} --variant F0 INPUT OUTPUT.weights.h5``.

Converts a timm ``model.safetensors`` or a DeepMind ``F*_haiku.npz`` (read with the restricted
unpickler, docs/checkpoints.md §1.4) into a Keras weights file that
``keras_nfnet.NFNet(variant, weights=OUTPUT)`` (or ``keras_nfnet.create_model(name,
weights=OUTPUT)`` for any other row) loads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

from keras_nfnet.architecture.rows import MODEL_SPECS, NFNET_VARIANTS, resolve_spec
from keras_nfnet.convert.checkpoint import (
    SOURCES,
    checkpoint_classes,
    load_checkpoint_arrays,
    read_checkpoint,
    save_weights_atomic,
)
from keras_nfnet.models.normfree import NormFreeNet


def convert_checkpoint(
    source: str,
    variant,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    include_top: bool = True,
) -> str:
    """Convert a timm or DeepMind checkpoint into a Keras ``.weights.h5`` file.

    ``variant`` is a DeepMind F variant (``"F0"``, an `NFNetVariant`) or any `create_model` row
    name. The output loads with ``keras_nfnet.NFNet(variant, include_top=..., weights=...)``
    (or ``create_model(name, ...)``), with ``classes`` equal to the checkpoint's.

    Example:
    >>> convert_checkpoint("timm", "F0", "model.safetensors", "f0.weights.h5")  # doctest: +SKIP
    'f0.weights.h5'
    """
    arrays = read_checkpoint(source, input_path)
    model = NormFreeNet(
        resolve_spec(variant),
        include_top=include_top,
        classes=checkpoint_classes(source, arrays) if include_top else 1000,
    )
    load_checkpoint_arrays(model, arrays, source, variant, include_top=include_top)
    return save_weights_atomic(model, output_path)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_nfnet.convert",
        description="Convert a pretrained NFNet checkpoint into a Keras .weights.h5 file.",
    )
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument(
        "--variant",
        required=True,
        help="a DeepMind F variant (F0 ... F7, F0+ ... F7+) or any create_model name "
        "(eca_nfnet_l0, nf_regnet_b1 ...)",
    )
    parser.add_argument(
        "--no_top", action="store_true", help="drop the classifier (include_top=False)"
    )
    parser.add_argument("input", help="model.safetensors (timm) or F*_haiku.npz (deepmind)")
    parser.add_argument("output", help="the Keras weights file to write, *.weights.h5")
    args = parser.parse_args(argv)
    # Every argument is checked before the (possibly 286 MB) input is read.
    try:
        resolve_spec(args.variant)
    except ValueError:
        parser.error(
            f"Unknown NFNet variant {args.variant!r}. Accepted: {', '.join(NFNET_VARIANTS)} or "
            f"{', '.join(MODEL_SPECS)}."
        )
    if not os.path.isfile(args.input):
        parser.error(f"input file {args.input!r} does not exist (or is not a file).")
    if not args.output.endswith(".weights.h5"):
        parser.error(f"the output must end in '.weights.h5'. Received: {args.output!r}.")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        parser.error(f"the output folder {out_dir!r} does not exist.")
    print(f"input SHA-256: {sha256_of(args.input)}")
    try:
        path = convert_checkpoint(
            args.source, args.variant, args.input, args.output, include_top=not args.no_top
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
