"""Signal Propagation Plots of named models at initialization (nfnet_reference.md §12).

Usage::

    python -m keras_nfnet.analysis --models nf_resnet50,resnet50v2_bn,resnet50v2_plain \\
        --out spp.png [--image_size 224] [--batch_size 8] [--seed 0] [--skip_gain 1] \\
        [--data spp.npz]

Model names: ``nf_resnet{26,50,101,152,200,288,600}[_se]``, ``nf_regnet_b{0..8}``,
``resnet{depth}v2_bn[_se]``, ``resnet{depth}v2_plain[_se]``, ``skipinit_resnet{depth}``,
``nfnet_f{0..7}[+]``, ``linear{depth}_plain`` and ``linear{depth}_bn`` (the fully connected
linear residual network, width 256). The inputs are one batch of unit-Gaussian images (§12.2).
``--skip_gain`` (default 1, as §12.2 recommends for NF models) sets every ``skip_gain`` while
measuring; ``none`` keeps the initial zeros.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from keras_nfnet.analysis.linear_resnet import linear_residual_network
from keras_nfnet.analysis.plot import plot_signal_propagation
from keras_nfnet.analysis.signal_propagation import signal_propagation
from keras_nfnet.atomic import atomic_path

LINEAR_WIDTH = 256

_PATTERNS = {
    "nf_resnet": re.compile(r"nf_resnet(\d+)(_se)?"),
    "nf_regnet": re.compile(r"nf_regnet_(b\d)"),
    "resnet_v2": re.compile(r"resnet(\d+)v2_(bn|plain)(_se)?"),
    "skipinit": re.compile(r"skipinit_resnet(\d+)"),
    "nfnet": re.compile(r"nfnet_(f\d\+?)"),
    "linear": re.compile(r"linear(\d+)_(plain|bn)"),
}


def build_model(spec: str, image_size: int, seed: int | None = None):
    """Build the model a CLI name stands for, without its classifier.

    Example:
    >>> build_model("linear3_bn", image_size=64).name
    'linear_resnet3_bn'
    """
    from keras_nfnet.models.nf_regnet import NFRegNet
    from keras_nfnet.models.nf_resnet import NFResNet
    from keras_nfnet.models.nfnet import NFNet
    from keras_nfnet.models.resnet_v2 import ResNetV2, SkipInitResNet

    image = {"include_top": False, "input_shape": (image_size, image_size, 3)}
    spec = spec.strip().lower()
    match = {key: pattern.fullmatch(spec) for key, pattern in _PATTERNS.items()}
    if m := match["nf_resnet"]:
        return NFResNet(m[1], use_se=bool(m[2]), name=spec, **image)
    if m := match["nf_regnet"]:
        return NFRegNet(m[1], name=spec, **image)
    if m := match["resnet_v2"]:
        normalization = "batch_norm" if m[2] == "bn" else "none"
        return ResNetV2(m[1], normalization=normalization, use_se=bool(m[3]), name=spec, **image)
    if m := match["skipinit"]:
        return SkipInitResNet(m[1], name=spec, **image)
    if m := match["nfnet"]:
        return NFNet(m[1].upper(), name=spec.replace("+", "_plus"), **image)
    if m := match["linear"]:
        normalization = "batch_norm" if m[2] == "bn" else None
        return linear_residual_network(int(m[1]), LINEAR_WIDTH, normalization, seed=seed)
    raise ValueError(
        f"Unknown model name {spec!r}. Accepted: nf_resnet{{26,50,...}}[_se], "
        "nf_regnet_b{0..8}, resnet{depth}v2_{bn,plain}[_se], skipinit_resnet{depth}, "
        "nfnet_f{0..7}[+], linear{depth}_{plain,bn}."
    )


def _skip_gain(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--skip_gain must be a number or 'none'. Received: {value!r}."
        ) from err


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {value!r}.")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m keras_nfnet.analysis",
        description="Signal Propagation Plots (Brock et al., 2021) of models at initialization.",
    )
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--out", required=True, help="image to write, e.g. spp.png")
    parser.add_argument("--image_size", type=_positive_int, default=224)
    parser.add_argument("--batch_size", type=_positive_int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_gain", type=_skip_gain, default=1.0)
    parser.add_argument("--data", default=None, help="optional .npz for the plotted numbers")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None):
    """Run the CLI; returns ``(results, figure)``."""
    args = parse_args(argv)
    import keras

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = rng.standard_normal((args.batch_size, args.image_size, args.image_size, 3))
    results = {}
    for spec in [s for s in args.models.split(",") if s.strip()]:
        model = build_model(spec, args.image_size, args.seed)
        batch = images
        if spec.strip().lower().startswith("linear"):
            batch = rng.standard_normal((args.batch_size * 32, LINEAR_WIDTH))
        results[spec.strip()] = signal_propagation(model, batch, skip_gain=args.skip_gain)
        stats = results[spec.strip()]
        print(
            f"{spec.strip()}: {len(stats['res_avg_var'])} blocks, final avg_var "
            f"{stats['avg_var'][-1]:.4g}, mean res_avg_var {stats['res_avg_var'].mean():.4g}, "
            f"max avg_sq_mean {stats['avg_sq_mean'][1:].max():.4g}"
        )
    if not results:
        raise ValueError(f"--models names no model. Received: --models={args.models!r}.")
    title = (
        f"Signal propagation at initialization: {args.batch_size} unit-Gaussian "
        f"{args.image_size}x{args.image_size} images, skip_gain = {args.skip_gain}"
    )
    fig = plot_signal_propagation(results, args.out, title=title)
    print(f"wrote {args.out}")
    if args.data:
        _save_npz(args.data, results)
        print(f"wrote {args.data}")
    return results, fig


def _save_npz(path: str, results) -> None:
    arrays = {
        f"{label}/{key}": value for label, stats in results.items() for key, value in stats.items()
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


if __name__ == "__main__":
    main(sys.argv[1:])
