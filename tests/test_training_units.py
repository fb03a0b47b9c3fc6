"""Unit tests of training/: eval transform, mixing, schedule, weight decay, EMA, configs, inputs."""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_nfnet.agc import decay_exempt
from keras_nfnet.models.nfnet import NFNet
from keras_nfnet.optimizers import NesterovSGD, WarmupCosineDecay, ema_decay_at
from training import augment, configs, data, preprocessing
from training.train import build_config

MEAN = np.array([0.485, 0.456, 0.406]) * 255.0
STD = np.array([0.229, 0.224, 0.225]) * 255.0


# ----------------------------------------------------------------------------- §15 eval


@pytest.mark.parametrize("size", [8, 256])
def test_eval_transform_crops_rows_and_columns_16_to_16_plus_s(size):
    # An image already (S+32) square: the bicubic resize is the identity (scale 1 samples pixel
    # centres), so the output must be exactly pixels [16:16+S, 16:16+S], normalized.
    full = size + 32
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (full, full, 3)).astype("uint8")
    out = preprocessing.eval_preprocess(image, size).numpy()
    expected = (image[16 : 16 + size, 16 : 16 + size].astype("float64") - MEAN) / STD
    assert out.shape == (size, size, 3)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_eval_transform_squashes_the_whole_image_before_the_crop():
    # A 40x80 image whose left half is 0 and right half 255: squashing to 40x40 keeps the
    # boundary in the middle (column 20); a crop-then-resize would not.
    image = np.zeros((40, 80, 3), "uint8")
    image[:, 40:] = 255
    out = preprocessing.eval_preprocess(image, 8).numpy() * STD + MEAN
    # Crop columns 16..23 of the 40-wide squash: 16..19 are left (0), 20..23 right (255),
    # except the bicubic ringing next to the edge (column 19/20), which overshoots unclamped.
    np.testing.assert_allclose(out[:, :3], 0.0, atol=1e-3)
    np.testing.assert_allclose(out[:, 5:], 255.0, atol=1e-3)
    # The edge columns ring by exactly 1/16 of the step (bicubic, unclamped): under 0, over 255.
    np.testing.assert_allclose(out[:, 3], -255.0 / 16, atol=1e-3)
    np.testing.assert_allclose(out[:, 4], 255.0 + 255.0 / 16, atol=1e-3)


def test_random_crop_fallback_is_the_aspect_preserving_center_crop():
    image = np.arange(100 * 200 * 3).reshape(100, 200, 3).astype("int32")
    crop = preprocessing.center_crop_fallback(image, 224).numpy()
    side = int(224 / 256 * 100)  # 87
    top, left = (100 - side + 1) // 2, (200 - side + 1) // 2
    np.testing.assert_array_equal(crop, image[top : top + side, left : left + side])


# ----------------------------------------------------------------------------- §14.6 mixing


def test_mixup_and_cutmix_halves_mix_labels_like_their_pixels():
    batch, size, classes = 8, 16, 8  # raw batch 16, quarters of 4
    values = np.linspace(0.0, 240.0, 2 * batch)  # every raw image one distinct constant
    images = np.broadcast_to(values[:, None, None, None], (2 * batch, size, size, 3))
    labels = tf.one_hot(np.arange(2 * batch) % classes, classes)
    mixed, soft, ratios = augment.mixup_cutmix(images, labels, seed=[5, 6])
    mixed, soft, ratios = mixed.numpy(), soft.numpy(), ratios.numpy()
    q = batch // 2
    for k in range(batch):
        a, b = (k, k + q) if k < q else (k + q, k + 2 * q)  # (Q1, Q2) then (Q3, Q4)
        la, lb = a % classes, b % classes
        if k < q:  # MixUp: every pixel is r*a + (1-r)*b, r = the label weight of a
            r = (mixed[k] - values[b]) / (values[a] - values[b])
            np.testing.assert_allclose(r, ratios[k], atol=1e-5)
        else:  # CutMix: the fraction of a's pixels is the label weight of a
            frac_a = np.mean(np.isclose(mixed[k, :, :, 0], values[a]))
            frac_b = np.mean(np.isclose(mixed[k, :, :, 0], values[b]))
            assert frac_a + frac_b == pytest.approx(1.0)
            assert ratios[k] == pytest.approx(frac_a)
        assert soft[k, la] == pytest.approx(ratios[k], abs=1e-6)
        assert soft[k, lb] == pytest.approx(1.0 - ratios[k], abs=1e-6)
        assert soft[k].sum() == pytest.approx(1.0, abs=1e-6)
    # CutMix ratios are box areas on the pixel grid: multiples of 1/256.
    np.testing.assert_allclose(ratios[q:] * size * size, np.round(ratios[q:] * size * size))


