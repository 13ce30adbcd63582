"""Kosmos-2 (``Kosmos2ForConditionalGeneration``): boxes of the phrases it grounds, matched to the prompts.

load -> preprocess -> _forward -> postprocess. Two ways to ask (``mode``):

- ``"describe"`` (default): one grounded description per image (``<grounding>An image of``); every phrase it
  grounds that names a prompt (``generative.match_prompt``) becomes a box. One generation per image.
- ``"per_prompt"``: one referring-expression generation per prompt (``<grounding><phrase> cat</phrase>``); the
  model answers where that phrase is. One generation per (image, prompt), batched per prompt.

Entities and their normalised boxes come from the processor's own ``post_process_generation``; a box is a
fraction of what the model saw (the processor's resize and, if any, center crop: ``generative.input_frame``),
mapped back to the original image's pixels. A box's score is the mean probability of the generated tokens of its
phrase and its two patch-index tokens (in ``per_prompt`` mode the phrase is the prompt, so only the box's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, Query, Task
from model_adapters.generative import (
    Generation,
    GroundingParams,
    answer_regions,
    detections_from_regions,
    generate,
    input_frame,
    span_score,
    token_spans,
)
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["Kosmos2", "Kosmos2Params"]

DESCRIBE_PROMPT = "<grounding>An image of"
# The grounded-entity markup Kosmos-2 writes: an optional phrase, then one or more patch-index pairs.
_PAIR = r"<patch_index_\d+><patch_index_\d+>"
_ENTITY = re.compile(
    rf"(?:<phrase>[^<]+</phrase>)?<object>((?:{_PAIR}</delimiter_of_multi_objects/>)*{_PAIR})</object>"
)


@dataclass(frozen=True)
class Kosmos2Params(GroundingParams):
    """Per-request knobs (plus ``score_threshold`` and ``max_new_tokens``).

    Attributes:
        mode: ``"describe"`` (one grounded description per image) or ``"per_prompt"`` (ground each prompt).
    """

    mode: Literal["describe", "per_prompt"] = "describe"


@register_adapter
class Kosmos2(Adapter[Kosmos2Params]):
    """Kosmos-2 grounded generation as an open-vocabulary detector."""

    name = "kosmos2"
    task = Task.DETECTION
    variants: Mapping[str, str] = {"patch14_224": "microsoft/kosmos-2-patch14-224"}
    default_variant = "patch14_224"
    Params = Kosmos2Params
    max_batch_size = 8

    def load(self) -> None:
        """Load processor and model."""
        self.processor, self.model = load_transformers_model(self, "Kosmos2ForConditionalGeneration", ("kosmos-2",))
        self.eos = [self.processor.tokenizer.eos_token_id]

    def _prompts(self, query: Query[Kosmos2Params]) -> list[str]:
        if query.params.mode == "describe":
            return [DESCRIBE_PROMPT]
        return [f"<grounding><phrase> {prompt}</phrase>" for prompt in query.prompts]

    def preprocess(self, images: Sequence[np.ndarray], query: Query[Kosmos2Params]) -> dict[str, Any]:
        """Pixels once; one tokenised prompt per generation (all images share a prompt, so none is padded)."""
        texts = []
        for prompt in self._prompts(query):
            encoded = self.processor(
                images=list(images), text=[prompt] * len(images), return_tensors="pt", input_data_format=CHANNELS_LAST
            )
            pixels = encoded.pop("pixel_values")
            texts.append(dict(encoded))
        return {"pixel_values": pixels, "texts": texts, "max_new_tokens": query.params.max_new_tokens}

    def _forward(self, batch: Mapping[str, Any]) -> list[list[Generation]]:
        return [
            generate(
                self.model,
                {"pixel_values": batch["pixel_values"], **text},
                max_new_tokens=batch["max_new_tokens"],
                eos_token_ids=self.eos,
            )
            for text in batch["texts"]
        ]

    def postprocess(
        self, raw: list[list[Generation]], images: Sequence[np.ndarray], query: Query[Kosmos2Params]
    ) -> list[sv.Detections]:
        """Entities per generation (the processor's parser), boxes to pixels, scores from the tokens."""
        out = []
        for b, image in enumerate(images):
            regions = []
            for answers in raw:
                regions += answer_regions(self.name, b, self.regions, answers[b], image)
            out.append(
                detections_from_regions(
                    regions, query.prompts, image, threshold=query.params.score_threshold, owner=self.name
                )
            )
        return out

    def regions(self, answer: Generation, image: np.ndarray) -> list[tuple[str, tuple[float, ...], float]]:
        """``(phrase, xyxy in pixels, score)`` for each box of one generation."""
        tokenizer = self.processor.tokenizer
        text, spans = token_spans(
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True), answer.ids, prefix=answer.prompt
        )
        _, entities = self.processor.post_process_generation(text)
        caption_start = len(text) - len(text.split(self.processor.eoi_token)[-1])
        # The parser lists a phrase's boxes together and a phrase-less object's boxes one entity each.
        ranges = []
        for match in _ENTITY.finditer(text, caption_start):
            phrase = (match.start(), match.start(1))
            pairs = re.finditer(_PAIR, text[match.start(1) : match.end(1)])
            boxes = [(match.start(1) + m.start(), match.start(1) + m.end()) for m in pairs]
            if text.startswith("<phrase>", match.start()):
                ranges.append([[phrase, box] for box in boxes])
            else:
                ranges += [[[box]] for box in boxes]
        if len(ranges) != len(entities):
            raise ValueError(f"{len(entities)} entities but {len(ranges)} grounded spans")
        height, width = image.shape[:2]
        x0, y0, x1, y1 = input_frame(self.processor.image_processor, width, height)
        scale = np.asarray([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        out = []
        for (name, _, boxes), box_ranges in zip(entities, ranges, strict=True):
            for box, where in zip(boxes, box_ranges, strict=True):
                pixels = np.asarray(box) * scale + [x0, y0, x0, y0]
                out.append((name, tuple(pixels.tolist()), span_score(spans, answer.probs, where)))
        return out
