"""Every model by the name timm users know: `create_model(name, **kwargs)` and `list_models`.

Names:

* timm's NF rows (`keras_nfnet.architecture.rows.NF_SPECS`): ``nfnet_l0``, ``eca_nfnet_l0`` …
  ``eca_nfnet_l3``, ``nf_resnet26/50/101``, ``nf_seresnet*``, ``nf_ecaresnet*``,
  ``nf_regnet_b0`` … ``b5``, ``nfnet_f0`` … ``f7``, ``test_nfnet``, in timm's layout
  (`keras_nfnet.models.normfree.NormFreeNet`);
* DeepMind's rows in DeepMind's layout and numerics (`keras_nfnet.architecture.rows.DM_SPECS`):
  ``dm_nfnet_f0`` … ``dm_nfnet_f7`` and ``dm_nfnet_f0_plus`` … (as `keras_nfnet.NFNet`),
  ``dm_nf_resnet26`` … ``dm_nf_resnet600`` and ``dm_nf_seresnet26`` … (as
  `keras_nfnet.NFResNet`), ``dm_nf_regnet_b0`` … ``b8`` (as `keras_nfnet.NFRegNet`).

Every name is a row built by `keras_nfnet.models.normfree.NormFreeNet`, which returns an
`AGCModel`.

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
from keras_nfnet.architecture.rows import MODEL_SPECS
from keras_nfnet.models.normfree import NormFreeNet
from keras_nfnet.weights import pretrained_names

MODELS: dict[str, Callable[..., AGCModel]] = {
    name: functools.partial(NormFreeNet, name) for name in MODEL_SPECS
}


def list_models(pretrained: bool = False) -> list[str]:
    """Sorted model names; with ``pretrained=True`` only those ``weights="imagenet"`` serves."""
    served = pretrained_names()
    return sorted(name for name in MODELS if not pretrained or name in served)


def create_model(name: str, **kwargs) -> AGCModel:
    """Build model ``name`` (see `list_models`) with the keras.applications arguments.

    ``kwargs`` go to `keras_nfnet.models.normfree.NormFreeNet`: ``include_top``, ``weights``
    (``"imagenet"``, a ``.weights.h5`` file, a timm ``.safetensors`` state dict, or a DeepMind
    ``.npz`` for the F rows), ``input_shape``, ``classes``, ``pooling``,
    ``classifier_activation``, ``dropout_rate``, ``stochdepth_rate``, ``numerics`` …
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Accepted: {', '.join(list_models())}.")
    return MODELS[name](**kwargs)
