"""ImageNet input normalization and label decoding (docs/nfnet_reference.md §7, §14.6, §15)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_input(x, data_format: str | None = None):
    """Normalize RGB images with values in [0, 255]: ``(x / 255 - mean) / std``.

    Args:
        x: array or tensor with a trailing channel axis of size 3 (RGB).
        data_format: only ``None`` or ``"channels_last"`` is supported.

    Example:
    >>> import numpy as np
    >>> y = preprocess_input(np.full((1, 2, 2, 3), 255.0, "float32"))
    >>> [round(float(v), 4) for v in np.asarray(y)[0, 0, 0]]
    [2.2489, 2.4286, 2.64]
    """
    if data_format not in (None, "channels_last"):
        raise ValueError(
            f"preprocess_input supports channels_last only. Received: data_format={data_format!r}."
        )
    if x.shape[-1] != 3:
        raise ValueError(f"Expected 3 RGB channels in the last axis. Received shape {x.shape}.")
    x = ops.cast(x, "float32") if not isinstance(x, np.ndarray) else x.astype("float32")
    mean = np.asarray(IMAGENET_MEAN, "float32") * 255.0
    std = np.asarray(IMAGENET_STD, "float32") * 255.0
    return (x - mean) / std


def _class_index() -> dict[str, list[str]]:
    path = resources.files("keras_nfnet") / "data" / "imagenet_class_index.json"
    return json.loads(path.read_text())


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Decode ImageNet-1k predictions into ``(wordnet_id, name, score)`` tuples, best first.

    The class list ships with the package (standard ImageNet-1k order, index 0 = tench).

    Example:
    >>> import numpy as np
    >>> p = np.zeros((1, 1000), "float32"); p[0, 1] = 1.0
    >>> decode_predictions(p, top=1)[0][0][:2]
    ('n01443537', 'goldfish')
    """
    preds = np.asarray(ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "decode_predictions expects a batch of 1000 ImageNet scores, shape (samples, 1000). "
            f"Received shape {preds.shape}."
        )
    index = _class_index()
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(*index[str(i)], float(row[i])) for i in best])
    return results
