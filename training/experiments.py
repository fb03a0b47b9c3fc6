"""The registered experiments.

* ``nfnet_f0_imagenet`` … ``nfnet_f7_imagenet``: the paper's ImageNet recipe
(docs/nfnet_reference.md
  §14), one per row of `NFNET_VARIANTS` (variants are data: no per-variant code).
* ``nf_resnet50_imagenet`` and ``nf_regnet_b0_imagenet``: the NF-ResNet paper's recipes as the
  DeepMind experiment files set them (docs/nfnet_reference.md §14.8).
* ``nfnet_finetune``: fine-tune any pretrained row (``model.name=eca_nfnet_l0`` …; F0 by default)
  on a TFDS dataset or an image folder with a new head.
* ``digits_nfnet``: the embedded default, scikit-learn's bundled handwritten digits and a reduced
  NFNet trained from scratch with AGC; no download, a few minutes on 2 CPU cores.
"""

from __future__ import annotations

from keras_nfnet.architecture.rows import NF_REGNET_VARIANTS, NFNET_VARIANTS
from training.configs import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    TrainerConfig,
    register_experiment,
)

IMAGENET_TRAIN_EXAMPLES = 1_281_167  # §14.6


def imagenet_recipe(variant: str) -> ExperimentConfig:
    """§14: batch 4096, SGD Nesterov 0.9, LR 0.1·B/256 with 5 warm-up epochs and cosine to 0 over
    360 epochs, coupled L2 2e-5, AGC 0.01, EMA 0.99999, label smoothing 0.1 after mixing,
    MixUp(0.2)/CutMix halves from a 2x raw batch, RandAugment at the variant's level after mixing,
    train at ``train_size``, evaluate at ``test_size`` with the §15 protocol (batch 50)."""
    row = NFNET_VARIANTS[variant]
    return ExperimentConfig(
        model=ModelConfig(variant=variant, num_classes=1000),
        **_imagenet_data(row.train_size, row.test_size, 4096, randaugment=row.randaugment),
        optimizer=OptimizerConfig(),
        trainer=_imagenet_trainer(360.0),
        runtime=RuntimeConfig(),
    )


def _imagenet_data(
    train_size: int, test_size: int, batch: int, eval_transform: str = "resize_crop_32", **train
) -> dict:
    """``train_data`` / ``eval_data`` of an ImageNet recipe (TFDS ``imagenet2012``; evaluation
    in batches of 50)."""
    data = {"source": "tfds", "name": "imagenet2012"}
    return {
        "train_data": DataConfig(
            **data, split="train", image_size=train_size, global_batch_size=batch, **train
        ),
        "eval_data": DataConfig(
            **data,
            split="validation",
            image_size=test_size,
            global_batch_size=50,
            eval_transform=eval_transform,
        ),
    }


def _imagenet_trainer(epochs: float, **kwargs) -> TrainerConfig:
    """Loops of 1000 steps, an evaluation every 10 loops, over the 1,281,167 ImageNet images."""
    return TrainerConfig(
        train_epochs=epochs,
        num_train_examples=IMAGENET_TRAIN_EXAMPLES,
        steps_per_loop=1000,
        validation_interval=10,
        **kwargs,
    )


def _register_imagenet(variant: str) -> None:
    name = f"nfnet_{variant.lower()}_imagenet"
    register_experiment(name)(lambda: imagenet_recipe(variant))


for _variant in ("F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7"):
    _register_imagenet(_variant)


@register_experiment("nf_resnet50_imagenet")
def nf_resnet50_imagenet() -> ExperimentConfig:
    """DeepMind's base experiment (``experiment.py``, §14.8) with the NF-ResNet-50: batch 1024,
    90 epochs, LR 0.1·B/256 with 5 warm-up epochs and cosine to 0, SGD Nesterov 0.9, weight
    decay 1e-4, label smoothing 0.1, no EMA, no AGC, crop and flip only, float32; evaluation by
    ``crop_resize`` at 224."""
    return ExperimentConfig(
        model=ModelConfig(name="dm_nf_resnet50", num_classes=1000),
        **_imagenet_data(224, 224, 1024, "crop_resize", mixup_cutmix=False, randaugment=None),
        optimizer=OptimizerConfig(weight_decay=1e-4, agc_clipping=None, ema_decay=None),
        trainer=_imagenet_trainer(90.0, precision="float32"),
        runtime=RuntimeConfig(),
    )


