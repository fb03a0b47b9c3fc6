"""Signal Propagation Plots' statistics (Brock, De & Smith, 2021; docs/nfnet_reference.md §12).

For every residual block of a Functional model, on one batch, at the model's current weights
(normally its initialization):

* ``avg_sq_mean``: average channel squared mean, ``mean_c (mean_{N,H,W} x)**2``;
* ``avg_var``: average channel variance, ``mean_c var_{N,H,W}(x)`` (population variance);
* ``res_avg_var``: the same for the residual branch's output ``r_i``, before stochastic depth,
  ``skip_gain`` and ``alpha``.

``avg_sq_mean`` and ``avg_var`` have one entry per point: index 0 is the stem output and index
``i + 1`` the output of block ``i``. ``res_avg_var`` has one entry per block (block ``i`` at
index ``i``). Statistics are per channel over every axis but the last, so NHWC feature maps and
``(batch, features)`` tensors both work.

**How blocks are found (the convention every model of this package follows).** The top-level
layers of the model are scanned in graph order. A residual block ends in a *merge* layer that
takes ``[shortcut, residual]``:

* every `keras_nfnet.layers.SkipGain` (NFNet, NF-ResNet, NF-RegNet, SkipInit; user blocks built
  from it), and
* every layer with two inputs whose name ends with ``_out`` (the ``Add`` of the ResNetV2
  baselines and of the linear residual network).

The block output is the merge's output and ``r_i`` its last input, taken before a `StochDepth`
layer if one feeds the merge. The stem output is the output of the last top-level layer whose
name starts with ``stem`` (``stem_conv3`` in NFNets, ``stem_pool`` in the ResNets,
``stem_conv`` in NF-RegNets) or, when there is none, the model's input. Pass ``stem_layer`` to
choose another. Merge layers must be called once (shared layers are refused).
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import numpy as np

from keras_nfnet.layers import SkipGain, StochDepth

STATISTICS = ("avg_sq_mean", "avg_var", "res_avg_var")


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """One residual block found in a model: its merge layer and the two tensors measured."""

    name: str
    output: object  # KerasTensor: the block output
    residual: object  # KerasTensor: r_i, the residual-branch output


def _is_merge(layer) -> bool:
    if isinstance(layer, SkipGain):
        return True
    if not layer.name.endswith("_out") or not layer._inbound_nodes:
        return False
    return len(layer._inbound_nodes[0].input_tensors) == 2


def _before_stochdepth(tensor):
    # §12.1: r_i is taken before stochastic depth (identical at inference, where we measure).
    operation = tensor._keras_history.operation
    if isinstance(operation, StochDepth):
        return operation._inbound_nodes[tensor._keras_history.node_index].input_tensors[0]
    return tensor


def residual_blocks(model: keras.Model) -> list[ResidualBlock]:
    """The residual blocks of ``model`` in graph order, found by the module's convention.

    Example:
    >>> from keras_nfnet.analysis import linear_residual_network
    >>> [b.name for b in residual_blocks(linear_residual_network(depth=2, width=4))]
    ['block0_out', 'block1_out']
    """
    blocks = []
    for layer in model.layers:
        if not _is_merge(layer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise ValueError(
                f"Residual merge layer {layer.name!r} is called {len(layer._inbound_nodes)} "
                "times; signal_propagation needs each block's merge layer to be called once."
            )
        node = layer._inbound_nodes[0]
        blocks.append(
            ResidualBlock(
                layer.name, node.output_tensors[0], _before_stochdepth(node.input_tensors[-1])
            )
        )
    return blocks


def _stem_output(model: keras.Model, stem_layer: str | None):
    if stem_layer is not None:
        try:
            return model.get_layer(stem_layer).output
        except ValueError as err:
            raise ValueError(
                f"stem_layer={stem_layer!r} is not a layer of model {model.name!r}."
            ) from err
    stems = [layer for layer in model.layers if layer.name.startswith("stem")]
    if stems:
        return stems[-1].output
    if len(model.inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} inputs and no layer named 'stem*'; "
            "pass stem_layer=."
        )
    return model.inputs[0]


@contextlib.contextmanager
def _measurement_state(model: keras.Model, skip_gain: float | None):
    """Set every ``skip_gain`` to ``skip_gain`` (if given) and restore it, and every
    non-trainable variable (BatchNorm moving statistics, RNG states), on exit."""
    gains = [layer for layer in model.layers if isinstance(layer, SkipGain)]
    saved_gains = [np.asarray(layer.skip_gain.numpy()) for layer in gains]
    saved_state = [np.asarray(v.numpy()) for v in model.non_trainable_variables]
    try:
        if skip_gain is not None:
            for layer in gains:
                layer.skip_gain.assign(np.full((), skip_gain, layer.skip_gain.dtype))
        yield
    finally:
        for layer, value in zip(gains, saved_gains):
            layer.skip_gain.assign(value)
        for variable, value in zip(model.non_trainable_variables, saved_state):
            variable.assign(value)


def _call_with_modes(batch_norm_training: bool):
    """Call each operation in inference mode, except BatchNorm in training mode if asked."""

    def operation_fn(operation):
        def call(*args, **kwargs):
            if "training" in getattr(operation, "_call_context_args", ()):
                kwargs["training"] = batch_norm_training and isinstance(
                    operation, keras.layers.BatchNormalization
                )
            return operation(*args, **kwargs)

        return call

    return operation_fn


def channel_statistics(x) -> tuple[float, float]:
    """``(mean_c mean(x_c)**2, mean_c var(x_c))`` over every axis but the last (§12.1).

    Example:
    >>> import numpy as np
    >>> x = np.stack([np.full(8, 2.0), np.arange(8.0)], axis=-1)
    >>> channel_statistics(x)
    (8.125, 2.625)
    """
    x = np.asarray(x, np.float64)
    x = x.reshape(-1, x.shape[-1])
    return float(np.mean(x.mean(axis=0) ** 2)), float(np.mean(x.var(axis=0)))


def signal_propagation(
    model: keras.Model,
    inputs,
    skip_gain: float | None = None,
    batch_norm_training: bool = True,
    stem_layer: str | None = None,
) -> dict[str, np.ndarray]:
    """Signal-propagation statistics of ``model`` on the batch ``inputs`` (§12).

    The model runs in inference mode (stochastic depth and dropout off). BatchNorm layers run in
    training mode (batch statistics, §12.2) unless ``batch_norm_training=False``; their moving
    statistics are restored afterwards. With ``skip_gain`` (e.g. 1.0, §12.2), every `SkipGain`
    weight is set to that value for the measurement and restored afterwards: at initialization
    NF models have ``skip_gain = 0``, so their block outputs are just their shortcuts.

    Args:
        model: a Functional model whose blocks follow the module's convention.
        inputs: one batch (NumPy or tensor), e.g. unit-Gaussian images.
        skip_gain: value every ``skip_gain`` takes while measuring; ``None`` keeps the model's.
        batch_norm_training: run BatchNorm with batch statistics.
        stem_layer: name of the layer whose output is point 0 (default: the last ``stem*``
            layer, else the model input).

    Returns:
        ``{"avg_sq_mean": (N + 1,), "avg_var": (N + 1,), "res_avg_var": (N,)}`` float64 arrays
        for a model of N blocks.

    Example:
    >>> import numpy as np
    >>> from keras_nfnet.analysis import linear_residual_network
    >>> model = linear_residual_network(depth=3, width=64, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((256, 64)).astype("float32")
    >>> stats = signal_propagation(model, x)
    >>> stats["avg_var"].shape, stats["res_avg_var"].shape
    ((4,), (3,))
    >>> np.round(stats["avg_var"] / stats["avg_var"][0]).tolist()  # about 2**l unnormalized
    [1.0, 2.0, 4.0, 8.0]
    """
    blocks = residual_blocks(model)
    if not blocks:
        raise ValueError(
            f"Model {model.name!r} has no residual blocks: expected SkipGain layers or "
            "two-input layers named '*_out' (see keras_nfnet.analysis.signal_propagation)."
        )
    stem = _stem_output(model, stem_layer)
    probe = keras.Model(
        model.inputs, [stem, *(b.output for b in blocks), *(b.residual for b in blocks)]
    )
    batch = keras.ops.convert_to_tensor(np.asarray(inputs, "float32"))
    with _measurement_state(model, skip_gain):
        # Functional.call passes one `training` flag to every layer; walking the graph with our
        # own operation_fn lets BatchNorm use batch statistics while StochDepth and Dropout stay
        # in inference mode.
        values = probe._run_through_graph(
            [batch], operation_fn=_call_with_modes(batch_norm_training)
        )
    values = [keras.ops.convert_to_numpy(v) for v in values]
    n = len(blocks)
    points = [channel_statistics(v) for v in values[: n + 1]]
    return {
        "avg_sq_mean": np.array([p[0] for p in points]),
        "avg_var": np.array([p[1] for p in points]),
        "res_avg_var": np.array([channel_statistics(v)[1] for v in values[n + 1 :]]),
    }
