"""What a Normalizer-Free model is, as data: `spec` (the `NFSpec` fields, the per-block plan, the
beta and stochastic-depth schedules, parameter counting) and `rows` (every model as a row).

This package imports nothing else from keras_nfnet, so layers, converters, weights and builders
can all import it.
"""
