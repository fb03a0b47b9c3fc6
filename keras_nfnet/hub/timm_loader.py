"""timm's Hugging Face repos, and folders in their layout, as keras-hub presets of NF models.

A timm repo holds ``config.json`` (``architecture``: the model name, ``num_classes``,
``pretrained_cfg``: the eval preprocessing) and ``model.safetensors`` (the state dict).
`timm_loader(preset, backbone_cls)` returns a keras-hub ``PresetLoader`` for

* a built-in preset name (`keras_nfnet.hub.presets.PRESETS`), which names a timm repo;
* ``"hf://<org>/<repo>"`` whose ``config.json`` is timm's (a Keras preset uploaded to the hub
  is left to keras-hub);
* a local folder holding timm's ``config.json`` and ``model.safetensors``;

and ``None`` for anything else (keras-hub's own presets). ``architecture`` selects the row
(`keras_nfnet.create_model` name); the state dict goes through the package's strict timm
converter (`keras_nfnet.convert.checkpoint.load_checkpoint_file`).

Downloads use `keras_nfnet.weights`: connect and read timeouts, a temporary file that takes its
name only after the hash check, and the pinned SHA-256 (and file revision) of every repo the
weights registry knows, sharing the cache with ``weights="imagenet"``. Other repos download
from ``main``, unpinned, into ``$KERAS_HOME/models/hf/<org>/<repo>/main/``. The host is
``$HF_ENDPOINT`` (the variable huggingface_hub reads too), by default https://huggingface.co.

This module uses keras-hub's ``PresetLoader`` (``keras_hub.src.utils.preset_utils``): keras-hub
exports no public base for preset loaders; the ``hub`` extra pins keras-hub 0.32.

Example:
>>> timm_loader("resnet_50_imagenet", None) is None  # keras-hub's own preset: keras-hub's
True
>>> hf_file_url("timm/test_nfnet.r160_in1k", "main", "config.json")
'https://huggingface.co/timm/test_nfnet.r160_in1k/resolve/main/config.json'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from keras_hub.src.models.image_classifier import ImageClassifier
from keras_hub.src.utils.preset_utils import PresetLoader

from keras_nfnet import weights
from keras_nfnet.convert.checkpoint import load_checkpoint_file
from keras_nfnet.hub.presets import PRESETS, registry_repos
from keras_nfnet.hub.recipe import pretrained_preprocessing, timm_config_preprocessing
from keras_nfnet.zoo import MODELS, list_models

HF_ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
HF_PREFIX = "hf://"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def hf_endpoint() -> str:
    """The Hugging Face host: ``$HF_ENDPOINT`` or https://huggingface.co."""
    return (os.environ.get(HF_ENDPOINT_ENV) or DEFAULT_HF_ENDPOINT).rstrip("/")


def hf_file_url(repo_id: str, revision: str, filename: str) -> str:
    """The download URL of one file of a hub repo at ``revision``."""
    return f"{hf_endpoint()}/{repo_id}/resolve/{revision}/{filename}"


def hf_repo_id(handle: str) -> str:
    """``"org/repo"`` of an ``"hf://org/repo"`` handle, or a ValueError.

    Example:
    >>> hf_repo_id("hf://timm/nf_resnet50.ra2_in1k")
    'timm/nf_resnet50.ra2_in1k'
    """
    repo_id = handle.removeprefix(HF_PREFIX)
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or ".." in parts:
        raise ValueError(
            "A Hugging Face preset is 'hf://<org>/<repo>', e.g. "
            f"'hf://timm/eca_nfnet_l0.ra2_in1k'. Received: preset={handle!r}."
        )
    return repo_id


def fetch_hf_file(repo_id: str, filename: str) -> str:
    """The cached path of ``filename`` of a hub repo, downloaded and hash-checked if needed."""
    known = registry_repos().get(repo_id)
    revision = known[2] if known else "main"
    url = hf_file_url(repo_id, revision, filename)
    if known and filename == WEIGHTS_FILE:
        # The registry's file: its cache name and pinned SHA-256, shared with weights="imagenet".
        return weights.download_checkpoint(known[0], url=url)
    target = os.path.join(weights.cache_dir(), "models", "hf", repo_id, revision, filename)
    return weights.download_verified(
        url,
        target,
        what=f"{filename} of {repo_id}",
        offline=(
            f"Offline, download {hf_file_url(repo_id, revision, CONFIG_FILE)} and "
            f"{hf_file_url(repo_id, revision, WEIGHTS_FILE)} elsewhere into one folder and "
            "pass the folder to from_preset."
        ),
    )


