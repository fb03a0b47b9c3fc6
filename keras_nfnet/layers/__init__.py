"""Normalizer-free building blocks: they know nothing of models or training."""

from keras_nfnet.layers.activations import GAMMAS, ScaledActivation, scaled_activation
from keras_nfnet.layers.channel_gate import ChannelGate
from keras_nfnet.layers.eca import EfficientChannelAttention
from keras_nfnet.layers.padding import SymmetricMaxPool2D
from keras_nfnet.layers.skip_gain import SkipGain
from keras_nfnet.layers.squeeze_excite import SqueezeExcite
from keras_nfnet.layers.stoch_depth import StochDepth
from keras_nfnet.layers.ws_conv import WSConv2D, standardize_kernel

__all__ = [
    "GAMMAS",
    "ChannelGate",
    "EfficientChannelAttention",
    "ScaledActivation",
    "SkipGain",
    "SqueezeExcite",
    "StochDepth",
    "SymmetricMaxPool2D",
    "WSConv2D",
    "scaled_activation",
    "standardize_kernel",
]
