"""RandAugment as the NFNet recipe runs it (DeepMind ``nfnets/autoaugment.py``, §14.7).

Why not `keras.layers.RandAugment`: the Keras layer samples a random magnitude per op, works on
float images in a ``value_range``, uses a different op set and fill values, and has none of the
TF1 port's quirks. The reference behaviour, implemented here on uint8 images:

* level ``RA = 100·layers + magnitude`` (``405`` = 4 layers at magnitude 5); the magnitude is
  fixed; ``_MAX_LEVEL = 10``, so magnitude 15 extrapolates every op;
* each layer picks one of 16 ops uniformly and **always** applies it;
* rotate / shear / translate flip their sign with probability 0.5, use nearest-neighbour
  projective transforms (TF-Addons' ops) and fill empty pixels with 128; Cutout fills with 128;
* ``contrast`` uses ``num_pixels / 256`` as its "mean"; sharpness uses the 3x3 kernel
  ``[[1,1,1],[1,5,1],[1,1,1]]/13`` and keeps border pixels; brightness blends with black;
  blend factors above 1 extrapolate, then clip;
* Solarize at threshold >= 256 and SolarizeAdd compare in int32 (the TF1 code's threshold 256
  is a no-op, as the spec's table says).

The §14.6 order around it (clip to [0, 255], truncate to uint8, RA, back to float) is
`randaugment_float`.
"""

from __future__ import annotations

import math

import tensorflow as tf

MAX_LEVEL = 10.0
FILL_VALUE = 128
OP_NAMES = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
    "SolarizeAdd",
)


def parse_level(level) -> tuple[int, int]:
    """``405`` or ``"405"`` -> ``(num_layers, magnitude) = (4, 5)``.

    Example:
    >>> parse_level(415)
    (4, 15)
    """
    try:
        value = int(level)
    except (TypeError, ValueError):
        value = -1
    if isinstance(level, bool) or value < 100:
        raise ValueError(
            "randaugment level must be an integer 100*layers + magnitude, e.g. 405, 410, 415. "
            f"Received: {level!r}."
        )
    return value // 100, value % 100


def blend(image1, image2, factor: float) -> tf.Tensor:
    """TF1 ``blend``: ``image1 + factor·(image2 - image1)``, clipped only when extrapolating."""
    if factor == 0.0:
        return tf.convert_to_tensor(image1)
    if factor == 1.0:
        return tf.convert_to_tensor(image2)
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    temp = image1 + factor * (image2 - image1)
    if 0.0 < factor < 1.0:
        return tf.cast(temp, tf.uint8)
    return tf.cast(tf.clip_by_value(temp, 0.0, 255.0), tf.uint8)


def autocontrast(image) -> tf.Tensor:
    def channel(x):
        lo = tf.cast(tf.reduce_min(x), tf.float32)
        hi = tf.cast(tf.reduce_max(x), tf.float32)

        def scale():
            s = 255.0 / (hi - lo)
            y = tf.clip_by_value(tf.cast(x, tf.float32) * s - lo * s, 0.0, 255.0)
            return tf.cast(y, tf.uint8)

        return tf.cond(hi > lo, scale, lambda: x)

    return tf.stack([channel(image[..., c]) for c in range(3)], -1)


def equalize(image) -> tf.Tensor:
    def channel(x):
        x = tf.cast(x, tf.int32)
        histo = tf.histogram_fixed_width(x, [0, 255], nbins=256)
        nonzero = tf.reshape(tf.gather(histo, tf.where(histo != 0)), [-1])
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

        def lut():
            table = (tf.cumsum(histo) + step // 2) // tf.maximum(step, 1)
            table = tf.clip_by_value(tf.concat([[0], table[:-1]], 0), 0, 255)
            return tf.gather(table, x)

        return tf.cast(tf.cond(step == 0, lambda: x, lut), tf.uint8)

    return tf.stack([channel(image[..., c]) for c in range(3)], -1)


def invert(image) -> tf.Tensor:
    return 255 - image


def posterize(image, bits: int) -> tf.Tensor:
    shift = 8 - bits
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold: int) -> tf.Tensor:
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition: int, threshold: int = 128) -> tf.Tensor:
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def color(image, factor: float) -> tf.Tensor:
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor: float) -> tf.Tensor:
    gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.int32)
    hist = tf.histogram_fixed_width(gray, [0, 255], nbins=256)
    # §14.7 quirk: the "mean" is the pixel count / 256, not the mean intensity.
    mean = tf.reduce_sum(tf.cast(hist, tf.float32)) / 256.0
    degenerate = tf.clip_by_value(tf.ones_like(gray, tf.float32) * mean, 0.0, 255.0)
    degenerate = tf.image.grayscale_to_rgb(tf.cast(degenerate, tf.uint8))
    return blend(degenerate, image, factor)


