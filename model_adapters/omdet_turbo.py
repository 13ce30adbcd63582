"""OmDet-Turbo: fast open-vocabulary detection (transformers ``OmDetTurboForObjectDetection``).

load -> preprocess -> _forward -> postprocess. All prompts go in one pass (as class names plus a "Detect a,
b, c." task prompt); the model caches prompt embeddings itself. The zero-shot pipeline does not support this
model, so the adapter calls the processor's own post-processing, with its NMS disabled: suppression is the
server's job for every detector (class-wise, supervision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, Query, Task
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["OmDetTurbo", "OmDetTurboParams"]


@dataclass(frozen=True)
class OmDetTurboParams:
    """Per-request knobs.

    Attributes:
        score_threshold: Keep a (box, prompt) pair when its sigmoid score exceeds this.
    """

    score_threshold: float = 0.3


@register_adapter
class OmDetTurbo(Adapter[OmDetTurboParams]):
    """OmDet-Turbo through transformers."""

    name = "omdet_turbo"
    task = Task.DETECTION
    variants: Mapping[str, str] = {"swin_tiny": "omlab/omdet-turbo-swin-tiny-hf"}
    default_variant = "swin_tiny"
    Params = OmDetTurboParams
    max_batch_size = 4

    def load(self) -> None:
        """Load processor and model."""
        self.processor, self.model = load_transformers_model(self, "OmDetTurboForObjectDetection", ("omdet-turbo",))

    def preprocess(self, images: Sequence[np.ndarray], query: Query[OmDetTurboParams]) -> Mapping[str, Any]:
        """Pixels plus class and task token ids, the same prompts for every image."""
        prompts = [str(p) for p in query.prompts]
        return self.processor(
            images=list(images), text=[prompts] * len(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )

    def _forward(self, batch: Mapping[str, Any]) -> Any:
        return self.model(**batch)

    def postprocess(
        self, raw: Any, images: Sequence[np.ndarray], query: Query[OmDetTurboParams]
    ) -> list[sv.Detections]:
        """The processor's post-processing (threshold, scale, clip) without its NMS."""
        results = self.processor.post_process_grounded_object_detection(
            raw,
            threshold=query.params.score_threshold,
            nms_threshold=1.0,
            target_sizes=[image.shape[:2] for image in images],
        )
        out = []
        for result in results:
            class_id = result["labels"].numpy().astype(int)
            out.append(
                sv.Detections(
                    xyxy=result["boxes"].float().numpy(),
                    confidence=result["scores"].float().numpy(),
                    class_id=class_id,
                    data={CLASS_NAME_DATA_FIELD: np.asarray([query.prompts[i] for i in class_id], dtype=object)},
                )
            )
        return out
