"""The fast paths, behind one seam: what the layers and the train step call to run faster, never
to compute anything else.

* `conv2d` (`keras_nfnet.fast.conv_ops`): the 2-D convolution of every WS layer, with grouped and
  pointwise paths per backend and device; `GroupedConv2D` for exported models.
* `fused`, `fused_weight`, `recomputing`, `remember` (`keras_nfnet.fast.fusion`): elementwise
  chains as one XLA kernel on TF, with gradients that keep only the chain's inputs;
  `set_fusion` / ``KERAS_NFNET_FUSION=0`` turn them off.
* `spatial_mean` (`keras_nfnet.fast.pooling`): the pooled features of the attention gates.
* `gate_updates` (`keras_nfnet.fast.update_gating`): each TF optimizer update waits for its own
  gradient, so gradients are freed during the backward pass.
* `torch_ops.standardize` (`keras_nfnet.fast.torch_ops`): weight standardization as one or two
  torch kernels on the torch backend.
* `reference_paths` (`keras_nfnet.fast.paths`): a block inside which every path above but the
  update gating takes its reference form (``keras.ops``, unfused).

Every path equals its reference in forward values and gradients (tests/test_fast_paths.py); the
measurements that motivate them are in bench/FINDINGS.md.
"""

from keras_nfnet.fast import torch_ops
from keras_nfnet.fast.conv_ops import GroupedConv2D, conv2d, reference_conv2d
from keras_nfnet.fast.fusion import (
    fused,
    fused_weight,
    fusion_enabled,
    recomputing,
    remember,
    set_fusion,
)
from keras_nfnet.fast.paths import fast_paths_enabled, reference_paths
from keras_nfnet.fast.pooling import reference_spatial_mean, spatial_mean
from keras_nfnet.fast.update_gating import gate_updates

__all__ = [
    "GroupedConv2D",
    "conv2d",
    "fast_paths_enabled",
    "fused",
    "fused_weight",
    "fusion_enabled",
    "gate_updates",
    "recomputing",
    "reference_conv2d",
    "reference_paths",
    "reference_spatial_mean",
    "remember",
    "set_fusion",
    "spatial_mean",
    "torch_ops",
]
