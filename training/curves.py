"""The training curves of a run: ``history.json`` (one entry per loop) and ``curves.png``.

Each history entry is what the loop ended with: ``loop``, ``step``, the training metrics of the
loop (``loss``, ``accuracy``, ``agc_clip_fraction``, ``learning_rate`` …) and, at evaluated
loops, the evaluation metrics (``val_loss``, ``val_accuracy``, ``val_ema_accuracy`` …). The
plot has two panels, loss and accuracy, with train, eval and EMA-eval lines side by side.

Example:
>>> import tempfile, os
>>> history = [{"loop": 1, "step": 2, "loss": 2.0, "accuracy": 0.2, "val_loss": 1.9,
...             "val_accuracy": 0.3}, {"loop": 2, "step": 4, "loss": 1.5, "accuracy": 0.4}]
>>> path = plot_curves(history, os.path.join(tempfile.mkdtemp(), "curves.png"))
>>> curve(history, "val_accuracy")
([2], [0.3])
"""

from __future__ import annotations

import os

from keras_nfnet.atomic import atomic_path

# (panel title, [(history key, label)]): train, eval of the raw weights, eval of the EMA.
PANELS = (
    ("loss", [("loss", "train"), ("val_loss", "eval"), ("val_ema_loss", "eval (EMA)")]),
    (
        "accuracy",
        [("accuracy", "train"), ("val_accuracy", "eval"), ("val_ema_accuracy", "eval (EMA)")],
    ),
)


def curve(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key`` over the loops that have it."""
    points = [(h["step"], h[key]) for h in history if key in h]
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(history: list[dict], path: str | os.PathLike) -> str:
    """Draw the loss and accuracy curves of ``history`` into ``path`` (PNG, written atomically).

    Needs matplotlib (installed with the ``training`` extra); it draws off-screen (Agg).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(10, 4), constrained_layout=True)
    for ax, (title, lines) in zip(axes, PANELS):
        for key, label in lines:
            steps, values = curve(history, key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 20 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
