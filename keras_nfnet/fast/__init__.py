"""The fast paths, behind one seam: what the layers and the train step call to run faster, never
to compute anything else.

* `conv2d` (`keras_nfnet.fast.conv_ops`): the 2-D convolution of every WS layer, with grouped and
  pointwise paths per backend and device; `GroupedConv2D` for exported models.
* `fused`, `fused_weight`, `recomputing`, `remember` (`keras_nfnet.fast.fusion`): elementwise
  chains as one XLA kernel on TF, with gradients that keep only the chain's inputs;
  `set_fusion` / ``KERAS_NFNET_FUSION=0`` turn them off.
* `gate_updates` (`keras_nfnet.fast.update_gating`): each TF optimizer update waits for its own
  gradient, so gradients are freed during the backward pass.

Every path equals its reference in forward values and gradients (tests/test_fast_paths.py); the
measurements that motivate them are in bench/FINDINGS.md.
"""

from keras_nfnet.fast.conv_ops import GroupedConv2D, conv2d, reference_conv2d
from keras_nfnet.fast.fusion import (
    fused,
    fused_weight,
    fusion_enabled,
    recomputing,
    remember,
    set_fusion,
)
from keras_nfnet.fast.update_gating import gate_updates

__all__ = [
    "GroupedConv2D",
    "conv2d",
    "fused",
    "fused_weight",
    "fusion_enabled",
    "gate_updates",
    "recomputing",
    "reference_conv2d",
    "remember",
    "set_fusion",
]
