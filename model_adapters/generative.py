"""What the generative grounding adapters (Kosmos-2, Florence-2, LLaVA) share.

These models answer in text with boxes inside it. What enters: a model, its generate inputs and the prompts of a
query; what leaves: for each image the generated tokens with the probability the model gave each one, the
character span of every token in the decoded text, and phrase -> prompt matches. Each adapter parses its own
text format (through its processor's post-processing where the library has one) and scores a region with
``span_score``: the **mean** probability of the generated tokens that spell the region (its phrase and its box).
The mean, not the minimum: one hesitant coordinate digit should lower a box's score, not decide it.

Generation is greedy (deterministic) and bounded by ``max_new_tokens``; probabilities come from the model's raw
logits (softmax), so they do not depend on logits processors.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD

__all__ = [
    "Generation",
    "GroundingParams",
    "answer_regions",
    "detections_from_regions",
    "generate",
    "input_frame",
    "match_prompt",
    "normalise_phrase",
    "span_score",
    "token_spans",
]

logger = logging.getLogger(__name__)

_ARTICLES = frozenset({"a", "an", "the", "some"})


@dataclass(frozen=True)
class GroundingParams:
    """Per-request knobs of generative grounding models.

    Attributes:
        score_threshold: Keep a region whose score (mean probability of its generated tokens) exceeds this.
        max_new_tokens: Most tokens generated per image (and prompt); longer answers are cut there.
    """

    score_threshold: float = 0.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Generation:
    """One generated answer.

    Attributes:
        prompt: The input token ids (decoder-only models; an encoder-decoder's decoder start), padding included.
        ids: Generated token ids, up to and including the first end-of-sequence token.
        probs: ``(len(ids),)`` the model's probability of each generated token (softmax of its raw logits).
    """

    prompt: list[int]
    ids: list[int]
    probs: np.ndarray


def generate(
    model: Any,
    inputs: Mapping[str, Any],
    *,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    suppress_token_ids: Sequence[int] = (),
) -> list[Generation]:
    """Greedy ``model.generate`` on a batch; each row's new tokens with their probabilities.

    Args:
        model: A transformers model with ``generate``.
        inputs: Its inputs (already on the model's device).
        max_new_tokens: Upper bound of new tokens per row.
        eos_token_ids: Tokens that end an answer; what follows them (padding) is dropped.
        suppress_token_ids: Tokens never generated (an image placeholder); their probabilities stay the model's.
    """
    import torch

    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        output_logits=True,
        return_dict_in_generate=True,
        suppress_tokens=list(suppress_token_ids) or None,
    )
    steps = len(out.logits)
    sequences = out.sequences.cpu()
    width = sequences.shape[1] - steps
    new = sequences[:, width:]
    if steps:
        logits = torch.stack(out.logits, dim=1).float().cpu()
        probs = logits.log_softmax(-1).gather(-1, new[..., None])[..., 0].exp().numpy()
    else:
        probs = np.zeros(new.shape, dtype=np.float32)
    answers = []
    eos = set(eos_token_ids)
    for prompt, row, row_probs in zip(sequences[:, :width].tolist(), new.tolist(), probs, strict=True):
        end = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
        answers.append(Generation(prompt, row[:end], np.asarray(row_probs[:end], dtype=np.float64)))
    return answers


def token_spans(
    decode: Callable[[list[int]], str], ids: Sequence[int], prefix: Sequence[int] = ()
) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``prefix + ids`` and each of ``ids``' tokens' ``(start, end)`` characters in it.

    Decodes every prefix, so a token's span is what it adds to the text; tokenizers that merge spaces or bytes
    across tokens still give spans that tile the text. Quadratic in the length, fine for a few hundred tokens.
    """
    text = decode(list(prefix))
    spans, previous = [], len(text)
    for k in range(len(ids)):
        text = decode([*prefix, *ids[: k + 1]])
        spans.append((previous, max(previous, len(text))))
        previous = max(previous, len(text))
    return text, spans


def span_score(spans: Sequence[tuple[int, int]], probs: np.ndarray, ranges: Sequence[tuple[int, int]]) -> float:
    """Mean probability of the tokens whose characters overlap any of ``ranges`` (NaN when none does).

    Args:
        spans: Character span of each generated token.
        probs: Probability of each generated token.
        ranges: ``(start, end)`` character ranges of a region's phrase and box in the same text.
    """
    hits = [
        p
        for (start, end), p in zip(spans, probs, strict=True)
        if end > start and any(start < r_end and end > r_start for r_start, r_end in ranges)
    ]
    return float(np.mean(hits)) if hits else math.nan


def input_frame(image_processor: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """The part of a ``width`` x ``height`` image a CLIP-style processor shows the model, in its pixels.

    Such a processor resizes (to ``height``/``width``, or its shorter side to ``shortest_edge``) and may then
    center-crop; a model's normalised coordinates are fractions of what is left. Without a crop that is the whole
    image; with one, the crop's window mapped back through the resize.
    """
    from transformers.image_transforms import get_resize_output_image_size

    size = image_processor.size
    crop = getattr(image_processor, "crop_size", None)
    if not getattr(image_processor, "do_center_crop", False) or crop is None:
        return 0.0, 0.0, float(width), float(height)
    if getattr(size, "shortest_edge", None):
        resized_h, resized_w = get_resize_output_image_size(
            np.broadcast_to(np.uint8(0), (height, width, 1)),
            size=size.shortest_edge,
            default_to_square=False,
            input_data_format="channels_last",
        )
    else:
        resized_h, resized_w = size.height, size.width
    top, left = int((resized_h - crop.height) / 2.0), int((resized_w - crop.width) / 2.0)
    sx, sy = width / resized_w, height / resized_h
    return left * sx, top * sy, (left + crop.width) * sx, (top + crop.height) * sy


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise_phrase(text: str) -> tuple[str, ...]:
    """Words of a phrase without case, punctuation, a leading article, or plural ``s``/``es``/``ies``."""
    words = re.sub(r"[^\w]+", " ", text.lower()).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return tuple(_singular(w) for w in words)


def match_prompt(phrase: str, prompts: Sequence[str]) -> int | None:
    """The prompt a generated phrase names, or ``None``.

    In order: the exact text; the same words once normalised (``normalise_phrase``: "Cats." is "cat"); then the
    phrase's head, the prompt whose normalised words end the phrase ("a red car" is "car"; the longest such
    prompt wins). Prompts are the labels' prompts (the label, its ``predicted_values`` or ``prompts``), so a
    phrase naming any of them is that label; a phrase naming none is dropped.
    """
    texts = [p for p in prompts]
    if phrase in texts:
        return texts.index(phrase)
    words = normalise_phrase(phrase)
    if not words:
        return None
    normalised = [normalise_phrase(p) for p in texts]
    if words in normalised:
        return normalised.index(words)
    ends = [(len(n), -i) for i, n in enumerate(normalised) if n and words[-len(n) :] == n]
    return -max(ends)[1] if ends else None


def answer_regions(
    owner: str, image_index: int, read: Callable[..., list[tuple[str, tuple[float, ...], float]]], *args: Any
) -> list[tuple[str, tuple[float, ...], float]]:
    """``read(*args)``: one answer's regions; none, with a warning, when its markup cannot be read (the batch goes on)."""
    try:
        return read(*args)
    except (ValueError, IndexError) as exc:
        logger.warning("%s: unreadable answer for image %d of its batch (%s); no regions", owner, image_index, exc)
        return []


def detections_from_regions(
    regions: Sequence[tuple[str, tuple[float, float, float, float], float]],
    prompts: Sequence[str],
    image: np.ndarray,
    *,
    threshold: float,
    owner: str,
) -> sv.Detections:
    """Regions ``(phrase, xyxy in pixels, score)`` -> ``Detections`` over the prompts.

    Phrases that name no prompt are dropped (debug log), boxes are clipped to the image, and regions scoring
    at or below ``threshold`` (or without a score) are dropped.
    """
    height, width = image.shape[:2]
    boxes, scores, ids = [], [], []
    for phrase, box, score in regions:
        index = match_prompt(phrase, prompts)
        if index is None:
            logger.debug("%s: phrase %r names no prompt of %s; dropped", owner, phrase, list(prompts))
            continue
        x1, y1, x2, y2 = np.clip(np.asarray(box, dtype=np.float64), 0, [width, height, width, height])
        if not (score > threshold) or x2 <= x1 or y2 <= y1:
            continue
        boxes.append((x1, y1, x2, y2))
        scores.append(score)
        ids.append(index)
    class_id = np.asarray(ids, dtype=int)
    return sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(scores, dtype=np.float32),
        class_id=class_id,
        data={CLASS_NAME_DATA_FIELD: np.asarray([prompts[i] for i in class_id], dtype=object)},
    )