@register_experiment("nf_regnet_b0_imagenet")
def nf_regnet_b0_imagenet() -> ExperimentConfig:
    """``experiment_nf_regnets.py`` (§14.8) with NF-RegNet-B0: batch 1024, LR 0.4 (not batch
    scaled) with 5 warm-up epochs and cosine to 0.001 over 360 epochs, SGD Nesterov 0.9, no AGC,
    weight decay 5e-5 (``5e-5 + 1e-5·level``, level 0), label smoothing 0.1, EMA 0.99999,
    MixUp/CutMix without RandAugment, float32, stochastic depth 0.1; trained at 192, evaluated
    at 224."""
    row = NF_REGNET_VARIANTS["B0"]
    return ExperimentConfig(
        model=ModelConfig(name="dm_nf_regnet_b0", num_classes=1000, stochdepth_rate=0.1),
        **_imagenet_data(row.train_size, row.test_size, 1024, mixup_cutmix=True, randaugment=None),
        optimizer=OptimizerConfig(
            base_learning_rate=0.4,
            scale_by_batch_size=False,
            end_learning_rate=0.001,
            weight_decay=5e-5,
            agc_clipping=None,
            ema_decay=0.99999,
        ),
        trainer=_imagenet_trainer(360.0, precision="float32"),
        runtime=RuntimeConfig(),
    )


@register_experiment("nfnet_finetune")
def nfnet_finetune() -> ExperimentConfig:
    """Fine-tune a pretrained network with a new head: NFNet-F0 by default, any row of
    ``keras_nfnet.list_models(pretrained=True)`` with ``--params_override=model.name=eca_nfnet_l0``
    (the classifier is re-initialized for the dataset's classes; ``model.init_checkpoint`` is
    ``"imagenet"``, the row's published weights, or a `.keras` model file to start from). Images
    are trained and evaluated at the network's own train and test sizes (``image_size`` null).

    Choices, for a batch of 64 on a small dataset: LR 0.01·B/256 with 1 warm-up epoch and cosine
    over 20 epochs; AGC λ 0.005 (a smaller λ than from scratch, so pretrained features move
    gently); coupled L2 1e-5; EMA 0.9999; label smoothing 0.1; crop and flip but no
    MixUp/CutMix/RandAugment; stochastic depth 0.1 and dropout 0.2. Set ``train_data.name``
    (any TFDS dataset) or ``train_data.source=image_folder`` with ``train_data.folder`` (and
    ``eval_data`` likewise).
    """
    return ExperimentConfig(
        model=ModelConfig(
            variant="F0",
            num_classes=0,
            dropout_rate=0.2,
            stochdepth_rate=0.1,
            init_checkpoint="imagenet",
        ),
        train_data=DataConfig(
            source="tfds",
            name="tf_flowers",
            split="train[:90%]",
            image_size=None,
            global_batch_size=64,
            shuffle_buffer_size=2048,
            mixup_cutmix=False,
            randaugment=None,
        ),
        eval_data=DataConfig(
            source="tfds",
            name="tf_flowers",
            split="train[90%:]",
            image_size=None,
            global_batch_size=50,
            eval_transform="resize_crop_32",
        ),
        optimizer=OptimizerConfig(
            base_learning_rate=0.01,
            warmup_epochs=1.0,
            weight_decay=1e-5,
            agc_clipping=0.005,
            ema_decay=0.9999,
        ),
        trainer=TrainerConfig(train_epochs=20.0, validation_interval=1),
    )


@register_experiment("digits_nfnet")
def digits_nfnet() -> ExperimentConfig:
    """The embedded default: 1,437 training / 360 test digits (stratified split of scikit-learn's
    ``load_digits``), upsampled to 32x32 RGB; a reduced NFNet (four stages of one block, widths
    32-64, group width 16, every F-family feature) trained from scratch with AGC, SGD-Nesterov,
    warm-up + cosine, coupled L2 and the warm-up EMA. No crop, flip or mixing (digits are small
    and not mirror-symmetric)."""
    return ExperimentConfig(
        model=ModelConfig(
            variant="F0",
            variant_overrides={
                "depths": [1, 1, 1, 1],
                "widths": [32, 64, 64, 64],
                "stem_widths": [8, 16, 32],
                "group_width": 16,
            },
            num_classes=10,
            dropout_rate=0.0,
            stochdepth_rate=0.0,
        ),
        train_data=DataConfig(
            source="digits",
            split="train",
            image_size=32,
            global_batch_size=64,
            shuffle_buffer_size=2048,
            random_crop=False,
            random_flip=False,
            mixup_cutmix=False,
            randaugment=None,
            deterministic=True,
        ),
        eval_data=DataConfig(
            source="digits",
            split="test",
            image_size=32,
            global_batch_size=120,
            eval_transform="resize",
            deterministic=True,
        ),
        optimizer=OptimizerConfig(
            base_learning_rate=0.4,
            warmup_epochs=1.0,
            weight_decay=5e-5,
            ema_decay=0.999,
            label_smoothing=0.1,
        ),
        trainer=TrainerConfig(train_epochs=15.0, validation_interval=5, verbose=2),
    )
