"""Fake adapters with exact, known answers, registered for server-level tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, Query, Task
from model_adapters.classification import ClassifierParams, classification_detections
from model_adapters.registry import register_adapter
from model_adapters.segmentation import MaskPrompt, PromptableSegmenter, masks_to_detections

SLOW_LOAD_S = 1.5


@dataclass(frozen=True)
class FakeParams:
    score_threshold: float = 0.0


class _Stages:
    """No-op stages: fakes answer in ``__call__``."""

    def preprocess(self, images: Sequence[np.ndarray], query: Query) -> dict[str, Any]:
        return {}

    def _forward(self, batch: Any) -> Any:
        return None


@register_adapter
class SlowFakeDetector(_Stages, Adapter[FakeParams]):
    """One box per prompt over the central 80% of the image, scores 0.9 down to 0.5.

    Loading an id containing "slow" takes SLOW_LOAD_S (to prove /setup does not wait); "fake/broken" fails.
    """

    name = "slow_fake"
    task = Task.DETECTION
    variants = {"default": "fake/fast"}
    default_variant = "default"
    Params = FakeParams
    loads: dict[str, int] = {}
    calls: list[int] = []

    def load(self) -> None:
        if self.spec.model_id == "fake/broken":
            raise OSError("no such model")
        if "slow" in self.spec.model_id:
            time.sleep(SLOW_LOAD_S)
        self.loads[self.spec.model_id] = self.loads.get(self.spec.model_id, 0) + 1

    def __call__(self, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        self.calls.append(len(images))
        return self.postprocess(None, images, query)

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            n = len(query.prompts)
            out.append(
                sv.Detections(
                    xyxy=np.tile([0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h], (n, 1)).astype(np.float32),
                    confidence=np.linspace(0.9, 0.5, n).astype(np.float32),
                    class_id=np.arange(n),
                )
            )
        return out


@register_adapter
class FakeSegmenter(PromptableSegmenter[FakeParams]):
    """Masks that fill each box; for clicks, a 5-px disc around each positive click minus negative ones."""

    name = "fake_segmenter"
    variants = {"default": "fake/segmenter"}
    default_variant = "default"
    Params = FakeParams
    embeds = 0

    def load(self) -> None:
        """Nothing to load."""

    def embed_image(self, image: np.ndarray) -> Any:
        type(self).embeds += 1
        return {"shape": image.shape[:2]}

    def decode(
        self, embedding: Any, image: np.ndarray, prompt: MaskPrompt, params: FakeParams | None = None
    ) -> sv.Detections:
        h, w = embedding["shape"]
        yy, xx = np.mgrid[:h, :w]
        masks = []
        for x1, y1, x2, y2 in prompt.boxes if not prompt.clicks else ():
            masks.append((xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2))
        if prompt.clicks:
            mask = np.zeros((h, w), dtype=bool)
            for click in prompt.clicks:
                disc = (xx - click.x) ** 2 + (yy - click.y) ** 2 <= 25
                mask = mask | disc if click.positive else mask & ~disc
            masks.append(mask)
        return masks_to_detections(np.asarray(masks), np.full(len(masks), 0.8))


@register_adapter
class FakeClassifier(_Stages, Adapter[ClassifierParams]):
    """Softmax over prompts with the first prompt at 0.7 and the rest sharing 0.3."""

    name = "fake_classifier"
    task = Task.CLASSIFICATION
    variants = {"default": "fake/classifier"}
    default_variant = "default"
    Params = ClassifierParams

    def load(self) -> None:
        """Nothing to load."""

    def __call__(self, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        return self.postprocess(None, images, query)

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        n = len(query.prompts)
        probs = np.r_[0.7, np.full(n - 1, 0.3 / max(n - 1, 1))] if n > 1 else np.ones(1)
        return [classification_detections(probs, image, query.prompts, "softmax") for image in images]
