"""Promptable segmentation (SAM family): masks from boxes or clicks, with cached image embeddings.

A promptable segmenter splits the model in two: ``embed_image`` (the heavy image encoder, once per image) and
``decode`` (the light prompt decoder). ``segment`` keeps embeddings in a bounded LRU keyed by the caller's
image key, so the second click on an image costs only the decoder. Nothing about the image is stored on the
model between calls (no ``set_image`` state), so concurrent requests on different images cannot mix.

Answers are ``supervision.Detections`` with ``mask`` (N, H, W) bool at the image's size, ``xyxy`` the masks'
bounding boxes, and ``confidence`` the model's predicted mask quality, in [0, 1].
"""

from __future__ import annotations

import hashlib
import threading
from abc import abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, ModelSpec, P, Query, Task

__all__ = ["Click", "EmbeddingCache", "MaskPrompt", "PromptableSegmenter", "masks_to_detections"]


@dataclass(frozen=True)
class Click:
    """A click on the image, in pixels; negative clicks mark what is not the object."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class MaskPrompt:
    """Prompts for one image, in pixels.

    Attributes:
        boxes: ``(x1, y1, x2, y2)`` boxes; each gets its own mask, all in one decoder call.
        clicks: Clicks that together describe one object (with the single box, when exactly one is given).
    """

    boxes: tuple[tuple[float, float, float, float], ...] = ()
    clicks: tuple[Click, ...] = ()


class EmbeddingCache:
    """LRU of image embeddings, bounded by count and by bytes; safe across threads.

    Args:
        max_items: Most embeddings kept.
        max_bytes: Most bytes kept (sum of tensor sizes); the newest entry is always kept.
    """

    def __init__(self, max_items: int = 32, max_bytes: int = 2 << 30) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        """The embedding for ``key`` (marking it recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, value: Any) -> None:
        """Store an embedding, evicting the least recently used ones past the bounds."""
        size = _nbytes(value)
        with self._lock:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            while len(self._items) > 1 and (
                len(self._items) > self.max_items or sum(s for _, s in self._items.values()) > self.max_bytes
            ):
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _nbytes(value: Any) -> int:
    """Bytes held by the tensors/arrays in a (nested) embedding."""
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size() * value.nelement())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    return 0


def masks_to_detections(masks: np.ndarray, scores: np.ndarray) -> sv.Detections:
    """Masks (N, H, W) bool and their scores as ``Detections`` with each mask's bounding box."""
    masks = np.asarray(masks, dtype=bool)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32) if len(masks) else np.zeros((0, 4), dtype=np.float32),
        mask=masks,
        confidence=np.asarray(scores, dtype=np.float32).reshape(len(masks)),
        class_id=np.zeros(len(masks), dtype=int),
    )


class PromptableSegmenter(Adapter[P]):
    """A SAM-style model: ``embed_image`` once per image, then ``decode`` for each prompt.

    Subclasses implement ``load``, ``embed_image`` and ``decode``. The server calls ``segment`` with boxes from
    a detector (Grounded SAM) or clicks from an annotator; the text-prompt batch stages do not apply.
    """

    task = Task.SEGMENTATION
    promptable: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.embeddings = EmbeddingCache()

    @abstractmethod
    def embed_image(self, image: np.ndarray) -> Any:
        """Run the image encoder on one ``(H, W, 3)`` uint8 image; return what ``decode`` needs."""

    @abstractmethod
    def decode(self, embedding: Any, image: np.ndarray, prompt: MaskPrompt, params: P | None = None) -> sv.Detections:
        """Masks for the prompt from a cached embedding: one per box, or one for the clicks."""

    def segment(
        self, image: np.ndarray, prompt: MaskPrompt, *, image_key: str | None = None, params: P | None = None
    ) -> sv.Detections:
        """Masks for ``prompt`` on ``image``; the image embedding is reused across calls with the same key.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            prompt: Boxes and/or clicks in pixels.
            image_key: Identity of the image (e.g. its URL); by default a hash of its pixels.
            params: The adapter's ``Params`` (defaults when ``None``).
        """
        import torch

        key = f"{image_key or hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()}:{image.shape}"
        with torch.inference_mode():
            embedding = self.embeddings.get(key)
            if embedding is None:
                embedding = self.embed_image(image)
                self.embeddings.put(key, embedding)
            if not prompt.boxes and not prompt.clicks:
                return masks_to_detections(np.zeros((0, *image.shape[:2]), dtype=bool), np.zeros(0))
            return self.decode(embedding, image, prompt, params)

    # Batch prelabeling of text prompts is done by a detector plus ``segment``; these stages are unused.
    def preprocess(self, images: Any, query: Query[P]) -> dict[str, Any]:
        """Not used: promptable segmenters take boxes or clicks through ``segment``."""
        raise TypeError(f"{self.name} segments from boxes or clicks; use segment(), not text prompts")

    def _forward(self, batch: Any) -> Any:
        raise TypeError(f"{self.name} segments from boxes or clicks; use segment()")

    def postprocess(self, raw: Any, images: Any, query: Query[P]) -> list[sv.Detections]:
        """Not used (see ``preprocess``)."""
        raise TypeError(f"{self.name} segments from boxes or clicks; use segment()")
