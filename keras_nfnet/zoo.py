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
`AGCModel`; ``features_only=True`` returns its feature pyramid, whose levels `feature_info` lists.

Example:
>>> "eca_nfnet_l0" in list_models(pretrained=True), "eca_nfnet_l3" in list_models(True)
(True, False)
>>> create_model("test_nfnet", input_shape=(64, 64, 3), classes=10).count_params()
192010
>>> [(level["level"], level["channels"]) for level in feature_info("eca_nfnet_l0")]
[('P1', 64), ('P2', 256), ('P3', 512), ('P4', 1536), ('P5', 2304)]
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.architecture.rows import MODEL_SPECS, get_spec
from keras_nfnet.architecture.spec import NFSpec
from keras_nfnet.models.normfree import NormFreeNet, feature_taps
from keras_nfnet.weights import pretrained_names

MODELS: dict[str, Callable[..., AGCModel]] = {
    name: functools.partial(NormFreeNet, name) for name in MODEL_SPECS
}


def list_models(pretrained: bool = False) -> list[str]:
    """Sorted model names; with ``pretrained=True`` only those ``weights="imagenet"`` serves."""
    served = pretrained_names()
    return sorted(name for name in MODELS if not pretrained or name in served)


# The `NFSpec` fields a keyword of `create_model` overrides (those NormFreeNet does not take).
SPEC_OVERRIDES = tuple(
    field.name
    for field in dataclasses.fields(NFSpec)
    if field.name not in inspect.signature(NormFreeNet).parameters
)


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Accepted: {', '.join(list_models())}.")


def create_model(name: str, **kwargs) -> AGCModel:
    """Build model ``name`` (see `list_models`) with the keras.applications arguments.

    ``kwargs`` go to `keras_nfnet.models.normfree.NormFreeNet`: ``include_top``, ``weights``
    (``"imagenet"``, a ``.weights.h5`` file, a timm ``.safetensors`` state dict, or a DeepMind
    ``.npz`` for the F rows), ``input_shape``, ``classes``, ``pooling``,
    ``classifier_activation``, ``dropout_rate``, ``stochdepth_rate``, ``numerics``,
    ``features_only`` (a dict of feature maps ``{"P1": ..., "P5": ...}``, see `feature_info`) …
    A keyword that names another `NFSpec` field (`SPEC_OVERRIDES`: ``depths``, ``channels``,
    ``attention`` …) replaces it in the row, as timm's keywords overlay its config; a changed
    row has no ``"imagenet"`` weights.

    Example:
    >>> model = create_model("test_nfnet", depths=(1, 1, 1), channels=(32, 64, 96),
    ...                      features_only=True)
    >>> sorted(model.output)
    ['P1', 'P2', 'P3', 'P4']
    """
    _check_name(name)
    overrides = {k: kwargs.pop(k) for k in SPEC_OVERRIDES if k in kwargs}
    if not overrides:
        return MODELS[name](**kwargs)
    kwargs["name"] = kwargs.get("name") or name
    return NormFreeNet(dataclasses.replace(get_spec(name), **overrides), **kwargs)


def feature_info(name: str | NFSpec, **overrides) -> list[dict]:
    """The levels of ``create_model(name, features_only=True, **overrides)``, finest first.

    One dict per level: ``level`` (its output key, ``"P1"`` … ``"P5"``), ``channels``,
    ``reduction`` (``2**n`` for ``P_n``), ``layer`` (the Keras layer whose output it is) and
    ``timm_module`` (where timm's ``feature_info`` taps it). Read from the spec; nothing is
    built (`keras_nfnet.models.normfree.feature_taps`).

    Example:
    >>> levels = feature_info("nf_resnet50")
    >>> [(f["level"], f["channels"], f["reduction"], f["layer"]) for f in levels]
    [('P1', 64, 2, 'stem_conv'), ('P2', 256, 4, 'stage0_block2_add'),
     ('P3', 512, 8, 'stage1_block3_add'), ('P4', 1024, 16, 'stage2_block5_add'),
     ('P5', 2048, 32, 'stage3_block2_add')]
    """
    if isinstance(name, str):
        _check_name(name)
    unknown = sorted(set(overrides) - set(SPEC_OVERRIDES))
    if unknown:
        raise TypeError(
            f"feature_info() takes NFSpec fields as overrides. Received: {', '.join(unknown)}; "
            f"accepted: {', '.join(SPEC_OVERRIDES)}."
        )
    return feature_taps(dataclasses.replace(get_spec(name), **overrides))
