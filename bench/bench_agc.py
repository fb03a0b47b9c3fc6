"""Training-step time of a reduced NFNet with and without AGC; prints one JSON object.

The two models are identical `AGCModel`s (same weights, SGD with momentum), compiled with
``agc_clipping=0.01`` and ``agc_clipping=None``; a plain `keras.Model` is timed too, so the cost
of the AGCModel step itself is visible. Steps are timed in alternation (AGC, no AGC, plain, ...)
after warm-up, and the medians are reported. The goal is an AGC overhead under 5 %.

Usage::

    python bench/bench_agc.py [--depths 1,1,1,1] [--size 64] [--batch 8] [--steps 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

from keras_nfnet.models.nfnet import NFNet, NFNetVariant


def _compile(model, agc_clipping):
    kwargs = {} if agc_clipping == "plain" else {"agc_clipping": agc_clipping}
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,1,1,1", help="blocks per stage (F0 widths)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    variant = NFNetVariant(depths=tuple(int(d) for d in args.depths.split(",")))
    build = dict(input_shape=(args.size, args.size, 3), classes=args.classes)
    build.update(classifier_activation=None, dropout_rate=0.0, stochdepth_rate=0.0)
    base = NFNet(variant, **build)
    weights = base.get_weights()
    models = {}
    for key, clipping in (("agc", 0.01), ("no_agc", None), ("plain", "plain")):
        model = NFNet(variant, **build)
        model.set_weights(weights)
        if clipping == "plain":
            model = keras.Model(model.inputs, model.outputs)
        models[key] = _compile(model, clipping)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, args.classes, (args.batch,))
    for model in models.values():
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
    times = {key: [] for key in models}
    fraction = None
    for _ in range(args.steps):
        for key, model in models.items():
            start = time.perf_counter()
            logs = model.train_on_batch(x, y, return_dict=True)
            times[key].append(time.perf_counter() - start)
            if key == "agc":
                fraction = logs["agc_clip_fraction"]
    agc_ops = _time_agc_ops(models["agc"], args.steps)
    medians = {key: statistics.median(t) for key, t in times.items()}
    minima = {key: min(t) for key, t in times.items()}
    result = {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in _devices()],
        "depths": variant.depths,
        "widths": variant.widths,
        "image_size": args.size,
        "batch": args.batch,
        "parameters": int(sum(np.prod(w.shape) for w in weights)),
        "timed_steps": args.steps,
        "step_s_agc": round(medians["agc"], 5),
        "step_s_no_agc": round(medians["no_agc"], 5),
        "step_s_plain_keras_model": round(medians["plain"], 5),
        "agc_overhead_pct": round(100 * (medians["agc"] / medians["no_agc"] - 1), 2),
        # Minima are less sensitive to other processes on a shared machine.
        "min_step_s_agc": round(minima["agc"], 5),
        "min_step_s_no_agc": round(minima["no_agc"], 5),
        "agc_overhead_pct_of_minima": round(100 * (minima["agc"] / minima["no_agc"] - 1), 2),
        "agc_clip_fraction_last_step": round(float(fraction), 4),
        # AGC's gradient processing alone (TF, compiled, on this model's variables), and its
        # share of the no-AGC step: a steadier estimate than a difference of two noisy steps.
        "agc_ops_s": None if agc_ops is None else round(agc_ops, 5),
        "agc_ops_pct_of_step": None
        if agc_ops is None
        else round(100 * agc_ops / medians["no_agc"], 2),
    }
    print(json.dumps(result))
    return result


def _time_agc_ops(model, repeats: int) -> float | None:
    """Median time of AGC on random gradients for all of ``model``'s clipped variables."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    from keras_nfnet.agc import DEFAULT_EXCLUDE, clip_unitwise, is_excluded
    from keras_nfnet.agc import unitwise_norm_tf_fused as norm

    variables = [v for v in model.trainable_variables if not is_excluded(v, DEFAULT_EXCLUDE)]
    grads = [tf.random.normal(v.shape, stddev=1e-3) for v in variables]

    @tf.function
    def agc(grads):
        return [clip_unitwise(g, v, 0.01, 1e-3, norm)[0] for g, v in zip(grads, variables)]

    agc(grads)
    times = []
    for _ in range(max(repeats, 10)):
        start = time.perf_counter()
        agc(grads)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _devices():
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()
    return ["default"]


if __name__ == "__main__":
    main()
