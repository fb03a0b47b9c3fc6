"""Signal Propagation Plots: one panel per statistic, several models overlaid (§12)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from keras_nfnet.analysis.signal_propagation import STATISTICS
from keras_nfnet.atomic import atomic_path

LABELS = {
    "avg_sq_mean": "average channel squared mean",
    "avg_var": "average channel variance",
    "res_avg_var": "residual-branch average channel variance",
}
# A panel switches to a log y-axis when its curves span more than this factor (e.g. the 2**l
# growth of unnormalized networks next to the ~linear growth of BN ones).
LOG_SCALE_RANGE = 100.0


def _x_values(statistic: str, values: np.ndarray) -> np.ndarray:
    # avg_sq_mean / avg_var: point 0 is the stem output, point i + 1 the output of block i.
    # res_avg_var: block i's branch is drawn at i + 1, beside that block's output.
    start = 1 if statistic == "res_avg_var" else 0
    return np.arange(start, start + len(values))


def plot_signal_propagation(
    results: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike | None = None,
    title: str | None = None,
):
    """Draw Signal Propagation Plots and optionally write them to ``path``.

    Args:
        results: model label -> the dict `signal_propagation` returns.
        path: image file to write (format from the suffix, e.g. ``.png``); written atomically.
        title: optional figure title.

    Returns:
        The `matplotlib.figure.Figure`: ``fig.axes[j]`` is the panel of ``STATISTICS[j]`` and
        its ``lines`` hold one curve per model, in the order of ``results``.

    Example:
    >>> import numpy as np
    >>> stats = {"avg_sq_mean": np.zeros(3), "avg_var": np.array([1.0, 2.0, 3.0]),
    ...          "res_avg_var": np.ones(2)}
    >>> fig = plot_signal_propagation({"bn": stats})
    >>> [ax.get_ylabel() for ax in fig.axes][1], fig.axes[1].lines[0].get_ydata().tolist()
    ('average channel variance', [1.0, 2.0, 3.0])
    """
    # The object-oriented API only: no pyplot, so no global backend or figure state.
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("results must map at least one model label to its statistics.")
    for label, stats in results.items():
        missing = [s for s in STATISTICS if s not in stats]
        if missing:
            raise ValueError(
                f"results[{label!r}] lacks {missing}; expected the keys {list(STATISTICS)} "
                "returned by signal_propagation."
            )
    fig = Figure(figsize=(5.0 * len(STATISTICS), 4.2), layout="constrained")
    axes = fig.subplots(1, len(STATISTICS))
    for ax, statistic in zip(axes, STATISTICS):
        for label, stats in results.items():
            values = np.asarray(stats[statistic], np.float64)
            ax.plot(_x_values(statistic, values), values, marker="o", markersize=3, label=label)
        finite = np.concatenate([np.asarray(s[statistic], np.float64) for s in results.values()])
        positive = finite[finite > 0]
        if positive.size and positive.max() / positive.min() > LOG_SCALE_RANGE:
            ax.set_yscale("log")
        ax.set_xlabel("residual block (0 = stem output)")
        ax.set_ylabel(LABELS[statistic])
        ax.set_title(LABELS[statistic])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    if path is not None:
        _save_atomically(fig, os.fspath(path))
    return fig


def _save_atomically(fig, path: str) -> None:
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