def check_architecture(config: dict, preset: str) -> str:
    """The `create_model` row a timm ``config.json`` names, or a ValueError for other models."""
    architecture = config.get("architecture")
    if architecture not in MODELS:
        raise ValueError(
            f"{preset!r} holds timm's {architecture!r}, which is not a Normalizer-Free model "
            f"of keras_nfnet. keras_nfnet.hub loads these timm architectures: "
            f"{', '.join(list_models())}. (keras-hub itself converts timm's ResNet, "
            "EfficientNet, MobileNet, DenseNet … repos: keras_hub.models.ImageClassifier."
            "from_preset.)"
        )
    return architecture


class NFNetTimmPresetLoader(PresetLoader):
    """keras-hub's preset loader for timm NF checkpoints (``config.json`` + safetensors).

    Args:
        preset: the preset as given (for messages).
        config: timm's ``config.json``.
        weights_file: returns the local path of ``model.safetensors`` (called only when weights
            are loaded, so ``load_weights=False`` downloads nothing but the config).
        backbone_cls: the backbone class (`keras_nfnet.hub.NFNetBackbone`).
    """

    def __init__(self, preset: str, config: dict, weights_file: Callable[[], str], backbone_cls):
        super().__init__(preset, config)
        self.row = check_architecture(config, preset)
        self.weights_file = weights_file
        self.backbone_cls = backbone_cls

    def check_backbone_class(self):
        return self.backbone_cls

    def load_backbone(self, cls, load_weights, **kwargs):
        backbone = cls(variant=self.row, **kwargs)
        if load_weights:
            load_checkpoint_file(backbone, self.weights_file(), backbone.spec, include_top=False)
        return backbone

    def load_task(self, cls, load_weights, load_task_weights, **kwargs):
        head = issubclass(cls, ImageClassifier) and load_task_weights
        if head:
            kwargs["num_classes"] = int(self.config["num_classes"])
        task = super().load_task(cls, load_weights and not head, load_task_weights, **kwargs)
        if head and load_weights:
            # The backbone and the classifier in one strict pass over the state dict.
            task.load_timm_checkpoint(self.weights_file())
        return task

    def load_image_converter(self, cls, **kwargs):
        settings = {**pretrained_preprocessing(self.row), **timm_config_preprocessing(self.config)}
        return cls(**{**settings, **kwargs})


def _read_json(path: str, cached: bool = False) -> dict:
    """A ``config.json``; a downloaded one that does not parse leaves the cache."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        message = f"{path} is not a JSON config: {error}."
        if cached:
            os.remove(path)
            message += " It was deleted from the cache; the next call downloads it again."
        raise ValueError(message) from None


def timm_loader(preset, backbone_cls) -> NFNetTimmPresetLoader | None:
    """The loader of a timm NF preset (see the module docstring) for ``backbone_cls``
    (`keras_nfnet.hub.NFNetBackbone`), or ``None``."""
    if not isinstance(preset, str):
        return None
    handle = PRESETS[preset]["kaggle_handle"] if preset in PRESETS else preset
    if handle.startswith(HF_PREFIX):
        repo_id = hf_repo_id(handle)
        try:
            config_path = fetch_hf_file(repo_id, CONFIG_FILE)
        except OSError:
            if repo_id.startswith("timm/"):
                raise
            return None  # e.g. a private repo: keras-hub's loader, with huggingface_hub's login
        config = _read_json(config_path, cached=True)
        if "architecture" not in config:
            return None  # a Keras preset on the hub: keras-hub's loader
        return NFNetTimmPresetLoader(
            preset, config, lambda: fetch_hf_file(repo_id, WEIGHTS_FILE), backbone_cls
        )
    config_path = os.path.join(handle, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return None
    config = _read_json(config_path)
    if "architecture" not in config or "registered_name" in config:
        return None

    def local_weights() -> str:
        path = os.path.join(handle, WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{preset!r} has timm's {CONFIG_FILE} but no {WEIGHTS_FILE}.")
        return path

    return NFNetTimmPresetLoader(preset, config, local_weights, backbone_cls)
