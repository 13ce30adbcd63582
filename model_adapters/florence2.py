"""Florence-2 (transformers-native ``Florence2ForConditionalGeneration``): boxes from its task prompts.

load -> preprocess -> _forward -> postprocess. ``task`` picks the question:

- ``"phrase_grounding"`` (default): ``<CAPTION_TO_PHRASE_GROUNDING>`` with the prompts as one caption
  ("cat. dog."); one generation per image answers every label.
- ``"open_vocabulary"``: ``<OPEN_VOCABULARY_DETECTION>`` per prompt ("Locate cat in the image."); one generation
  per (image, prompt), batched per prompt.
- ``"od"``: ``<OD>``, the model's own categories; those that name a prompt are kept.

``Florence2Segmentation`` (``florence2_seg``, for PolygonLabels and BrushLabels) asks
``<REFERRING_EXPRESSION_SEGMENTATION>`` per prompt ("Locate cat in the image with mask"): each answer is an
object's outline(s) as location tokens, parsed by the same post-processing and filled into a mask of the image.

Boxes come from the processor's own ``post_process_generation``, in the original image's pixels (Florence-2 sees
the image stretched to a square, so its location bins are fractions of the whole image). The answer is parsed
one phrase at a time (each ``phrase<loc_x1><loc_y1><loc_x2><loc_y2>...`` run), so each box knows its tokens: its
score is the mean probability of its phrase's and its four location tokens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import supervision as sv
from PIL import Image, ImageDraw

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, Query, Task
from model_adapters.generative import (
    Generation,
    GroundingParams,
    answer_regions,
    detections_from_regions,
    generate,
    span_score,
)
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["Florence2", "Florence2Params", "Florence2SegParams", "Florence2Segmentation"]

logger = logging.getLogger(__name__)

TASK_TOKENS = {
    "phrase_grounding": "<CAPTION_TO_PHRASE_GROUNDING>",
    "open_vocabulary": "<OPEN_VOCABULARY_DETECTION>",
    "od": "<OD>",
}
SEGMENTATION_TOKEN = "<REFERRING_EXPRESSION_SEGMENTATION>"
# A phrase and the location tokens after it: the runs Florence-2's box parsers read, one instance each.
_RUN = re.compile(r"[^<]+(?:<loc_\d+>){4,}")
_BOX = re.compile(r"(?:<loc_\d+>){4}")
_DROPPED = ("<s>", "</s>", "<pad>")  # the parsers delete these before parsing; they never carry a box
# An outline run as the polygon parser reads it (at least four location or polygon markup tokens), and one
# ``<poly>...</poly>`` instance inside it.
_OUTLINES = re.compile(r"(?:<loc_\d+>|<sep>|<poly>|</poly>){4,}")
_POLY = re.compile(r"<poly>(.*?)</poly>")


@dataclass(frozen=True)
class Florence2Params(GroundingParams):
    """Per-request knobs (plus ``score_threshold`` and ``max_new_tokens``).

    Attributes:
        task: ``"phrase_grounding"`` (all prompts in one caption), ``"open_vocabulary"`` (one question per
            prompt) or ``"od"`` (the model's own categories, matched to the prompts).
    """

    task: Literal["phrase_grounding", "open_vocabulary", "od"] = "phrase_grounding"


@register_adapter
class Florence2(Adapter[Florence2Params]):
    """Florence-2 base/large as an open-vocabulary detector."""

    name = "florence2"
    task = Task.DETECTION
    variants: Mapping[str, str] = {"base": "microsoft/Florence-2-base", "large": "microsoft/Florence-2-large"}
    default_variant = "base"
    Params = Florence2Params
    max_batch_size = 8

    def load(self) -> None:
        """Load processor and model."""
        self.processor, self.model = load_transformers_model(self, "Florence2ForConditionalGeneration", ("florence2",))
        self.eos = [self.processor.tokenizer.eos_token_id]

    def _questions(self, query: Query[Florence2Params]) -> list[str]:
        token = TASK_TOKENS[query.params.task]
        if query.params.task == "od":
            return [token]
        if query.params.task == "phrase_grounding":
            return [token + ". ".join(p.strip().rstrip(".") for p in query.prompts) + "."]
        return [token + prompt for prompt in query.prompts]

    def preprocess(self, images: Sequence[np.ndarray], query: Query[Florence2Params]) -> dict[str, Any]:
        """One encoded question per generation; every image of the batch gets the same one, so none is padded."""
        questions = []
        for question in self._questions(query) if query.prompts else []:
            encoded = self.processor(
                images=list(images), text=[question] * len(images), return_tensors="pt", input_data_format=CHANNELS_LAST
            )
            questions.append(dict(encoded))
        return {"questions": questions, "max_new_tokens": query.params.max_new_tokens}

    def _forward(self, batch: Mapping[str, Any]) -> list[list[Generation]]:
        return [
            generate(self.model, question, max_new_tokens=batch["max_new_tokens"], eos_token_ids=self.eos)
            for question in batch["questions"]
        ]

    def postprocess(
        self, raw: list[list[Generation]], images: Sequence[np.ndarray], query: Query[Florence2Params]
    ) -> list[sv.Detections]:
        """Boxes per phrase run (the processor's parser), scored by their tokens; phrases matched to prompts."""
        out = []
        for b, image in enumerate(images):
            regions = []
            for answers in raw:
                regions += answer_regions(self.name, b, self.regions, answers[b], image, TASK_TOKENS[query.params.task])
            out.append(
                detections_from_regions(
                    regions, query.prompts, image, threshold=query.params.score_threshold, owner=self.name
                )
            )
        return out

    def regions(self, answer: Generation, image: np.ndarray, task: str) -> list[tuple[str, tuple[float, ...], float]]:
        """``(phrase, xyxy in pixels, score)`` for each box of one generation."""
        kept = [
            k
            for k, token in enumerate(answer.ids)
            if self.processor.tokenizer.convert_ids_to_tokens(token) not in _DROPPED
        ]
        text, spans = self.processor.post_processor.decode_with_spans([answer.ids[k] for k in kept])
        probs = answer.probs[kept]
        size = (image.shape[1], image.shape[0])
        out = []
        for run in _RUN.finditer(text):
            parsed = self.processor.post_process_generation(text=run.group(0), task=task, image_size=size)[task]
            boxes = parsed["bboxes"]
            names = parsed.get("labels", parsed.get("bboxes_labels", []))
            found = [(run.start() + m.start(), run.start() + m.end()) for m in _BOX.finditer(run.group(0))]
            if len(boxes) != len(found):  # a phrase the parser refuses (e.g. a banned grounding phrase)
                continue
            phrase = (run.start(), found[0][0])
            for name, box, where in zip(names, boxes, found, strict=True):
                out.append((name, tuple(float(v) for v in box), span_score(spans, probs, [phrase, where])))
        return out


@dataclass(frozen=True)
class Florence2SegParams(GroundingParams):
    """Per-request knobs: ``score_threshold`` and ``max_new_tokens`` (outlines are long: 1024 by default)."""

    max_new_tokens: int = 1024


@register_adapter
class Florence2Segmentation(Florence2):
    """Florence-2 referring-expression segmentation: one outlined object per (image, prompt)."""

    name = "florence2_seg"
    task = Task.SEGMENTATION
    Params = Florence2SegParams

    def _questions(self, query: Query[Florence2SegParams]) -> list[str]:  # type: ignore[override]
        return [SEGMENTATION_TOKEN + prompt for prompt in query.prompts]

    def postprocess(  # type: ignore[override]
        self, raw: list[list[Generation]], images: Sequence[np.ndarray], query: Query[Florence2SegParams]
    ) -> list[sv.Detections]:
        """Per prompt, its answer's outlines (the processor's parser) filled into one mask, scored by their tokens."""
        out = []
        for b, image in enumerate(images):
            height, width = image.shape[:2]
            masks, scores, ids = [], [], []
            for index, answers in enumerate(raw):
                for outline, score in self.outlines(answers[b], image):
                    mask = _filled(outline, width, height)
                    if mask.any() and score > query.params.score_threshold:
                        masks.append(mask)
                        scores.append(score)
                        ids.append(index)
            stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
            out.append(
                sv.Detections(
                    xyxy=sv.mask_to_xyxy(stacked).astype(np.float32) if masks else np.zeros((0, 4), np.float32),
                    mask=stacked,
                    confidence=np.asarray(scores, dtype=np.float32),
                    class_id=np.asarray(ids, dtype=int),
                    data={CLASS_NAME_DATA_FIELD: np.asarray([query.prompts[i] for i in ids], dtype=object)},
                )
            )
        return out

    def outlines(self, answer: Generation, image: np.ndarray) -> list[tuple[list[list[float]], float]]:
        """``(polygons in pixels as flat [x0, y0, x1, y1, ...] lists, score)`` for each object of one answer.

        An object is one ``<poly>...</poly>`` group, or a whole run of location tokens (its polygons split by
        ``<sep>``), as the processor's parser reads it; its score is the mean probability of those tokens.
        """
        kept = [
            k
            for k, token in enumerate(answer.ids)
            if self.processor.tokenizer.convert_ids_to_tokens(token) not in _DROPPED
        ]
        text, spans = self.processor.post_processor.decode_with_spans([answer.ids[k] for k in kept])
        probs = answer.probs[kept]
        size = (image.shape[1], image.shape[0])
        out = []
        for run in _OUTLINES.finditer(text):
            parsed = self.processor.post_process_generation(text=run.group(0), task=SEGMENTATION_TOKEN, image_size=size)
            objects = parsed[SEGMENTATION_TOKEN]["polygons"]
            groups = [(run.start() + m.start(1), run.start() + m.end(1)) for m in _POLY.finditer(run.group(0))]
            where = groups if "<poly>" in run.group(0) and "</poly>" in run.group(0) else [run.span()]
            if len(where) != len(objects):  # a group the parser skips (no location tokens in it)
                logger.warning("florence2_seg: %d outlines in %d groups; answer skipped", len(objects), len(where))
                continue
            for polygons, span in zip(objects, where, strict=True):
                out.append((polygons, span_score(spans, probs, [span])))
        return out


def _filled(polygons: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """Polygons (flat pixel vertex lists) as one (H, W) bool mask.

    The pixels whose centre a polygon covers, as PIL draws it; polygons of fewer than three points cover nothing.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for flat in polygons:
        points = [(float(x), float(y)) for x, y in zip(flat[0::2], flat[1::2], strict=False)]
        if len(points) >= 3:
            draw.polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)
