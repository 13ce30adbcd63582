"""Detic and CoDet open-vocabulary detectors with masks, from their official checkpoints, on the ``detic_net`` port.

load -> preprocess -> _forward -> postprocess. Images are resized and padded as detectron2's ``DefaultPredictor``
does (shortest edge ``min_size``, longest at most ``max_size``); the prompts become the classifier: CLIP ViT-B/32
text embeddings of ``"a " + prompt`` (transformers ``CLIPModel``, ``text_encoder`` setting), computed once per
prompt set and kept in a small LRU. The answer has boxes (``RectangleLabels``) and the network's own
class-agnostic masks pasted at the image's size (``PolygonLabels``/``BrushLabels``, no SAM needed).

``model_id`` is the checkpoint: a local ``.pth`` path or an http(s) URL of a published checkpoint, downloaded
once into ``detic_cache_dir()`` (``$HF_HOME/prelabel/detic``, else ``~/.cache/prelabel/detic``). The network's
sizes (Swin-B or ResNet-50, widths) are read off the weights; CoDet's checkpoints carry extra training-only keys
that the loader drops (``detic_net.checkpoint``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, AdapterLoadError, Query, ResizeRule, SettingsError, Task
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import download_file, missing_path, resolve_device

__all__ = ["CheckpointDetector", "ClipTextEncoder", "CoDet", "Detic", "DeticParams", "TextEncoder", "detic_cache_dir"]

_DETIC_RELEASES = "https://dl.fbaipublicfiles.com/detic/"
DEFAULT_TEXT_ENCODER = "openai/clip-vit-base-patch32"
TEXT_ENCODER_FOLDER = "clip-vit-base-patch32"  # looked for beside the checkpoint before the hub
PROMPT_PREFIX = "a "  # Detic's and CoDet's vocabulary prompt: "a " + class name
_TEXT_CACHE_SIZE = 16
# The network's own per-class NMS and cap (Detic's ``NMS_THRESH_TEST`` and LVIS ``DETECTIONS_PER_IMAGE``); the
# server's ``nms_threshold`` and ``max_detections`` apply after them.
NETWORK_NMS = 0.5
NETWORK_MAX_DETECTIONS = 300


@dataclass(frozen=True)
class DeticParams:
    """Per-request knobs (defaults: the Detic demo's).

    Attributes:
        score_threshold: Keep a detection whose fused score exceeds this (strictly), as ``SCORE_THRESH_TEST``.
        one_class_per_proposal: Each proposal answers only for its best prompt (the demo's setting).
        min_size: Shortest image edge after resizing (``INPUT.MIN_SIZE_TEST``).
        max_size: Longest image edge after resizing (``INPUT.MAX_SIZE_TEST``).
        text_encoder: CLIP ViT-B/32 (``CLIPModel`` layout) hub id or path for the prompt embeddings; empty: the
            ``clip-vit-base-patch32`` folder beside the checkpoint if there is one (offline use), else
            ``openai/clip-vit-base-patch32`` from the hub.
        task: Set by the server from the control: ``"detection"`` (boxes only: the mask head is skipped) or
            ``"segmentation"`` (boxes and masks).
    """

    score_threshold: float = 0.5
    one_class_per_proposal: bool = True
    min_size: int = 800
    max_size: int = 1333
    text_encoder: str = ""
    task: Literal["detection", "segmentation"] = "detection"

    def __post_init__(self) -> None:
        """Refuse values the network cannot use."""
        if not 0 <= self.score_threshold < 1:
            raise SettingsError(f"detic.score_threshold must be in [0, 1), got {self.score_threshold}")
        # Below 160 px the stride-128 level can shrink to one cell, where its GroupNorm has nothing to normalise.
        if not 160 <= self.min_size <= self.max_size:
            raise SettingsError(
                f"detic.min_size and max_size must satisfy 160 <= min_size <= max_size (like 800 and 1333), got "
                f"{self.min_size} and {self.max_size}"
            )


def detic_cache_dir() -> Path:
    """Where checkpoints given by URL are downloaded: ``$HF_HOME/prelabel/detic``, else ``~/.cache/prelabel/detic``."""
    home = os.environ.get("HF_HOME")
    return Path(home) / "prelabel" / "detic" if home else Path.home() / ".cache" / "prelabel" / "detic"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


class TextEncoder:
    """Prompt texts -> (C, D) text features, cached per (encoder, prompt set); subclasses load and run one family."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._models: dict[str, Any] = {}
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, model_id: str, texts: tuple[str, ...]) -> Any:
        """(C, D) features of ``texts``, computed once per (model, texts)."""
        import torch

        key = (model_id, texts)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            if model_id not in self._models:
                self._models[model_id] = self.load(model_id)
            with torch.inference_mode():
                emb = self.encode(self._models[model_id], list(texts)).float()
            self._cache[key] = emb
            while len(self._cache) > _TEXT_CACHE_SIZE:
                self._cache.popitem(last=False)
            return emb

    def load(self, model_id: str) -> Any:
        """The text model behind ``model_id``."""
        raise NotImplementedError

    def encode(self, model: Any, texts: list[str]) -> Any:
        """(C, D) unnormalised projected text features (the classifier normalises them)."""
        raise NotImplementedError


class ClipTextEncoder(TextEncoder):
    """transformers ``CLIPModel`` text tower (Detic's and CoDet's CLIP ViT-B/32)."""

    def load(self, model_id: str) -> Any:
        """Tokenizer and model from a hub id or folder."""
        import transformers

        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_id)
            model = transformers.CLIPModel.from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise SettingsError(
                f"text_encoder {model_id!r} could not be loaded as a CLIP model ({reason}); give a "
                f"CLIPModel hub id or path such as {DEFAULT_TEXT_ENCODER!r}"
            ) from exc
        return tokenizer, model.to(self.device).eval()

    def encode(self, model: Any, texts: list[str]) -> Any:
        """``get_text_features`` of the padded batch."""
        tokenizer, clip = model
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = clip.get_text_features(**tokens.to(self.device))
        return getattr(out, "pooler_output", out)


