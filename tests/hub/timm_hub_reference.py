"""Save a seeded timm NF model as a timm Hugging Face repo, and record its logits.

Run as a subprocess (torch must not be imported after TensorFlow in one process):
``python tests/hub/timm_hub_reference.py OUT_DIR NAME NUM_CLASSES``. Builds
``timm.create_model(NAME, num_classes=NUM_CLASSES)`` with randomised gains, biases and skip gains
(tests/timm_reference.py `randomize`) and writes what the hub holds, with timm's own writer
(``timm.models.save_for_hf``): ``OUT_DIR/config.json`` and ``OUT_DIR/model.safetensors``; and
``OUT_DIR/reference.npz``: NHWC inputs and timm's logits at 64x64 and 61x75.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for timm_reference

import numpy as np
import timm
import torch
from timm.models import save_for_hf
from timm_reference import randomize, record_logits

SIZES = {f"{h}x{w}": (h, w) for h, w in ((64, 64), (61, 75))}


def main() -> None:
    out, name, classes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=classes).eval()
    randomize(model)
    save_for_hf(model, out, safe_serialization=True)
    record = record_logits(model, SIZES)
    np.savez(f"{out}/reference.npz", **record)


if __name__ == "__main__":
    main()
