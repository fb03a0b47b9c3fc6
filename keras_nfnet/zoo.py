"""Every model by the name timm users know: `create_model(name, **kwargs)` and `list_models`.

Names:

* timm's NF rows (`keras_nfnet.models.spec.NF_SPECS`): ``nfnet_l0``, ``eca_nfnet_l0`` …
  ``eca_nfnet_l3``, ``nf_resnet26/50/101``, ``nf_seresnet*``, ``nf_ecaresnet*``,
  ``nf_regnet_b0`` … ``b5``, ``nfnet_f0`` … ``f7``, ``test_nfnet``, in timm's layout
  (`keras_nfnet.models.normfree.NormFreeNet`);
* DeepMind's rows in DeepMind's layout and numerics: ``dm_nfnet_f0`` … ``dm_nfnet_f7`` and
  ``dm_nfnet_f0_plus`` … (`keras_nfnet.NFNet`), ``dm_nf_resnet26`` … ``dm_nf_resnet200``
  (`keras_nfnet.NFResNet`), ``dm_nf_regnet_b0`` … ``b8`` (`keras_nfnet.NFRegNet`).

Every builder returns an `AGCModel`.

Example:
>>> "eca_nfnet_l0" in list_models(pretrained=True), "eca_nfnet_l3" in list_models(True)
(True, False)
>>> create_model("test_nfnet", input_shape=(64, 64, 3), classes=10).count_params()
192010
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.models.nf_regnet import NF_REGNET_VARIANTS, NFRegNet
from keras_nfnet.models.nf_resnet import NF_RESNET_VARIANTS, NFResNet
from keras_nfnet.models.nfnet import NFNET_VARIANTS, NFNet
from keras_nfnet.models.normfree import NormFreeNet
from keras_nfnet.models.spec import NF_SPECS
from keras_nfnet.weights import PRETRAINED_MODELS, PRETRAINED_WEIGHTS


def _dm_nfnet_name(variant: str) -> str:
    return "dm_nfnet_" + variant.lower().replace("+", "_plus")


MODELS: dict[str, Callable[..., AGCModel]] = {
    **{name: functools.partial(NormFreeNet, name) for name in NF_SPECS},
    **{_dm_nfnet_name(v): functools.partial(NFNet, v) for v in NFNET_VARIANTS},
    **{f"dm_nf_resnet{v}": functools.partial(NFResNet, v) for v in NF_RESNET_VARIANTS},
    **{f"dm_nf_regnet_{v.lower()}": functools.partial(NFRegNet, v) for v in NF_REGNET_VARIANTS},
}

_PRETRAINED = {*PRETRAINED_MODELS, *(_dm_nfnet_name(v) for v in PRETRAINED_WEIGHTS)}


def list_models(pretrained: bool = False) -> list[str]:
    """Sorted model names; with ``pretrained=True`` only those ``weights="imagenet"`` serves."""
    return sorted(name for name in MODELS if not pretrained or name in _PRETRAINED)


def create_model(name: str, **kwargs) -> AGCModel:
    """Build model ``name`` (see `list_models`) with the keras.applications arguments.

    ``kwargs`` go to the family's builder: ``include_top``, ``weights`` (``"imagenet"``, a
    ``.weights.h5`` file, and for timm rows a timm ``.safetensors`` state dict), ``input_shape``,
    ``classes``, ``pooling``, ``classifier_activation``, ``dropout_rate``, ``stochdepth_rate`` …
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Accepted: {', '.join(list_models())}.")
    return MODELS[name](**kwargs)
