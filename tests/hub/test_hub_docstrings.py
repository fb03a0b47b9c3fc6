"""Every docstring example in keras_nfnet/hub/ runs and prints what it says (the main suite's
tests/test_docstrings.py cannot import keras_nfnet.hub: keras-hub is not installed there)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import hubutil  # noqa: F401  (the test set-up of tests/hub)
import pytest

import keras_nfnet.hub

MODULES = sorted(
    ["keras_nfnet.hub"]
    + [info.name for info in pkgutil.walk_packages(keras_nfnet.hub.__path__, "keras_nfnet.hub.")]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
