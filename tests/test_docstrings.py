"""Every docstring example in keras_nfnet/ and training/ runs and prints what it says.

keras_nfnet.hub needs the optional keras-hub; tests/hub/test_hub_docstrings.py runs its examples
in the environment of the ``hub`` extra.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import keras_nfnet
import training


def _modules():
    for package in (keras_nfnet, training):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__") and not info.name.startswith("keras_nfnet.hub"):
                yield info.name


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
