"""Build a seeded timm NFNet, save it as the hub stores it, and record its logits.

Run as a subprocess by the tests (torch/torchvision must not be imported after TensorFlow in one
process; docs/platform_facts.md): ``python tests/timm_reference.py CONFIG OUT_DIR SIZE [SIZE ...]``.
CONFIG is ``f0`` (timm's ``dm_nfnet_f0``) or ``tiny`` (a reduced F-style config, see TINY below).
Writes ``OUT_DIR/model.safetensors`` and ``OUT_DIR/reference.npz`` (inputs and logits per size).
"""

from __future__ import annotations

import sys

import numpy as np
import safetensors.torch
import timm
import torch
from timm.models.nfnet import NfCfg, NormFreeNet

# Mirrors tests/conftest.py's TINY_VARIANT: timm's dm_nfnet config with reduced widths and depths.
TINY = NfCfg(
    depths=(1, 2, 2, 1),
    channels=(32, 64, 96, 96),
    stem_type="deep_quad",
    stem_chs=16,
    group_size=16,
    bottle_ratio=0.5,
    extra_conv=True,
    gamma_in_act=True,
    same_padding=True,
    skipinit=True,
    num_features=192,
    act_layer="gelu",
    attn_layer="se",
    attn_kwargs=dict(rd_ratio=0.5),
)
TINY_CLASSES = 10


def build(config: str) -> torch.nn.Module:
    if config == "f0":
        return timm.create_model("dm_nfnet_f0", pretrained=False)
    if config == "tiny":
        return NormFreeNet(TINY, num_classes=TINY_CLASSES)
    raise SystemExit(f"unknown config {config!r}")


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Seeded weights with every tensor kind non-trivial: gains != 1, biases and skip gains != 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("skipinit_gain"):
                p.copy_(0.5 + 0.25 * noise)
            elif name.endswith(".gain"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.05 * noise)
            elif "head.fc.weight" in name:
                p.copy_(0.02 * noise)
            else:
                p.add_(0.0 * noise)  # keep timm's own (seeded) initialization


def record_logits(model: torch.nn.Module, sizes: dict[str, tuple[int, int]]) -> dict:
    """Seeded NHWC inputs (batch 2) and ``model``'s logits at each ``(height, width)``:
    ``{"x<name>": inputs, "logits<name>": logits}`` for every ``name`` of ``sizes``."""
    rng = np.random.default_rng(1)
    record = {}
    for name, (h, w) in sizes.items():
        x = rng.standard_normal((2, h, w, 3)).astype("float32")
        with torch.no_grad():
            logits = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        record[f"x{name}"], record[f"logits{name}"] = x, logits
    return record


def main() -> None:
    config, out, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
    torch.manual_seed(0)
    model = build(config).eval()
    randomize(model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, f"{out}/model.safetensors", metadata={"format": "pt"})
    record = record_logits(model, {str(size): (size, size) for size in sizes})
    np.savez(f"{out}/reference.npz", **record)


if __name__ == "__main__":
    main()
