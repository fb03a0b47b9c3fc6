"""Signal Propagation Plots of named models at initialization (docs/nfnet_reference.md §12).

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
import textwrap

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
        f"Unknown model name {spec!r}. Accepted: {', '.join(p for p, _ in MODEL_NAMES)}, "
        f"where {name_legend()}."
    )


# The names `build_model` accepts: (pattern, what it builds); `name_legend` says what D, B, F, N
# stand for. ``--help`` lists them.
MODEL_NAMES = (
    ("nf_resnet{D}[_se]", "NF-ResNet; _se adds squeeze-excite"),
    ("nf_regnet_{B}", "NF-RegNet"),
    ("resnet{D}v2_bn[_se]", "pre-activation ResNet-V2 with BatchNorm"),
    ("resnet{D}v2_plain[_se]", "the same ResNet-V2 without normalization"),
    ("skipinit_resnet{D}", "SkipInit ResNet (unnormalized, residual branches times skip_gain)"),
    ("nfnet_{F}[+]", "NFNet; + for the wider F0+ ... F7+"),
    (
        "linear{N}_plain",
        f"linear residual network of N fully connected blocks, width {LINEAR_WIDTH}",
    ),
    ("linear{N}_bn", "the same with BatchNorm"),
)


def name_legend() -> str:
    """What D, B, F and N stand for in `MODEL_NAMES`.

    Example:
    >>> name_legend().split(";")[0]
    'D is 26, 50, 101, 152, 200, 288 or 600'
    """
    from keras_nfnet.models import NF_REGNET_VARIANTS, NF_RESNET_VARIANTS, NFNET_VARIANTS

    def alternatives(names) -> str:
        names = list(names)
        return f"{', '.join(names[:-1])} or {names[-1]}"

    nfnets = [name.lower() for name in NFNET_VARIANTS if not name.endswith("+")]
    return (
        f"D is {alternatives(NF_RESNET_VARIANTS)}; "
        f"B is {alternatives(name.lower() for name in NF_REGNET_VARIANTS)}; "
        f"F is {alternatives(nfnets)}; N is any depth >= 1"
    )


def _epilog() -> str:
    rows = "\n".join(f"  {pattern:<24}{what}" for pattern, what in MODEL_NAMES)
    legend = textwrap.fill(
        name_legend() + ".", width=98, initial_indent="  ", subsequent_indent="  "
    )
    return (
        f"model names (--models, comma-separated):\n{rows}\n{legend}\n\n"
        "The inputs are one batch of unit-Gaussian images (vectors for linear*).\n\n"
        "example:\n  python -m keras_nfnet.analysis "
        "--models nf_resnet50,resnet50v2_bn,resnet50v2_plain --out spp.png\n"
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
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the table of names
    )
    add = parser.add_argument
    add("--models", required=True, help="comma-separated model names (listed below)")
    add("--out", required=True, help="image to write, e.g. spp.png")
    add(
        "--image_size",
        type=_positive_int,
        default=224,
        help="height and width of the input images (default: %(default)s)",
    )
    add(
        "--batch_size",
        type=_positive_int,
        default=8,
        help="images in the batch; linear* models get 32x as many vectors (default: %(default)s)",
    )
    add("--seed", type=int, default=0, help="seed of the inputs and weights (default: %(default)s)")
    add(
        "--skip_gain",
        type=_skip_gain,
        default=1.0,
        help="value every skip_gain is set to while measuring, or 'none' to keep the initial "
        "zeros (default: %(default)s)",
    )
    add(
        "--data",
        default=None,
        help="also write the plotted numbers to this .npz (default: none)",
    )
    return parser.parse_args(argv)


def check_model_names(models: str) -> list[str]:
    """The names of ``--models``, each checked against `MODEL_NAMES` before anything is built.

    Example:
    >>> check_model_names("nf_resnet50, linear3_bn")
    ['nf_resnet50', 'linear3_bn']
    """
    names = [s.strip() for s in models.split(",") if s.strip()]
    if not names:
        raise ValueError(f"--models names no model. Received: --models={models!r}.")
    for name in names:
        if not any(p.fullmatch(name.lower()) for p in _PATTERNS.values()):
            raise ValueError(
                f"Unknown model name {name!r}. Accepted: "
                f"{', '.join(p for p, _ in MODEL_NAMES)}, where {name_legend()}."
            )
    return names


def main(argv: list[str] | None = None):
    """Run the CLI; returns ``(results, figure)``."""
    args = parse_args(argv)
    check_model_names(args.models)
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


def cli(argv: list[str] | None = None) -> int:
    """``python -m keras_nfnet.analysis``: a bad value is one ``error:`` line and exit status 2."""
    try:
        main(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
