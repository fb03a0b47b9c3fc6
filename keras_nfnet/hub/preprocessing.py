"""Each row's pretrained preprocessing as keras-hub layers: timm's eval transform, in Keras ops.

timm evaluates a checkpoint with ``Resize(floor(size / crop_pct))`` (the short side, aspect kept:
``crop_mode="center"``; both sides: ``"squash"``), ``CenterCrop(size)``, ``x / 255`` and
``(x - mean) / std`` (``timm.data.transforms_imagenet_eval``). `TimmEvalResizing` is the resize
and crop, `NFNetImageConverter` adds the scaling (a keras-hub `ImageConverter`: ``scale =
1 / (255 std)``, ``offset = -mean / std``), and `NFNetImageClassifierPreprocessor` wraps it for
`keras_nfnet.hub.NFNetImageClassifier`. ``for_variant(row)`` reads a row's recipe from its
`NFSpec` (`keras_nfnet.hub.recipe.pretrained_preprocessing`).

Example:
>>> import numpy as np
>>> converter = NFNetImageConverter.for_variant("test_nfnet")
>>> converter.image_size, converter.crop_pct, converter.mean
((160, 160), 0.95, (0.5, 0.5, 0.5))
>>> out = converter(np.full((1, 168, 200, 3), 255.0, "float32"))
>>> tuple(out.shape), round(float(out[0, 0, 0, 0]), 4)
((1, 160, 160, 3), 1.0)
"""

from __future__ import annotations

import math

import keras
import keras_hub

from keras_nfnet.checks import check_choice
from keras_nfnet.hub.backbone import NFNetBackbone
from keras_nfnet.hub.recipe import pretrained_preprocessing
from keras_nfnet.hub.timm_loader import timm_loader
from keras_nfnet.registry import register

