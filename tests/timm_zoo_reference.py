"""Build seeded timm NF-family models, save their state dicts as the hub stores them, and record
their logits at a square and an odd, non-square input size.

Run as a subprocess (torch must not be imported after TensorFlow in one process):
``python tests/timm_zoo_reference.py OUT_DIR NAME[:reduced] ...``. ``NAME`` is a timm model name;
``:reduced`` builds it with one block per stage (``depths=(1, 1, 1, 1)``, timm overlays the
keyword on the row's config). Writes ``OUT_DIR/NAME.safetensors`` and ``OUT_DIR/NAME.npz``.
"""

from __future__ import annotations

import sys

import numpy as np
import safetensors.torch
import timm
import torch
from timm_reference import randomize, record_logits

SIZES = {f"{h}x{w}": (h, w) for h, w in ((64, 64), (61, 75))}


def main() -> None:
    out, entries = sys.argv[1], sys.argv[2:]
    for entry in entries:
        name, _, reduced = entry.partition(":")
        torch.manual_seed(0)
        kwargs = {"depths": (1, 1, 1, 1)} if reduced else {}
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        randomize(model)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, f"{out}/{name}.safetensors", metadata={"format": "pt"})
        record = record_logits(model, SIZES)
        record["params"] = np.array(sum(p.numel() for p in model.parameters()))
        np.savez(f"{out}/{name}.npz", **record)


if __name__ == "__main__":
    main()
