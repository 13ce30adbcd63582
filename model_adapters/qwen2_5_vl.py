"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): boxes from its grounding JSON, matched to the prompts.

load -> preprocess -> _forward -> postprocess. One question per image names every prompt ("Locate every cat, dog
or person in the image, and output their bbox coordinates in JSON format."); Qwen2.5-VL answers a JSON list of
``{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}`` objects, in **absolute pixels of its resized input** (its
processor resizes each image to multiples of 28 px within a pixel budget, keeping the aspect ratio). Each object is
read on its own, so a cut-off answer keeps its complete objects; the resized size comes from the processor's own
``image_grid_thw``, and boxes are scaled back to the original image. A box's score is the mean probability of the
generated tokens of its label and its coordinates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, Query, Task
from model_adapters.generative import (
    Generation,
    GroundingParams,
    detections_from_regions,
    generate,
    span_score,
    token_spans,
)
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["Qwen25VL", "Qwen25VLParams"]

logger = logging.getLogger(__name__)

QUESTION = "Locate every {names} in the image, and output their bbox coordinates in JSON format."
_OBJECT = re.compile(r"\{[^{}]*\}")
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BBOX = re.compile(rf'"bbox_2d"\s*:\s*(\[{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\])')
_LABEL = re.compile(r'"label"\s*:\s*"([^"]*)"')


@dataclass(frozen=True)
class Qwen25VLParams(GroundingParams):
    """Per-request knobs: ``score_threshold`` and ``max_new_tokens``."""


def _names(prompts: Sequence[str]) -> str:
    names = [str(p) for p in prompts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


@register_adapter
class Qwen25VL(Adapter[Qwen25VLParams]):
    """Qwen2.5-VL grounding (JSON boxes) as an open-vocabulary detector."""

    name = "qwen2_5_vl"
    task = Task.DETECTION
    variants: Mapping[str, str] = {
        "3b": "Qwen/Qwen2.5-VL-3B-Instruct",
        "7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "32b": "Qwen/Qwen2.5-VL-32B-Instruct",
        "72b": "Qwen/Qwen2.5-VL-72B-Instruct",
    }
    default_variant = "3b"
    Params = Qwen25VLParams
    max_batch_size = 4

    def load(self) -> None:
        """Load processor and model."""
        self.processor, self.model = load_transformers_model(
            self, "Qwen2_5_VLForConditionalGeneration", ("qwen2_5_vl",)
        )
        self.eos = sorted({self.processor.tokenizer.eos_token_id, *self._config_eos()})
        # Its ``size`` holds pixel counts (min/max_pixels), not side lengths: images are decoded at full size.
        self.resize_rule = None

    def _config_eos(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    def batch_key(self, image_shape: tuple[int, ...]) -> Hashable:
        """The size the processor resizes to: images of one size have equally long inputs, so none is padded."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        ip = self.processor.image_processor
        try:
            return smart_resize(
                image_shape[0],
                image_shape[1],
                factor=ip.patch_size * ip.merge_size,
                min_pixels=ip.size.shortest_edge,
                max_pixels=ip.size.longest_edge,
            )
        except ValueError:  # an aspect ratio the processor refuses: alone, so only this image fails
            return tuple(image_shape)

    def preprocess(self, images: Sequence[np.ndarray], query: Query[Qwen25VLParams]) -> dict[str, Any]:
        """One chat question per image, naming every prompt; the processor resizes and tokenises."""
        if not query.prompts:
            return {"inputs": None, "max_new_tokens": 0}
        turn = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": QUESTION.format(names=_names(query.prompts))}],
            }
        ]
        text = self.processor.apply_chat_template(turn, add_generation_prompt=True)
        inputs = self.processor(
            images=list(images), text=[text] * len(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )
        return {"inputs": dict(inputs), "max_new_tokens": query.params.max_new_tokens}

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if batch["inputs"] is None:
            return {"answers": [], "grid": None}
        answers = generate(
            self.model,
            batch["inputs"],
            max_new_tokens=batch["max_new_tokens"],
            eos_token_ids=self.eos,
            suppress_token_ids=[self.model.config.image_token_id, self.model.config.video_token_id],
        )
        return {"answers": answers, "grid": batch["inputs"]["image_grid_thw"]}

    def postprocess(
        self, raw: Mapping[str, Any], images: Sequence[np.ndarray], query: Query[Qwen25VLParams]
    ) -> list[sv.Detections]:
        """Objects per answer, boxes from the resized input's pixels to the original's, phrases to prompts."""
        out = []
        for b, image in enumerate(images):
            regions = []
            if raw["answers"]:
                _, grid_h, grid_w = (int(v) for v in raw["grid"][b])
                patch = self.processor.image_processor.patch_size
                regions = self.regions(raw["answers"][b], image, (grid_w * patch, grid_h * patch))
            out.append(
                detections_from_regions(
                    regions, query.prompts, image, threshold=query.params.score_threshold, owner=self.name
                )
            )
        return out

    def regions(
        self, answer: Generation, image: np.ndarray, resized_wh: tuple[int, int]
    ) -> list[tuple[str, tuple[float, ...], float]]:
        """``(label, xyxy in pixels, score)`` for each complete ``{"bbox_2d": ..., "label": ...}`` of one answer."""
        tokenizer = self.processor.tokenizer
        text, spans = token_spans(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), answer.ids)
        height, width = image.shape[:2]
        scale = np.asarray([width / resized_wh[0], height / resized_wh[1]] * 2)
        out = []
        for found in _OBJECT.finditer(text):
            box, label = _BBOX.search(text, *found.span()), _LABEL.search(text, *found.span())
            if box is None or label is None:
                logger.debug("qwen2_5_vl: object %r has no bbox_2d or label; dropped", found.group(0)[:100])
                continue
            pixels = np.asarray([float(v) for v in box.groups()[1:]]) * scale
            score = span_score(spans, answer.probs, [label.span(1), box.span(1)])
            out.append((label.group(1), tuple(pixels.tolist()), score))
        if not out and text.strip():
            logger.debug("qwen2_5_vl: no box read in the answer %r", text[:200])
        return out