CROP_MODES = ("center", "squash")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@register
class TimmEvalResizing(keras.layers.Resizing):
    """timm's eval resize and crop: resize to ``floor(size / crop_pct)``, centre-crop ``size``.

    ``crop_mode="center"`` keeps the aspect ratio (the short side of a square target becomes
    ``floor(size / crop_pct)``, the long side ``floor(that * long / short)``, as torchvision's
    ``Resize(int)``; a non-square target as timm's ``ResizeKeepRatio``); ``"squash"`` resizes
    both sides. The crop offsets round half to even, as torchvision's ``CenterCrop``. Runs in
    `tf.data` with any backend (a `keras.layers.Resizing`). Channels-last images only.

    Example:
    >>> import numpy as np
    >>> layer = TimmEvalResizing(4, 4, crop_pct=0.8, interpolation="nearest")
    >>> image = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    >>> np.asarray(layer(image))[0, :, :, 0].astype(int).tolist()
    [[0, 1, 2, 3], [5, 6, 7, 8], [10, 11, 12, 13], [15, 16, 17, 18]]
    """

    def __init__(
        self,
        height: int,
        width: int,
        crop_pct: float = 1.0,
        crop_mode: str = "center",
        interpolation: str = "bicubic",
        antialias: bool = True,
        **kwargs,
    ):
        kwargs.pop("crop_to_aspect_ratio", None)
        super().__init__(height, width, interpolation=interpolation, antialias=antialias, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(
                f"TimmEvalResizing supports channels_last only. Received: "
                f"data_format={self.data_format!r}."
            )
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, int | float):
            raise ValueError(f"crop_pct must be a number in (0, 1]. Received: {crop_pct!r}.")
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1]. Received: crop_pct={crop_pct!r}.")
        self.crop_pct = float(crop_pct)
        self.crop_mode = check_choice("crop_mode", crop_mode, CROP_MODES)

    @property
    def scale_size(self) -> tuple[int, int]:
        """timm's ``scale_size``: ``floor(size / crop_pct)`` per side."""
        return math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)

    def _resized_size(self, height, width):
        scale_h, scale_w = self.scale_size
        if self.crop_mode == "squash":
            return scale_h, scale_w
        np_ = self.backend.numpy
        static = isinstance(height, int) and isinstance(width, int)
        if scale_h == scale_w:
            # torchvision Resize(int): the short side becomes scale, the long side is truncated.
            if static:
                if height <= width:
                    return scale_h, scale_h * width // height
                return scale_h * height // width, scale_h
            tall = np_.greater(height, width)
            return (
                np_.where(tall, np_.floor_divide(scale_h * height, width), scale_h),
                np_.where(tall, scale_h, np_.floor_divide(scale_h * width, height)),
            )
        # timm ResizeKeepRatio(longest=0): the side that needs the least upscaling fits.
        if static:
            ratio = min(height / scale_h, width / scale_w)
            return round(height / ratio), round(width / ratio)
        h, w = (self.backend.cast(v, "float64") for v in (height, width))
        ratio = np_.minimum(h / scale_h, w / scale_w)
        return (
            self.backend.cast(np_.round(h / ratio), "int32"),
            self.backend.cast(np_.round(w / ratio), "int32"),
        )

    def _resize_crop(self, images, interpolation):
        b = self.backend
        shape = b.shape(images)
        new_h, new_w = self._resized_size(shape[-3], shape[-2])
        resized = b.image.resize(
            images,
            size=(new_h, new_w),
            interpolation=interpolation,
            antialias=self.antialias,
            data_format="channels_last",
        )
        if isinstance(new_h, int) and isinstance(new_w, int):
            start = [0, round((new_h - self.height) / 2), round((new_w - self.width) / 2), 0]
        else:
            top, left = (
                b.cast(b.numpy.round(b.cast(n - size, "float32") / 2.0), "int32")
                for n, size in ((new_h, self.height), (new_w, self.width))
            )
            start = b.numpy.stack([0, top, left, 0])
        return b.core.slice(resized, start, [shape[0], self.height, self.width, shape[-1]])

    def transform_images(self, images, transformation=None, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        return self._resize_crop(images, self.interpolation)

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        return self._resize_crop(segmentation_masks, "nearest")

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        raise NotImplementedError(
            "TimmEvalResizing crops images and does not move bounding boxes. For detection, "
            "use keras-hub's RetinaNet image converter (a plain resize)."
        )

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(crop_pct=self.crop_pct, crop_mode=self.crop_mode)
        return config


@register
class NFNetImageConverter(keras_hub.layers.ImageConverter):
    """A keras-hub image converter with timm's eval transform and a row's mean and std.

    Images in [0, 255] (any size, batched or not; channels last) are resized and centre-cropped
    by `TimmEvalResizing` to ``image_size`` (``None``: no resize or crop), then normalized:
    ``(x / 255 - mean) / std``. `for_variant` fills every argument from a row's pretrained
    recipe (`keras_nfnet.hub.recipe.pretrained_preprocessing`).

    Args:
        image_size: ``(height, width)`` of the output, or ``None``.
        crop_pct: the crop's fraction of the resized image (timm's ``crop_pct``), in (0, 1].
        crop_mode: ``"center"`` (keep the aspect ratio) or ``"squash"``.
        mean / std: per-channel RGB statistics of images in [0, 1].
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        antialias: low-pass before downsampling (PIL, which timm uses, always does).
        **kwargs: `keras_hub.layers.ImageConverter` arguments (``dtype``, ``name`` …).

    Example:
    >>> import numpy as np
    >>> converter = NFNetImageConverter(image_size=(2, 2), crop_pct=1.0, mean=(0.5, 0.5, 0.5),
    ...                                 std=(0.25, 0.25, 0.25), interpolation="nearest")
    >>> np.asarray(converter(np.full((2, 2, 3), 255.0, "float32")))[0, 0].tolist()
    [2.0, 2.0, 2.0]
    """

    backbone_cls = NFNetBackbone

    def __init__(
        self,
        image_size: tuple[int, int] | None = None,
        crop_pct: float = 1.0,
        crop_mode: str = "center",
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        interpolation: str = "bicubic",
        antialias: bool = True,
        **kwargs,
    ):
        for key in ("scale", "offset", "crop_to_aspect_ratio", "pad_to_aspect_ratio"):
            kwargs.pop(key, None)  # derived from mean/std; the crop is TimmEvalResizing's
        check_choice("interpolation", interpolation, INTERPOLATIONS)
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(
                f"mean and std need 3 values (RGB), std > 0. Received: mean={mean!r}, std={std!r}."
            )
        super().__init__(
            image_size=image_size,
            scale=[1.0 / (255.0 * s) for s in std],
            offset=[-m / s for m, s in zip(mean, std)],
            crop_to_aspect_ratio=False,
            interpolation=interpolation,
            antialias=antialias,
            **kwargs,
        )
        height, width = image_size if image_size else (None, None)
        self.resizing = TimmEvalResizing(
            height,
            width,
            crop_pct=crop_pct,
            crop_mode=crop_mode,
            interpolation=interpolation,
            antialias=antialias,
            dtype=self.dtype_policy,
            name="resizing",
        )
        self.crop_pct = self.resizing.crop_pct
        self.crop_mode = self.resizing.crop_mode
        self.mean, self.std = mean, std

    @classmethod
    def for_variant(cls, variant: str, **overrides) -> NFNetImageConverter:
        """The converter of a row's pretrained weights; ``overrides`` replace its fields."""
        return cls(**{**pretrained_preprocessing(variant), **overrides})

    def get_config(self):
        config = super().get_config()
        for key in ("scale", "offset", "crop_to_aspect_ratio", "pad_to_aspect_ratio"):
            config.pop(key, None)
        config.update(
            crop_pct=self.crop_pct, crop_mode=self.crop_mode, mean=self.mean, std=self.std
        )
        return config

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> NFNetImageConverter:
        """keras-hub's `from_preset`, plus timm Hugging Face repos and the built-in names
        (`keras_nfnet.hub.NFNetBackbone.from_preset`)."""
        loader = timm_loader(preset, NFNetBackbone)
        if loader is None:
            return super().from_preset(preset, **kwargs)
        return loader.load_image_converter(cls, **kwargs)


@register
class NFNetImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """keras-hub's classifier preprocessor for `keras_nfnet.hub.NFNetImageClassifier`.

    ``image_converter`` is an `NFNetImageConverter` (`for_variant` gives a row's); labels and
    sample weights pass through.

    Example:
    >>> import numpy as np
    >>> preprocessor = NFNetImageClassifierPreprocessor.for_variant("test_nfnet")
    >>> x, y = preprocessor(np.zeros((2, 200, 180, 3), "float32"), np.array([0, 1]))
    >>> tuple(x.shape), round(float(x[0, 0, 0, 0]), 4)
    ((2, 160, 160, 3), -1.0)
    """

    backbone_cls = NFNetBackbone
    image_converter_cls = NFNetImageConverter

    @classmethod
    def for_variant(cls, variant: str, **overrides) -> NFNetImageClassifierPreprocessor:
        """The preprocessor of a row's pretrained weights (`NFNetImageConverter.for_variant`)."""
        return cls(image_converter=NFNetImageConverter.for_variant(variant, **overrides))

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> NFNetImageClassifierPreprocessor:
        """keras-hub's `from_preset`, plus timm Hugging Face repos and the built-in names."""
        loader = timm_loader(preset, NFNetBackbone)
        if loader is None:
            return super().from_preset(preset, **kwargs)
        return loader.load_preprocessor(cls, **kwargs)