def brightness(image, factor: float) -> tf.Tensor:
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor: float) -> tf.Tensor:
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, shape=[3, 3, 1, 1]) / 13.0
    kernel = tf.tile(kernel, [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], padding="VALID"
    )
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)[0]
    # The border keeps the original pixels.
    mask = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    result = tf.where(mask == 1, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(result, image, factor)


def _transform(image, transform) -> tf.Tensor:
    """TF-Addons ``transform``: nearest neighbour, empty pixels filled with 128."""
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.cast(tf.reshape(transform, [1, 8]), tf.float32),
        output_shape=shape[:2],
        fill_value=float(FILL_VALUE),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def rotate(image, degrees) -> tf.Tensor:
    radians = degrees * math.pi / 180.0
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    # tfa.image.angles_to_projective_transforms
    x_offset = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_offset = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    return _transform(image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]))


def shear_x(image, level) -> tf.Tensor:
    return _transform(image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def shear_y(image, level) -> tf.Tensor:
    return _transform(image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0]))


def translate_x(image, pixels) -> tf.Tensor:
    # tfa translate(image, [-pixels, 0]) -> transform [1, 0, pixels, 0, 1, 0, 0, 0]
    return _transform(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0]))


def translate_y(image, pixels) -> tf.Tensor:
    return _transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0]))


def cutout(image, pad_size: int, seed) -> tf.Tensor:
    """Square of side ``2·pad_size`` at a uniform centre, clipped, filled with 128."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    cy = tf.random.stateless_uniform([], seeds[0], 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], 0, w, dtype=tf.int32)
    rows = tf.range(h)[:, None, None]
    cols = tf.range(w)[None, :, None]
    # The TF1 code pads a zero block: rows [max(0, c - pad), min(H, c + pad)), same for columns.
    inside = (
        (rows >= cy - pad_size)
        & (rows < cy + pad_size)
        & (cols >= cx - pad_size)
        & (cols < cx + pad_size)
    )
    inside = tf.broadcast_to(inside, tf.shape(image))
    return tf.where(inside, tf.constant(FILL_VALUE, image.dtype), image)


def op_arguments(magnitude: int) -> dict[str, float | int]:
    """The per-op arguments at a magnitude (§14.7 table).

    Example:
    >>> a = op_arguments(15)
    >>> a["rotate_degrees"], a["posterize_bits"], a["solarize_threshold"], a["cutout_pad"]
    (45.0, 6, 384, 60)
    """
    level = magnitude / MAX_LEVEL
    return {
        "rotate_degrees": level * 30.0,
        "posterize_bits": int(level * 4),
        "solarize_threshold": int(level * 256),
        "solarize_add": int(level * 110),
        "enhance_factor": level * 1.8 + 0.1,
        "shear": level * 0.3,
        "translate": level * 100.0,
        "cutout_pad": int(level * 40),
    }


def apply_op(image, index, magnitude: int, seed) -> tf.Tensor:
    """Apply op ``OP_NAMES[index]`` at ``magnitude`` to a uint8 HxWx3 image."""
    args = op_arguments(magnitude)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    # Rotate, shear and translate are negated with probability 0.5.
    sign = tf.where(tf.random.stateless_uniform([], seeds[0]) < 0.5, -1.0, 1.0)
    factor = args["enhance_factor"]
    branches = [
        lambda: autocontrast(image),
        lambda: equalize(image),
        lambda: invert(image),
        lambda: rotate(image, sign * args["rotate_degrees"]),
        lambda: posterize(image, args["posterize_bits"]),
        lambda: solarize(image, args["solarize_threshold"]),
        lambda: color(image, factor),
        lambda: contrast(image, factor),
        lambda: brightness(image, factor),
        lambda: sharpness(image, factor),
        lambda: shear_x(image, sign * args["shear"]),
        lambda: shear_y(image, sign * args["shear"]),
        lambda: translate_x(image, sign * args["translate"]),
        lambda: translate_y(image, sign * args["translate"]),
        lambda: cutout(image, args["cutout_pad"], seeds[1]),
        lambda: solarize_add(image, args["solarize_add"]),
    ]
    out = tf.switch_case(tf.cast(index, tf.int32), branches)
    return tf.ensure_shape(out, image.shape)


def randaugment(image, num_layers: int, magnitude: int, seed) -> tf.Tensor:
    """``num_layers`` uniformly chosen ops, each always applied, on a uint8 HxWx3 image.

    Example:
    >>> import numpy as np
    >>> img = tf.constant(np.arange(16 * 16 * 3).reshape(16, 16, 3) % 256, tf.uint8)
    >>> out = randaugment(img, 4, 5, seed=[0, 1])
    >>> out.shape, out.dtype.name
    (TensorShape([16, 16, 3]), 'uint8')
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"randaugment expects a uint8 image. Received dtype {image.dtype.name}.")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num_layers * 2)
    for layer in range(num_layers):
        index = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(OP_NAMES), dtype=tf.int32)
        image = apply_op(image, index, magnitude, seeds[2 * layer + 1])
    return image


def randaugment_float(image, level, seed) -> tf.Tensor:
    """§14.6 step 5 on a float image: clip to [0, 255], truncate to uint8, RA, back to float.

    Example:
    >>> randaugment_float(tf.fill([8, 8, 3], 300.0), 405, seed=[1, 1]).dtype.name
    'float32'
    """
    num_layers, magnitude = parse_level(level)
    image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
    return tf.cast(randaugment(image, num_layers, magnitude, seed), tf.float32)
