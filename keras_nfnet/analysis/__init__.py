"""Signal Propagation Plots (docs/nfnet_reference.md §12): statistics, figures and the analytic
case.

`signal_propagation` measures a model's per-block statistics on one batch,
`plot_signal_propagation` overlays several models, `linear_residual_network` is the seeds'
fully connected linear residual network, and ``python -m keras_nfnet.analysis`` does it all for
named models. matplotlib is needed only for the plot (``pip install keras-nfnet[analysis]``).
"""

from keras_nfnet.analysis.linear_resnet import linear_residual_network
from keras_nfnet.analysis.plot import plot_signal_propagation
from keras_nfnet.analysis.signal_propagation import (
    STATISTICS,
    ResidualBlock,
    channel_statistics,
    residual_blocks,
    signal_propagation,
)

__all__ = [
    "STATISTICS",
    "ResidualBlock",
    "channel_statistics",
    "linear_residual_network",
    "plot_signal_propagation",
    "residual_blocks",
    "signal_propagation",
]