# ----------------------------------------------------------------------------- §14.1 schedule


def test_learning_rate_schedule_matches_the_recipe_formula():
    peak, total = 0.1 * 4096 / 256, 1_281_167 * 360 // 4096
    warmup = 5 * 1_281_167 / 4096
    schedule = WarmupCosineDecay(peak, warmup, total)

    def formula(t):
        if t <= warmup:
            return peak * t / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))

    assert total == 112_602 and peak == 1.6
    mid = (total + warmup) / 2
    for t in (0, 1563, 1564, int(mid), total):
        assert float(schedule(t)) == pytest.approx(formula(t), rel=1e-5, abs=1e-7)
    assert float(schedule(0)) == 0.0
    assert float(schedule(int(mid))) == pytest.approx(0.8, rel=1e-3)
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-7)


def test_nesterov_sgd_applies_the_learning_rate_outside_the_momentum_buffer():
    # Two steps with LR 1.0 then 0.5 (p, g scalars): DM/PyTorch formula by hand.
    lrs = iter([1.0, 0.5])
    opt = NesterovSGD(lambda: next(lrs), momentum=0.9)
    v = keras.Variable(np.zeros(1, "float32"))
    buf, p = 0.0, 0.0
    for lr, g in ((1.0, 1.0), (0.5, 2.0)):
        opt.apply([np.full(1, g, "float32")], [v])
        buf = 0.9 * buf + g
        p -= lr * (g + 0.9 * buf)
        assert float(v.numpy()[0]) == pytest.approx(p, rel=1e-6)


def test_ema_uses_the_tf1_warmup_and_differs_from_raw_weights():
    opt = NesterovSGD(0.1, momentum=0.0, ema_decay=0.99999)
    v = keras.Variable(np.ones(1, "float32"))
    ema, p = 1.0, 1.0
    for t in range(3):
        opt.apply([np.ones(1, "float32")], [v])
        p -= 0.1
        d = min(0.99999, (1 + t) / (10 + t))
        ema = d * ema + (1 - d) * p
        assert float(ema_decay_at(t, 0.99999)) == pytest.approx(d)
    assert float(opt.ema_variables[0].numpy()[0]) == pytest.approx(ema, rel=1e-6)
    assert abs(ema - p) > 0.02  # 0.73 vs 0.70
    with opt.swap_ema_weights():
        assert float(v.numpy()[0]) == pytest.approx(ema, rel=1e-6)
    assert float(v.numpy()[0]) == pytest.approx(p, rel=1e-6)


# ----------------------------------------------------------------------------- §13.3 decay


def test_weight_decay_exempts_exactly_gains_biases_and_skip_gains(tiny_variant):
    model = NFNet(tiny_variant, input_shape=(32, 32, 3), classes=10)
    exempt = {v.path for v in model.trainable_variables if decay_exempt(v)}
    expected = {
        v.path
        for v in model.trainable_variables
        if v.path.rsplit("/", 1)[-1] in ("gain", "bias", "skip_gain")
    }
    decayed = {v.path for v in model.trainable_variables} - exempt
    assert exempt == expected
    assert all(p.endswith("/kernel") for p in decayed)
    assert "predictions/kernel" in decayed and "predictions/bias" in exempt
    assert any(p.endswith("_se/fc0/kernel") for p in decayed)
    assert sum(p.endswith("skip_gain") for p in exempt) == sum(tiny_variant.depths)


