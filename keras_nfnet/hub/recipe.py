"""The pretrained preprocessing of a row, from its spec or from a timm ``config.json``.

timm's rows are evaluated at timm's ``input_size`` (the row's ``train_size``, which timm's
``crop_pct`` belongs to); DeepMind's rows at ``test_size`` with the §15 protocol
(docs/nfnet_reference.md §15: squash to S + 32, centre-crop S).

Example:
>>> recipe = pretrained_preprocessing("test_nfnet")
>>> recipe["image_size"], recipe["crop_pct"], recipe["crop_mode"], recipe["mean"]
((160, 160), 0.95, 'center', (0.5, 0.5, 0.5))
"""

from __future__ import annotations

from keras_nfnet.architecture.rows import DM_SPECS, get_spec


def pretrained_preprocessing(variant: str) -> dict:
    """``image_size, crop_pct, crop_mode, interpolation, mean, std`` of a row's weights.

    Example:
    >>> pretrained_preprocessing("eca_nfnet_l0")["image_size"], pretrained_preprocessing(
    ...     "dm_nfnet_f0")["crop_mode"]
    ((224, 224), 'squash')
    """
    spec = get_spec(variant)
    size = spec.test_size if variant in DM_SPECS else spec.train_size
    return {
        "image_size": (size, size),
        "crop_pct": spec.crop_pct,
        "crop_mode": spec.crop_mode,
        "interpolation": spec.interpolation,
        "mean": tuple(spec.mean),
        "std": tuple(spec.std),
    }


def timm_config_preprocessing(config: dict) -> dict:
    """The same fields from a timm ``config.json``'s ``pretrained_cfg`` (those it has).

    Example:
    >>> timm_config_preprocessing({"pretrained_cfg": {"input_size": [3, 160, 160],
    ...                                               "crop_pct": 0.95, "mean": [0.5] * 3}})
    {'image_size': (160, 160), 'crop_pct': 0.95, 'mean': (0.5, 0.5, 0.5)}
    """
    cfg = config.get("pretrained_cfg") or {}
    out = {}
    if "input_size" in cfg:
        out["image_size"] = tuple(int(s) for s in cfg["input_size"][1:])
    for key in ("crop_pct", "crop_mode", "interpolation"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            out[key] = tuple(float(v) for v in cfg[key])
    return out
