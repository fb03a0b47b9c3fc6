"""timm's feature pyramids: seeded models' ``features_only=True`` outputs and every row's
``feature_info``.

Run as a subprocess (torch must not be imported after TensorFlow in one process):
``python tests/timm_features_reference.py OUT_DIR REQUEST_JSON``. The request is
``{"models": {KEY: {"model": NAME, "kwargs": {...}}}, "info": [NAME, ...]}``:

* each of ``models`` is built like tests/timm_zoo_reference.py (timm's row ``NAME`` with its
  keywords overlaid on the row's config, or ``"tiny"``: tests/timm_reference.py's reduced F
  config), randomised, and saved as ``OUT_DIR/KEY.safetensors`` (the full state dict, classifier
  included, as the hub stores it). timm's features-only network of the same config is loaded with
  those weights, and ``OUT_DIR/KEY.npz`` records its five outputs (NHWC) at a square and an odd,
  non-square input;
* ``OUT_DIR/feature_info.json`` holds ``feature_info`` of every row of ``info`` (built on the
  meta device with one block per stage: the taps do not depend on the depth).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import safetensors.torch
import timm
import torch
from timm.models import FeatureListNet
from timm.models.nfnet import NormFreeNet
from timm_reference import TINY, TINY_CLASSES, randomize

SIZES = ((64, 64), (61, 75))


def features_key(key: str) -> str:
    """The full model's state-dict key in timm's features-only network, which flattens the
    first level of the stem and stage containers (``stem.conv1`` -> ``stem_conv1``)."""
    for container in ("stem.", "stages."):
        if key.startswith(container):
            return key.replace(".", "_", 1)
    return key


def build(model: str, kwargs: dict, features_only: bool) -> torch.nn.Module:
    if model == "tiny":
        net = NormFreeNet(TINY, num_classes=TINY_CLASSES)
        return FeatureListNet(net, flatten_sequential=True) if features_only else net
    return timm.create_model(model, pretrained=False, features_only=features_only, **kwargs)


def main() -> None:
    out, request = sys.argv[1], json.loads(sys.argv[2])
    for key, entry in request.get("models", {}).items():
        kwargs = entry.get("kwargs", {})
        torch.manual_seed(0)
        full = build(entry["model"], kwargs, features_only=False).eval()
        randomize(full)
        state = {k: v.contiguous() for k, v in full.state_dict().items()}
        safetensors.torch.save_file(state, f"{out}/{key}.safetensors", metadata={"format": "pt"})
        features = build(entry["model"], kwargs, features_only=True).eval()
        backbone = {features_key(k): v for k, v in state.items() if not k.startswith("head.")}
        features.load_state_dict(backbone, strict=True)
        rng = np.random.default_rng(1)
        record = {}
        for h, w in SIZES:
            x = rng.standard_normal((2, h, w, 3)).astype("float32")
            with torch.no_grad():
                maps = features(torch.from_numpy(x).permute(0, 3, 1, 2))
            record[f"x{h}x{w}"] = x
            for i, m in enumerate(maps):
                record[f"P{i + 1}_{h}x{w}"] = m.permute(0, 2, 3, 1).numpy()
        np.savez(f"{out}/{key}.npz", **record)
    info = {}
    for name in request.get("info", []):
        net = timm.create_model(name, features_only=True, depths=(1, 1, 1, 1), device="meta")
        info[name] = [
            {"channels": d["num_chs"], "reduction": d["reduction"], "module": d["module"]}
            for d in net.feature_info.get_dicts()
        ]
    with open(f"{out}/feature_info.json", "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