# ----------------------------------------------------------------------------- configs


def test_unknown_experiment_lists_the_registered_ones():
    with pytest.raises(ValueError) as err:
        build_config("nfnet_f9_imagenet")
    for name in ("digits_nfnet", "nfnet_f0_imagenet", "nfnet_f7_imagenet", "nfnet_finetune"):
        assert name in str(err.value)


def test_unknown_override_key_is_named():
    with pytest.raises(ValueError, match=r"'trainer\.train_epocs'.*train_epochs"):
        build_config("digits_nfnet", params_override="trainer.train_epocs=3")
    with pytest.raises(ValueError, match=r"trainer\.seed must be an integer"):
        build_config("digits_nfnet", params_override="trainer.seed=abc")


def test_config_file_then_params_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  train_epochs: 3\n  seed: 4\n")
    cfg = build_config("digits_nfnet", [str(path)], "trainer.seed=5", strategy="mirrored")
    assert cfg.trainer.train_epochs == 3.0
    assert (cfg.trainer.seed, cfg.runtime.strategy) == (5, "mirrored")


def test_imagenet_experiments_follow_the_recipe():
    cfg = configs.get_experiment("nfnet_f3_imagenet")
    assert (cfg.train_data.image_size, cfg.eval_data.image_size) == (320, 416)
    assert cfg.train_data.randaugment == 415 and cfg.train_data.mixup_cutmix
    assert (cfg.optimizer.agc_clipping, cfg.optimizer.weight_decay) == (0.01, 2e-5)
    assert (cfg.optimizer.ema_decay, cfg.optimizer.label_smoothing) == (0.99999, 0.1)
    assert cfg.train_data.global_batch_size == 4096 and cfg.trainer.train_epochs == 360


# ----------------------------------------------------------------------------- inputs


def _write_folder(root, corrupt: int = 0):
    for c in ("a", "b"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(3):
            img = np.full((20, 24, 3), 40 * i, "uint8")
            (root / c / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    for i in range(corrupt):
        (root / "a" / f"bad{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


def test_missing_dataset_directories_raise_clear_errors(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError, match="does not exist"):
        data.make_source(configs.DataConfig(source="image_folder", folder=missing))
    with pytest.raises(ValueError, match=r"image-net\.org"):
        data.make_source(
            configs.DataConfig(name="imagenet2012", data_dir=str(tmp_path), manual_dir=missing)
        )
    with pytest.raises(ValueError, match=r"image-net\.org"):
        data.make_source(configs.DataConfig(name="imagenet2012", data_dir=str(tmp_path)))


def test_corrupt_images_are_skipped_with_a_count_or_rejected(tmp_path):
    _write_folder(tmp_path, corrupt=2)
    cfg = configs.DataConfig(source="image_folder", folder=str(tmp_path), image_size=16)
    with pytest.warns(UserWarning, match="Skipping 2 corrupt image file"):
        source = data.make_source(cfg)
    assert (source.num_examples, source.num_classes, len(source.skipped_files)) == (6, 2, 2)
    cfg.global_batch_size, cfg.randaugment = 4, 205
    batch = next(iter(data.train_dataset(cfg, source, 2)))
    assert batch[0].shape == (4, 16, 16, 3) and batch[1].shape == (4, 2)
    cfg.skip_corrupt_images = False
    with pytest.raises(ValueError, match=r"2 of 8 files .*bad0\.jpg"):
        data.make_source(cfg)


def test_train_stream_restarted_at_a_step_continues_the_same_batches():
    cfg = configs.get_experiment("digits_nfnet").train_data
    cfg.global_batch_size = 200  # 7 steps per epoch: step 9 is inside the second epoch
    source = data.make_source(cfg)
    full = list(data.train_dataset(cfg, source, 10).take(11).as_numpy_iterator())
    resumed = list(data.train_dataset(cfg, source, 10, start_step=9).take(2).as_numpy_iterator())
    for (xa, ya), (xb, yb) in zip(full[9:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(full[0][1], full[7][1])  # epochs are reshuffled
