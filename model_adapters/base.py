"""The contract between the server and the models.

An adapter wraps one model family. It sees images as ``(H, W, 3)`` uint8 RGB arrays and prompts as plain
strings, never Label Studio JSON, and answers with one ``supervision.Detections`` per image (pixel ``xyxy``,
``class_id`` indexing the prompts it was given). Its stages run in a fixed order::

    load() -> preprocess(images, query) -> forward(batch) -> postprocess(raw, images, query)

``forward`` wraps the adapter's ``_forward`` with ``torch.inference_mode`` and device placement, so adapter
files hold only the model call. Adapters pass images to transformers processors with
``input_data_format="channels_last"``: left to guess, a processor reads an image 1, 3 or 4 px tall as
channels-first. This module never imports torch at import time: the server lists and configures adapters on
machines without it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import supervision as sv

__all__ = [
    "CLASS_NAME_DATA_FIELD",
    "SECRET",
    "Adapter",
    "AdapterError",
    "AdapterLoadError",
    "ExamplePrompt",
    "ModelSpec",
    "Query",
    "QueryEmbedding",
    "ResizeRule",
    "SettingsError",
    "Task",
    "make_params",
    "public_params",
]

CLASS_NAME_DATA_FIELD = sv.config.CLASS_NAME_DATA_FIELD
# Field metadata of a ``Params`` knob holding a credential (an API key): declare it with ``repr=False`` too. It stays
# out of model versions (see ``public_params``), so rotating a key neither shows in nor changes them.
SECRET = "secret"


class Task(StrEnum):
    """What an adapter does with an image; the label config decides which one a control needs."""

    DETECTION = "detection"
    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


class AdapterError(Exception):
    """A model failed on a batch; the server reports it for every task in that batch."""


class AdapterLoadError(AdapterError):
    """A model could not be loaded (missing weights, offline hub, wrong class)."""


class SettingsError(ValueError):
    """A user setting is unknown or has the wrong type; the message names it and a valid example."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load. Equal specs share one loaded model per process.

    Attributes:
        adapter: Registry name of the adapter family, e.g. ``"grounding_dino"``.
        model_id: Hugging Face hub id or local path of the weights.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.
        dtype: ``"auto"``, ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    """

    adapter: str
    model_id: str
    device: str = "auto"
    dtype: str = "auto"


@dataclass(frozen=True)
class ResizeRule:
    """How an adapter's preprocessing resizes an image, so the server can decode it no larger than that.

    Attributes:
        shortest: The shorter side becomes this many pixels (``shortest_edge``; for a fixed output size, its larger
            side, which never asks for less detail than the model sees along either axis).
        longest: The longer side is capped at this many pixels (``longest_edge``).
    """

    shortest: int | None = None
    longest: int | None = None

    def scale(self, width: int, height: int) -> float:
        """The factor preprocessing shrinks a ``width`` × ``height`` image by (above 1 when it enlarges it)."""
        factors = []
        if self.shortest:
            factors.append(self.shortest / min(width, height))
        if self.longest:
            factors.append(self.longest / max(width, height))
        return min(factors) if factors else 1.0


P = TypeVar("P")


@dataclass(frozen=True, eq=False)
class ExamplePrompt:
    """A visual prompt: one example of a class, as a box on an image (few-shot detection).

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image holding the example.
        box: ``(x1, y1, x2, y2)`` in pixels of ``image``.
        key: Stable identity (e.g. source URL and box), so adapters can cache the example's embedding.
    """

    image: np.ndarray
    box: tuple[float, float, float, float]
    key: str = ""


@dataclass(frozen=True, eq=False)
class QueryEmbedding:
    """A visual prompt given as its embedding: a few-shot query learned from annotated boxes.

    For adapters with ``accepts_examples``, in the space their ``embed_boxes`` answers in, so a learned query
    needs neither its image nor a forward pass at prediction time.

    Attributes:
        vector: ``(D,)`` float32.
        key: Stable identity (e.g. the fit and the annotation it came from).
    """

    vector: np.ndarray
    key: str = ""


@dataclass(frozen=True)
class Query(Generic[P]):
    """What to look for in a batch of images.

    Attributes:
        prompts: Texts (or, for adapters with ``accepts_examples``, example boxes and query embeddings) the model is
            asked about; ``class_id`` in the answer indexes this tuple.
        params: The adapter's ``Params`` instance (thresholds and other per-request knobs).
    """

    prompts: tuple[str | ExamplePrompt | QueryEmbedding, ...]
    params: P


class Adapter(ABC, Generic[P]):
    """One model family. Subclasses set the class attributes and implement the stages.

    Lifecycle: ``load`` once per process, then for each batch ``preprocess -> forward -> postprocess``.
    ``__call__`` runs the three stages; the server calls it with at most ``max_batch_size`` images.
    """

    name: ClassVar[str]
    task: ClassVar[Task]
    variants: ClassVar[Mapping[str, str]]  # variant name -> default weights (hub id)
    default_variant: ClassVar[str]
    Params: ClassVar[type]
    max_batch_size: ClassVar[int] = 4
    accepts_examples: ClassVar[bool] = False  # whether prompts may include ExamplePrompt
    zero_shot: ClassVar[bool] = True  # answers from prompts alone; False: only through a learned head (DINOv2)
    # Tasks it serves besides ``task`` (a hosted API whose models may do any of them). Its ``Params`` then has a
    # ``task`` field, which the server sets to the task of the control being served.
    other_tasks: ClassVar[frozenset[Task]] = frozenset()

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.device = "cpu"
        self.dtype: Any = None
        # Set by ``load`` when preprocessing shrinks images anyway; ``None`` means the model needs full resolution.
        self.resize_rule: ResizeRule | None = None

    @classmethod
    def check_settings(cls, model_id: str, params: P) -> None:
        """Refuse, when a project is set up, settings that can never work (the default accepts all).

        Raises:
            SettingsError: Names the setting and shows a valid value.
        """

    @abstractmethod
    def load(self) -> None:
        """Import the model library and load weights; called once, in a background thread."""

    @abstractmethod
    def preprocess(self, images: Sequence[np.ndarray], query: Query[P]) -> Mapping[str, Any]:
        """Turn images and prompts into a dict of tensors for one forward pass."""

    @abstractmethod
    def _forward(self, batch: Mapping[str, Any]) -> Any:
        """Run the model on a device-placed batch; nothing else."""

    @abstractmethod
    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query[P]) -> list[sv.Detections]:
        """Turn model outputs into one ``Detections`` per image, in pixels of the original image."""

    def batch_key(self, image_shape: tuple[int, ...]) -> Hashable:
        """Images with equal keys may share a batch; by default all may.

        An adapter whose answer for an image depends on the other images of its batch (through padding to a
        common size, say) returns what decides it, so the server batches only images that answer as they would
        alone.
        """
        return None

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised image embeddings, the features a learned head is fitted on.

        Raises:
            AdapterError: The model has no image embedding.
        """
        raise AdapterError(f"{self.name} has no image embedding to learn a head on")

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Place the batch on the model's device, run ``_forward`` without autograd, bring tensors back to CPU."""
        import torch

        from model_adapters.torch_utils import to_device

        with torch.inference_mode():
            out = self._forward(to_device(dict(batch), self.device, self.dtype))
        return out if self.device == "cpu" else to_device(out, "cpu", None)

    def __call__(self, images: Sequence[np.ndarray], query: Query[P]) -> list[sv.Detections]:
        """Run the three stages on one batch and check there is one answer per image."""
        raw = self.forward(self.preprocess(images, query))
        out = self.postprocess(raw, images, query)
        if len(out) != len(images):
            raise AdapterError(f"{self.name} returned {len(out)} results for {len(images)} images")
        return out


