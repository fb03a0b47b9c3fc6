"""Command-line pieces the bench scripts share: sizes and counts, and the backend they need."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def int_parser(doc: str, **defaults: int) -> argparse.ArgumentParser:
    """A parser titled by a script's docstring with one ``--NAME`` positive integer per default."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", type=positive_int, default=default)
    return parser


def require_backend(parser: argparse.ArgumentParser, accepted: tuple[str, ...]) -> None:
    """Exit with a usage error unless Keras runs on one of the ``accepted`` backends."""
    import keras

    if keras.backend.backend() not in accepted:
        parser.error(
            f"KERAS_BACKEND={keras.backend.backend()!r} is not supported here; "
            f"accepted: {', '.join(accepted)}."
        )
