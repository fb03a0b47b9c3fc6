"""MixUp and CutMix exactly as the NFNet recipe batches them (docs/nfnet_reference.md §14.6 step 4).

Keras 3's `keras.layers.MixUp` / `CutMix` choose per batch or per call and mix a batch with a
shuffled copy of itself; the recipe instead builds every output from **two** raw images taken
from a batch of twice the size, deterministically half MixUp and half CutMix:

* the raw batch of size 2B is split into quarters Q1..Q4 of B/2;
* outputs 0..B/2-1 are MixUp: ``r·Q1 + (1-r)·Q2``, ``r ~ Beta(alpha, alpha)`` per pair;
* outputs B/2..B-1 are CutMix: ``mask·Q3 + (1-mask)·Q4``; the box centre is uniform over the
  image, its sides are ``int(sqrt(1-U)·W)`` and ``int(sqrt(1-U)·H)`` (``U ~ U(0, 1)``), it spans
  centre ± side//2 clipped to the image; ``r`` is the mean of the mask (the fraction of Q3);
* labels: ``r·y(Q1|Q3) + (1-r)·y(Q2|Q4)``. Label smoothing comes after, in the loss (§14.2).

So the Keras layers are not used here. Randomness is stateless (explicit ``seed``).
"""

from __future__ import annotations

import tensorflow as tf


def sample_beta(shape, alpha: float, seed) -> tf.Tensor:
    """``Beta(alpha, alpha)`` samples from two stateless Gamma draws.

    Example:
    >>> r = sample_beta([1000], 0.2, seed=[1, 2])
    >>> bool(tf.reduce_all((r >= 0) & (r <= 1)))
    True
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    a = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma(shape, seeds[1], alpha=alpha)
    # Both draws can underflow to 0 for small alpha; split evenly then.
    total = a + b
    return tf.where(total > 0, a / tf.maximum(total, 1e-30), 0.5)


def cutmix_masks(n, height: int, width: int, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """``n`` CutMix masks ``[n, H, W, 1]`` (1 inside the box: the first image) and their means.

    Same arithmetic as DeepMind's ``_cutmix_padding``: integer centre uniform in ``[0, W)`` x
    ``[0, H)``, sides ``int(sqrt(1 - U)·W)``, box ``[c - side//2, c + side//2)`` clipped.

    Example:
    >>> masks, ratios = cutmix_masks(4, 8, 8, seed=[0, 1])
    >>> masks.shape, bool(tf.reduce_all(ratios == tf.reduce_mean(masks, axis=[1, 2, 3])))
    (TensorShape([4, 8, 8, 1]), True)
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    cx = tf.random.stateless_uniform([n], seeds[0], 0, width, dtype=tf.int32)
    cy = tf.random.stateless_uniform([n], seeds[1], 0, height, dtype=tf.int32)
    side = tf.sqrt(1.0 - tf.random.stateless_uniform([n], seeds[2]))
    rw = tf.cast(side * float(width), tf.int32)
    rh = tf.cast(side * float(height), tf.int32)
    x1 = tf.clip_by_value(cx - rw // 2, 0, width)
    x2 = tf.clip_by_value(cx + rw // 2, 0, width)
    y1 = tf.clip_by_value(cy - rh // 2, 0, height)
    y2 = tf.clip_by_value(cy + rh // 2, 0, height)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = (
        (rows >= y1[:, None, None])
        & (rows < y2[:, None, None])
        & (cols >= x1[:, None, None])
        & (cols < x2[:, None, None])
    )
    masks = tf.cast(inside, tf.float32)[..., None]
    return masks, tf.reduce_mean(masks, axis=[1, 2, 3])


def mixup_cutmix(images, labels, seed, mixup_alpha: float = 0.2):
    """Mix a raw batch of 2B images into B outputs: B/2 by MixUp, then B/2 by CutMix (§14.6).

    Args:
        images: float ``[2B, H, W, C]`` (B even); static H, W.
        labels: one-hot (or soft) float labels ``[2B, K]``.
        seed: int tensor ``[2]`` for this batch.
        mixup_alpha: the Beta parameter of MixUp (0.2 in the recipe).

    Returns:
        ``(images [B, H, W, C], labels [B, K], ratios [B])``; ``ratios`` is the weight of the
        first image of each pair (Q1 or Q3).

    Example:
    >>> x = tf.concat([tf.zeros([2, 4, 4, 3]), tf.ones([2, 4, 4, 3]) * 255.0], 0)
    >>> y = tf.one_hot([0, 1, 2, 3], 4)
    >>> mixed, soft, r = mixup_cutmix(x, y, seed=[3, 4])
    >>> mixed.shape, soft.shape
    (TensorShape([2, 4, 4, 3]), TensorShape([2, 4]))
    """
    images = tf.convert_to_tensor(images, tf.float32)
    labels = tf.convert_to_tensor(labels, tf.float32)
    raw = images.shape[0]
    if raw is not None and raw % 4:
        raise ValueError(
            "mixup_cutmix needs a raw batch of 2B images with B even (a multiple of 4). "
            f"Received a batch of {raw}."
        )
    quarter = tf.shape(images)[0] // 4
    q1, q2, q3, q4 = (images[i * quarter : (i + 1) * quarter] for i in range(4))
    l1, l2, l3, l4 = (labels[i * quarter : (i + 1) * quarter] for i in range(4))
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    r_mix = sample_beta([quarter], mixup_alpha, seeds[0])
    mixup = r_mix[:, None, None, None] * q1 + (1.0 - r_mix[:, None, None, None]) * q2
    masks, r_cut = cutmix_masks(quarter, images.shape[1], images.shape[2], seeds[1])
    cutmix = masks * q3 + (1.0 - masks) * q4
    ratios = tf.concat([r_mix, r_cut], 0)
    first = tf.concat([l1, l3], 0)
    second = tf.concat([l2, l4], 0)
    mixed_labels = ratios[:, None] * first + (1.0 - ratios[:, None]) * second
    return tf.concat([mixup, cutmix], 0), mixed_labels, ratios