def make_params(cls: type[P], values: Mapping[str, Any], *, owner: str) -> P:
    """Build an adapter's ``Params`` from user settings, checking names and types.

    Args:
        cls: A frozen dataclass whose fields are the adapter's knobs, each with a default.
        values: Settings from the user (JSON values).
        owner: Adapter name, for messages.

    Raises:
        SettingsError: An unknown key, or a value of the wrong type or outside a ``Literal``'s choices.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r} for {owner}; known: {', '.join(sorted(fields)) or 'none'}")
    return cls(**{key: _coerce(value, hints[key], f"{owner}.{key}") for key, value in values.items()})


def public_params(params: Any) -> dict[str, Any]:
    """``dataclasses.asdict(params)`` without its ``SECRET`` fields: what may enter a model version."""
    secret = {f.name for f in dataclasses.fields(params) if f.metadata.get(SECRET)}
    return {k: v for k, v in dataclasses.asdict(params).items() if k not in secret}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check one JSON value against a simple type hint (bool, int, float, str, Literal, X | None, tuple, dict)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise SettingsError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be an object, got {value!r}")
        return {_coerce(k, args[0], where): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (hint is int and value != int(value))
        ):
            raise SettingsError(f"{where} must be a number like {hint(1)!r}, got {value!r}")
        return hint(value)
    if hint is str and not isinstance(value, str):
        raise SettingsError(f"{where} must be a string, got {value!r}")
    return value
