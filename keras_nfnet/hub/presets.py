"""Built-in keras-hub preset names: one per row with published weights, each a timm hub repo.

The name is the row's name without DeepMind's ``dm_`` prefix, plus ``_imagenet``
(``nfnet_f0_imagenet`` is ``dm_nfnet_f0``, DeepMind's F0 in timm's copy; ``eca_nfnet_l0_imagenet``
is ``eca_nfnet_l0``); the repo is the one `keras_nfnet.weights` downloads the row's weights
from, so the pinned SHA-256s apply. keras-hub lists them as ``NFNetBackbone.presets`` and
``NFNetImageClassifier.presets``.

Example:
>>> PRESETS["nfnet_f0_imagenet"]["kaggle_handle"], preset_row("eca_nfnet_l0_imagenet")
('hf://timm/dm_nfnet_f0.dm_in1k', 'eca_nfnet_l0')
"""

from __future__ import annotations

import re

from keras_nfnet import weights
from keras_nfnet.architecture.rows import dm_nfnet_name, get_spec
from keras_nfnet.architecture.spec import count_normfree_params

# https://<host>/<org>/<repo>/resolve/<revision>/model.safetensors
_HF_FILE = re.compile(r"/(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/model\.safetensors$")


def registry_repos() -> dict[str, tuple[str, str, str]]:
    """``{repo_id: (registry key, create_model row, revision)}`` of every timm hub file
    `keras_nfnet.weights` registers (``"timm/eca_nfnet_l0.ra2_in1k"`` …).

    Example:
    >>> registry_repos()["timm/eca_nfnet_l0.ra2_in1k"]
    ('eca_nfnet_l0', 'eca_nfnet_l0', 'be75922')
    """
    found = {}
    for key, entry in (*weights.PRETRAINED_MODELS.items(), *weights.PRETRAINED_WEIGHTS.items()):
        match = _HF_FILE.search(entry.urls.get("timm", ""))
        if match:
            row = key if key in weights.PRETRAINED_MODELS else dm_nfnet_name(key)
            found[match["repo_id"]] = (key, row, match["revision"])
    return found


def _preset_name(row: str) -> str:
    return row.removeprefix("dm_") + "_imagenet"


def _presets() -> dict[str, dict]:
    presets = {}
    for repo_id, (_, row, _) in sorted(registry_repos().items(), key=lambda item: item[1][1]):
        spec = get_spec(row)
        params = count_normfree_params(spec)
        presets[_preset_name(row)] = {
            "metadata": {
                "description": (
                    f"{row} ({params / 1e6:.1f} M parameters) with the ImageNet-1k weights of "
                    f"the timm hub repo {repo_id}; trained at {spec.train_size} px, tested at "
                    f"{spec.test_size} px."
                ),
                "params": params,
                "path": "keras_nfnet",
            },
            "kaggle_handle": f"hf://{repo_id}",
        }
    return presets


PRESETS: dict[str, dict] = _presets()


def preset_row(name: str) -> str:
    """The `create_model` row of a built-in preset name."""
    handle = PRESETS[name]["kaggle_handle"].removeprefix("hf://")
    return registry_repos()[handle][1]