class CheckpointDetector(Adapter[Any]):
    """A ``detic_net`` network from an official checkpoint, with a text encoder for the prompts (Detic, CoDet, VLPart).

    detectron2's resize, boxes with the network's own masks. Subclasses name their network and text encoder.
    """

    task = Task.DETECTION
    other_tasks = frozenset({Task.SEGMENTATION})  # its own masks; ``Params.task`` says which the control wants
    max_batch_size = 2
    source: ClassVar[str]  # where the checkpoints are published, for error messages
    network: ClassVar[str]  # "detic" or "vlpart": the network the checkpoint must hold
    text_folder: ClassVar[str]  # text encoder folder looked for beside the checkpoint
    default_text_model: ClassVar[str]  # else this text encoder

    def text_encoder(self) -> TextEncoder:
        """The prompts' text encoder (not loaded yet)."""
        raise NotImplementedError

    def prompt_texts(self, prompts: tuple[str, ...]) -> tuple[str, ...]:
        """Label prompts -> the texts the original demo embeds."""
        return tuple(PROMPT_PREFIX + p for p in prompts)

    def settings(self, params: Any) -> Any:
        """The network's ``DetectionSettings`` for a request."""
        raise NotImplementedError

    def load(self) -> None:
        """Load the checkpoint (downloading a published URL once); the text encoder loads on first use."""
        import torch

        from model_adapters.detic_net.checkpoint import DeticCheckpointError, load_detic
        from model_adapters.detic_net.vlpart import VLPartNet

        self.device = resolve_device(self.spec.device)
        self.dtype = torch.float32  # detectron2's inference dtype; the fixtures' tolerances assume it
        local = self._local_checkpoint()
        try:
            if not local.is_file():  # a published URL not downloaded yet
                download_file(self.spec.model_id, local)
            net = load_detic(local)
        except DeticCheckpointError as exc:
            raise AdapterLoadError(f"{self.name}: {exc}. Use a checkpoint from {self.source}") from exc
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise AdapterLoadError(
                f"{self.name}: could not read the checkpoint {self.spec.model_id!r}: {reason}"
            ) from exc
        found = "vlpart" if isinstance(net, VLPartNet) else "detic"
        if found != self.network:
            use = "the vlpart adapter" if found == "vlpart" else "the detic or codet adapter"
            raise AdapterLoadError(
                f"{self.name}: {self.spec.model_id!r} is a {'VLPart' if found == 'vlpart' else 'Detic/CoDet'} "
                f"checkpoint; use {use}, or a checkpoint from {self.source}"
            )
        self.net = net.to(self.device)
        self.text = self.text_encoder()
        beside = local.parent / self.text_folder
        self.default_text_encoder = self.text_model_id(str(beside)) if beside.is_dir() else self.default_text_model
        self.resize_rule = ResizeRule(shortest=self.Params.min_size, longest=self.Params.max_size)

    def text_model_id(self, folder: str) -> str:
        """How the text encoder names a folder."""
        return folder

    def _local_checkpoint(self) -> Path:
        model_id = self.spec.model_id
        if not model_id.startswith(("http://", "https://")):
            path = Path(model_id).expanduser()
            if not path.is_file():
                raise missing_path(self.name, path, "file", f"a checkpoint from {self.source}")
            return path
        folder = detic_cache_dir() / hashlib.sha256(model_id.encode()).hexdigest()[:16]
        cached = folder / (os.path.basename(urlparse(model_id).path) or "model.pth")
        if not cached.is_file() and _offline():
            raise AdapterLoadError(
                f"{self.name}: {model_id} is not downloaded yet and HF_HUB_OFFLINE is set; download it once and "
                "set model_id to the file's path"
            )
        return cached

    def batch_key(self, image_shape: tuple[int, ...]) -> Any:
        """Only images of one size share a batch: padding to a common size would change Swin's windows."""
        return tuple(image_shape[:2])

    def preprocess(self, images: Sequence[np.ndarray], query: Query[Any]) -> dict[str, Any]:
        """Resized, normalised, padded pixels and the classifier built from the prompts' text embeddings."""
        from model_adapters.detic_net.preprocess import batch_images, resize_image
        from model_adapters.detic_net.roi_heads import classifier_weight

        p = query.params
        resized = [resize_image(image, p.min_size, p.max_size) for image in images]
        pixels, sizes = batch_images(resized, self.net.size_divisibility)
        prompts = tuple(str(prompt) for prompt in query.prompts)
        return {
            "pixels": pixels,
            "sizes": sizes,
            "original_sizes": [tuple(image.shape[:2]) for image in images],
            "zs_weight": classifier_weight(
                self.text(p.text_encoder or self.default_text_encoder, self.prompt_texts(prompts))
            ),
            "params": p,
        }

    def _forward(self, batch: Mapping[str, Any]) -> list[Any]:
        params = batch["params"]
        return self.net(
            batch["pixels"], batch["sizes"], batch["original_sizes"], batch["zs_weight"],
            settings=self.settings(params), with_masks=params.task == "segmentation",
        )  # fmt: skip

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query[Any]) -> list[sv.Detections]:
        """One ``Detections`` per image: boxes, fused scores, prompt index and name, and masks for segmentation."""
        out = []
        for det in raw:
            class_id = det.classes.cpu().numpy().astype(int)
            out.append(
                sv.Detections(
                    xyxy=det.boxes.cpu().numpy().astype(np.float32),
                    confidence=det.scores.cpu().numpy().astype(np.float32),
                    class_id=class_id,
                    mask=None if det.masks is None else det.masks.cpu().numpy(),
                    data={CLASS_NAME_DATA_FIELD: np.asarray([query.prompts[i] for i in class_id], dtype=object)},
                )
            )
        return out


