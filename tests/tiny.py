"""The reduced NFNet the tests use; importable without side effects (any Keras backend)."""

from keras_nfnet.models.nfnet import NFNetVariant

# A reduced F-style network: every feature of the F family (deep-quad stem, projection and
# pooled shortcuts, grouped convs with several groups, SE, stochastic depth) at a cost a test can
# afford. tests/timm_reference.py builds the same network in timm.
TINY_VARIANT = NFNetVariant(
    depths=(1, 2, 2, 1),
    widths=(32, 64, 96, 96),
    stem_widths=(2, 4, 8),
    group_width=16,
    train_size=64,
    test_size=64,
    dropout_rate=0.1,
)
