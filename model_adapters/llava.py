"""LLaVA-1.5 (``LlavaForConditionalGeneration``): boxes it writes as text, and choices scored by their tokens.

load -> preprocess -> _forward -> postprocess. The server sets ``task`` from the control:

- ``"detection"``: the model is asked for boxes in LLaVA-1.5's own format, ``[x1, y1, x2, y2]`` as fractions of
  the image it sees. ``mode="list"`` (default) asks once per image for every label, one ``name: [x1, y1, x2, y2]``
  line per object; ``mode="per_prompt"`` asks LLaVA-1.5's referring question ("Please provide the bounding box
  coordinate of the region this sentence describes: cat.") once per label, so every label gets its box. A box's
  score is the mean probability of the generated tokens of its phrase and its coordinates.
- ``"classification"``: no generation. For each label, one forward pass over "question + label + end of answer"
  gives the probability of the model answering exactly that label; renormalised over the labels (softmax).

LLaVA-1.5 was trained on images padded to a square (the image mean as background, the image centred) and its
coordinates are fractions of that square. The llava-hf checkpoints' processor does not pad: it resizes the short
side and center-crops, which would hide the sides of a wide image from the model. So (``pad_to_square``, default
on) the adapter pads exactly as transformers' ``LlavaImageProcessor(do_pad=True)`` does before the processor
runs; a square then passes its resize and crop whole, and a box maps back through the square's offset.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, Query, Task
from model_adapters.classification import classification_detections
from model_adapters.generative import (
    Generation,
    GroundingParams,
    detections_from_regions,
    generate,
    input_frame,
    span_score,
    token_spans,
)
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["Llava", "LlavaParams", "square_offset"]

logger = logging.getLogger(__name__)

LIST_QUESTION = (
    "Find every {names} in the image. Answer with one line per object, as name: [x1, y1, x2, y2], with "
    "coordinates between 0 and 1 as fractions of the image width and height."
)
PROMPT_QUESTION = "Please provide the bounding box coordinate of the region this sentence describes: {}."
CHOICE_QUESTION = "Which of these best describes the image: {names}? Answer with one of them."
_NUMBER = r"\s*(\d*\.?\d+)\s*"
# A box, and the phrase before it on its line (list mode): "cat: [0.1, 0.2, 0.3, 0.4]".
_BOX = re.compile(rf"(?P<phrase>[^\n\[\]]*?)(?P<box>\[{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\])")
_PHRASE_EDGES = " \t-*:,;.0123456789)"


@dataclass(frozen=True)
class LlavaParams(GroundingParams):
    """Per-request knobs (plus ``score_threshold`` and ``max_new_tokens``).

    Attributes:
        mode: Detection only: ``"list"`` (one question per image for all labels) or ``"per_prompt"`` (LLaVA-1.5's
            referring question, once per label).
        pad_to_square: Show the model the whole image padded to a square, as LLaVA-1.5 was trained; ``False``
            leaves the processor's resize and center crop (objects outside the crop cannot be found).
        task: Set by the server from the control: ``"detection"`` or ``"classification"``.
    """

    mode: Literal["list", "per_prompt"] = "list"
    pad_to_square: bool = True
    task: Literal["detection", "classification"] = "detection"


def square_offset(width: int, height: int) -> tuple[int, int]:
    """Where a ``width`` x ``height`` image sits in its padded square: ``(left, top)``.

    An odd remainder goes right/bottom, as in transformers' ``LlavaImageProcessor.pad_to_square``.
    """
    side = max(width, height)
    return (side - width) // 2, (side - height) // 2


def _names(prompts: Sequence[str]) -> str:
    names = [str(p) for p in prompts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


@register_adapter
class Llava(Adapter[LlavaParams]):
    """LLaVA-1.5 7B/13B as a detector (boxes in its answers) and a classifier (label token probabilities)."""

    name = "llava"
    task = Task.DETECTION
    other_tasks = frozenset({Task.CLASSIFICATION})
    variants: Mapping[str, str] = {"7b": "llava-hf/llava-1.5-7b-hf", "13b": "llava-hf/llava-1.5-13b-hf"}
    default_variant = "7b"
    Params = LlavaParams
    max_batch_size = 4

    def load(self) -> None:
        """Load processor and model."""
        self.processor, self.model = load_transformers_model(self, "LlavaForConditionalGeneration", ("llava",))
        self.eos = [self.processor.tokenizer.eos_token_id]

    def chat(self, question: str) -> str:
        """The question in the checkpoint's chat template (else LLaVA-1.5's ``USER: <image> ... ASSISTANT:``)."""
        if self.processor.chat_template is None:
            return f"USER: <image>\n{question} ASSISTANT:"
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(turn, add_generation_prompt=True)

    def square(self, image: np.ndarray) -> np.ndarray:
        """The image centred on a square of the processor's mean colour (``LlavaImageProcessor``'s padding)."""
        height, width = image.shape[:2]
        side = max(width, height)
        if side == width == height:
            return image
        mean = self.processor.image_processor.image_mean
        out = np.empty((side, side, 3), dtype=np.uint8)
        out[...] = [int(x * 255) for x in mean]
        left, top = square_offset(width, height)
        out[top : top + height, left : left + width] = image
        return out

    def frame(self, width: int, height: int, pad: bool) -> tuple[float, float, float, float]:
        """The region of a ``width`` x ``height`` image that the model's coordinates 0..1 span, in its pixels."""
        if not pad:
            return input_frame(self.processor.image_processor, width, height)
        side = max(width, height)
        left, top = square_offset(width, height)
        x0, y0, x1, y1 = input_frame(self.processor.image_processor, side, side)
        return x0 - left, y0 - top, x1 - left, y1 - top

    def _encode(self, images: Sequence[np.ndarray], text: str) -> dict[str, Any]:
        return dict(
            self.processor(
                images=list(images), text=[text] * len(images), return_tensors="pt", input_data_format=CHANNELS_LAST
            )
        )

    def preprocess(self, images: Sequence[np.ndarray], query: Query[LlavaParams]) -> dict[str, Any]:
        """One encoded text per generation (or per label to score); all images share it, so none is padded."""
        import torch

        shown = [self.square(image) for image in images] if query.params.pad_to_square else list(images)
        if not query.prompts:
            return {"texts": [], "max_new_tokens": 0}
        if query.params.task == "classification":
            question = self.chat(CHOICE_QUESTION.format(names=_names(query.prompts)))
            asked = self._encode(shown, question)["input_ids"][0].tolist()
            texts, starts = [], []
            for prompt in query.prompts:
                encoded = self._encode(shown, f"{question} {prompt}")
                eos = torch.full((len(images), 1), self.eos[0], dtype=encoded["input_ids"].dtype)
                encoded["input_ids"] = torch.cat([encoded["input_ids"], eos], dim=1)
                encoded["attention_mask"] = torch.cat([encoded["attention_mask"], torch.ones_like(eos)], dim=1)
                ids = encoded["input_ids"][0].tolist()
                starts.append(next((k for k, (a, b) in enumerate(zip(asked, ids, strict=False)) if a != b), len(asked)))
                texts.append(encoded)
            return {"texts": texts, "starts": starts}
        if query.params.mode == "list":
            questions = [LIST_QUESTION.format(names=_names(query.prompts))]
        else:
            questions = [PROMPT_QUESTION.format(prompt) for prompt in query.prompts]
        texts = [self._encode(shown, self.chat(q)) for q in questions]
        return {"texts": texts, "max_new_tokens": query.params.max_new_tokens}

    def _forward(self, batch: Mapping[str, Any]) -> Any:
        if "starts" not in batch:
            return [
                generate(
                    self.model,
                    text,
                    max_new_tokens=batch["max_new_tokens"],
                    eos_token_ids=self.eos,
                    suppress_token_ids=[self.model.config.image_token_id],  # a placeholder, never an answer
                )
                for text in batch["texts"]
            ]
        scores = []
        for text, start in zip(batch["texts"], batch["starts"], strict=True):
            keep = text["input_ids"].shape[1] - start + 1  # only the positions that predict the answer
            logits = self.model(**text, logits_to_keep=keep).logits[:, :-1].float()
            answer = text["input_ids"][:, start:, None]
            scores.append(logits.log_softmax(-1).gather(-1, answer)[..., 0].sum(-1))
        return {"log_probs": scores}

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query[LlavaParams]) -> list[sv.Detections]:
        """Choices: label probabilities renormalised; boxes: parsed per generation, mapped back, scored."""
        if query.params.task == "classification":
            if not query.prompts:
                return [classification_detections(np.zeros(0), image, (), "softmax") for image in images]
            log_probs = np.stack([lp.numpy() for lp in raw["log_probs"]], axis=1).astype(np.float64)  # (B, P)
            probs = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            return [
                classification_detections(p, image, query.prompts, "softmax")
                for p, image in zip(probs, images, strict=True)
            ]
        out = []
        for b, image in enumerate(images):
            regions = []
            for k, answers in enumerate(raw):
                prompt = query.prompts[k] if query.params.mode == "per_prompt" else None
                regions += self.regions(answers[b], image, prompt, pad=query.params.pad_to_square)
            out.append(
                detections_from_regions(
                    regions, query.prompts, image, threshold=query.params.score_threshold, owner=self.name
                )
            )
        return out

    def regions(
        self, answer: Generation, image: np.ndarray, prompt: str | None, *, pad: bool
    ) -> list[tuple[str, tuple[float, ...], float]]:
        """``(phrase, xyxy in pixels, score)`` for each box written in one answer.

        Args:
            answer: One generation.
            image: The original image.
            prompt: The label asked about (``per_prompt``: every box is its, and only the box's tokens count);
                ``None``: each box is named by the text before it on its line (or the line's previous box's name).
            pad: Whether the model saw the image padded to a square.
        """
        tokenizer = self.processor.tokenizer
        text, spans = token_spans(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), answer.ids)
        height, width = image.shape[:2]
        x0, y0, x1, y1 = self.frame(width, height, pad)
        scale = np.asarray([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        out, named, line = [], None, -1
        for match in _BOX.finditer(text):
            values = np.asarray([float(v) for v in match.groups()[2:]])
            start, end = match.span("phrase")
            stripped = match.group("phrase").strip(_PHRASE_EDGES)
            if stripped:
                start = text.index(stripped, start, end)
                named = (stripped, (start, start + len(stripped)))
            elif text.count("\n", 0, start) != line:
                named = None  # a box alone on a new line names nothing
            line = text.count("\n", 0, start)
            if (values > 1).any():
                logger.debug("llava: box %s is not in fractions of the image; dropped", match.group("box"))
                continue
            if prompt is not None:
                phrase, ranges = prompt, [match.span("box")]
            elif named is not None:
                phrase, ranges = named[0], [named[1], match.span("box")]
            else:
                logger.debug("llava: box %s names nothing; dropped", match.group("box"))
                continue
            pixels = values * scale + [x0, y0, x0, y0]
            out.append((phrase, tuple(pixels.tolist()), span_score(spans, answer.probs, ranges)))
        if not out and text.strip():
            logger.debug("llava: no box read in the answer %r", text[:200])
        return out
