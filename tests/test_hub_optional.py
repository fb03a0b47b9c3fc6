"""keras-hub is optional: the package works without it, and only keras_nfnet.hub imports it.

Runs in the main environment, where keras-hub is not installed (tests/hub/ has the keras-hub
tests, run in the environment of the ``hub`` extra).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
from conftest import run_python

REPO = Path(__file__).resolve().parents[1]
HUB = REPO / "keras_nfnet" / "hub"


def _imports_keras_hub(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name == "keras_hub" or name.startswith("keras_hub.") for name in names):
            return True
    return False


def test_no_module_outside_keras_nfnet_hub_imports_keras_hub():
    paths = [*(REPO / "keras_nfnet").rglob("*.py"), *(REPO / "training").rglob("*.py")]
    offenders = [
        str(p.relative_to(REPO)) for p in paths if HUB not in p.parents and _imports_keras_hub(p)
    ]
    assert offenders == []
    assert _imports_keras_hub(HUB / "__init__.py")  # the walk does see keras_hub imports


@pytest.mark.skipif(
    importlib.util.find_spec("keras_hub") is not None, reason="keras-hub is installed here"
)
def test_keras_nfnet_imports_without_keras_hub_and_hub_names_the_extra():
    code = (
        "import sys\n"
        "import keras_nfnet\n"
        "assert 'keras_hub' not in sys.modules\n"
        "model = keras_nfnet.create_model('test_nfnet', input_shape=(32, 32, 3), classes=2)\n"
        "try:\n"
        "    import keras_nfnet.hub\n"
        "except ImportError as error:\n"
        "    print('IMPORT_ERROR', error)\n"
    )
    out = run_python(["-c", code], timeout=300).stdout
    assert "IMPORT_ERROR" in out, out
    assert 'pip install "keras-nfnet[hub]"' in out