class _DeticFamily(CheckpointDetector):
    """Detic and CoDet: the same network and inference; only the checkpoints differ."""

    Params = DeticParams
    network = "detic"
    text_folder = TEXT_ENCODER_FOLDER
    default_text_model = DEFAULT_TEXT_ENCODER

    def text_encoder(self) -> TextEncoder:
        """CLIP ViT-B/32 through transformers."""
        return ClipTextEncoder(self.device)

    def settings(self, params: DeticParams) -> Any:
        """Threshold and one-class mode from the request; the network's own NMS and cap."""
        from model_adapters.detic_net.roi_heads import DetectionSettings

        return DetectionSettings(
            params.score_threshold, NETWORK_NMS, NETWORK_MAX_DETECTIONS, params.one_class_per_proposal
        )


@register_adapter
class Detic(_DeticFamily):
    """Detic (CenterNet2 + cascade + CLIP classifier) from the official model zoo (Apache-2.0)."""

    name = "detic"
    variants: Mapping[str, str] = {
        # LVIS + COCO + ImageNet-21k image labels: the demo's models, the broadest vocabularies.
        "swinb_in21k": _DETIC_RELEASES + "Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.pth",
        "r50_in21k": _DETIC_RELEASES + "Detic_LCOCOI21k_CLIP_R5021k_640b32_4x_ft4x_max-size.pth",
        # LVIS + ImageNet-21k (standard LVIS benchmark models).
        "swinb_lvis_in21k": _DETIC_RELEASES + "Detic_LI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.pth",
        "swinb_lvis": _DETIC_RELEASES + "Detic_LI_CLIP_SwinB_896b32_4x_ft4x_max-size.pth",
        "r50_lvis": _DETIC_RELEASES + "Detic_LI_CLIP_R5021k_640b64_4x_ft4x_max-size.pth",
    }
    default_variant = "swinb_in21k"
    source = "Detic's model zoo (github.com/facebookresearch/Detic, docs/MODEL_ZOO.md)"


@register_adapter
class CoDet(_DeticFamily):
    """CoDet (co-occurrence-guided Detic training) from its published checkpoints (Apache-2.0).

    The checkpoints are on Google Drive (links in github.com/CVMI-Lab/CoDet, "Model Zoo"), which gives no direct
    download URL: download the file once and set ``model_id`` to its path; the variants name the files.
    """

    name = "codet"
    variants: Mapping[str, str] = {
        "swinb_lvis": "CoDet_OVLVIS_SwinB_4x_ft4x.pth",
        "r50_lvis": "CoDet_OVLVIS_R5021k_4x_ft4x.pth",
    }
    default_variant = "swinb_lvis"
    source = "CoDet's model zoo (github.com/CVMI-Lab/CoDet, README 'Model Zoo', Google Drive)"
