"""The one check every string option of the package goes through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def check_choice(what: str, value: T, accepted: Iterable) -> T:
    """``value`` if it is one of ``accepted``; otherwise a ValueError that names both.

    Example:
    >>> check_choice("numerics", "timm", ("deepmind", "timm"))
    'timm'
    >>> check_choice("numerics", "jax", ("deepmind", "timm"))
    Traceback (most recent call last):
    ...
    ValueError: Unknown numerics 'jax'. Accepted: 'deepmind', 'timm'.
    """
    accepted = tuple(accepted)
    if value not in accepted:
        raise ValueError(f"Unknown {what} {value!r}. Accepted: {', '.join(map(repr, accepted))}.")
    return value
