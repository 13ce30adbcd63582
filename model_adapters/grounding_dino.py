"""Grounding DINO (and MM-Grounding-DINO / LLMDet checkpoints): open-vocabulary boxes from text.

load -> preprocess -> _forward -> postprocess. In ``joint`` mode every prompt of a query goes into one
caption ("car. truck. person."), so one forward pass scores all labels; captions longer than the text
encoder's limit are split into as few chunks as fit. ``per_prompt`` mode runs one pass per prompt, as the
transformers zero-shot pipeline does; it exists for parity checks and for prompts that interfere.

Scores follow the reference post-processing: a query's score is its best token probability, and the box
is assigned to the prompt whose tokens hold the highest probability. Boxes are clipped to the image (the
reference leaves them as predicted, reaching past the edge).

Padding changes the backbone's features, so an image's answer depends on the other images of its batch
unless they are all resized to one size: ``batch_key`` is that size, and the server batches only equal keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, Query, Task
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["GroundingDino", "GroundingDinoParams"]


@dataclass(frozen=True)
class GroundingDinoParams:
    """Per-request knobs.

    Attributes:
        score_threshold: Keep a box when its best token probability exceeds this ("box threshold").
        text_threshold: Keep a box only when its prompt's tokens reach this probability.
        prompt_mode: ``"joint"`` (one pass for all prompts) or ``"per_prompt"`` (one pass each).
    """

    score_threshold: float = 0.3
    text_threshold: float = 0.25
    prompt_mode: Literal["joint", "per_prompt"] = "joint"


@register_adapter
class GroundingDino(Adapter[GroundingDinoParams]):
    """Grounding DINO family through transformers' zero-shot detection classes."""

    name = "grounding_dino"
    task = Task.DETECTION
    variants: Mapping[str, str] = {
        "tiny": "IDEA-Research/grounding-dino-tiny",
        "base": "IDEA-Research/grounding-dino-base",  # Swin-B
        "mm_tiny": "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
        "mm_base": "openmmlab-community/mm_grounding_dino_base_o365v1_goldg_v3det",
        "mm_large": "openmmlab-community/mm_grounding_dino_large_all",
        "llmdet_tiny": "iSEE-Laboratory/llmdet_tiny",
        "llmdet_base": "iSEE-Laboratory/llmdet_base",
        "llmdet_large": "iSEE-Laboratory/llmdet_large",
    }
    default_variant = "tiny"
    Params = GroundingDinoParams
    max_batch_size = 4
    model_types = ("grounding-dino", "mm-grounding-dino")

    def load(self) -> None:
        """Load processor and model; the config's ``model_type`` picks the Grounding DINO class."""
        self.processor, self.model = load_transformers_model(
            self, "AutoModelForZeroShotObjectDetection", self.model_types
        )
        self.max_text_len = int(self.model.config.max_text_len)

    def batch_key(self, image_shape: tuple[int, ...]) -> Hashable:
        """The size the processor resizes an image to: images of one size are not padded, so they batch exactly."""
        from transformers.image_transforms import get_size_with_aspect_ratio

        processor = self.processor.image_processor
        size = processor.size
        if processor.do_resize and size.shortest_edge and size.longest_edge:
            return get_size_with_aspect_ratio(image_shape[:2], size.shortest_edge, size.longest_edge)
        return tuple(image_shape[:2])  # other size rules: only images of one shape surely match

    def preprocess(self, images: Sequence[np.ndarray], query: Query[GroundingDinoParams]) -> dict[str, Any]:
        """Pixels once for the batch, then token ids per caption chunk with each token's prompt index."""
        pixels = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )
        if query.params.prompt_mode == "per_prompt":
            captions = [([i], prompt) for i, prompt in enumerate(query.prompts)]
        else:
            captions = self._joint_captions(query.prompts)
        chunks = []
        for prompt_ids, caption in captions:
            text = self.processor.tokenizer(
                [caption] * len(images), return_tensors="pt", padding="longest", return_offsets_mapping=True
            )
            offsets = text.pop("offset_mapping")[0].tolist()
            chunks.append({"text": dict(text), "token_prompt": _token_prompts(caption, offsets, prompt_ids)})
        return {"pixel_values": pixels["pixel_values"], "pixel_mask": pixels["pixel_mask"], "chunks": chunks}

    def _forward(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "out": self.model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], **chunk["text"]),
                "token_prompt": chunk["token_prompt"],
            }
            for chunk in batch["chunks"]
        ]

    def postprocess(
        self, raw: list[dict[str, Any]], images: Sequence[np.ndarray], query: Query[GroundingDinoParams]
    ) -> list[sv.Detections]:
        """Threshold, assign each box to its best prompt, scale to pixels and clip to the image, merge the chunks."""
        import torch
        from transformers.image_transforms import center_to_corners_format

        params = query.params
        per_image: list[list[sv.Detections]] = [[] for _ in images]
        for chunk in raw:
            probs = chunk["out"].logits.float().sigmoid()  # (B, Q, T); padding tokens are -inf -> 0
            boxes = center_to_corners_format(chunk["out"].pred_boxes.float())  # (B, Q, 4), relative
            token_prompt = torch.as_tensor(chunk["token_prompt"])
            prompt_ids = sorted(set(chunk["token_prompt"].tolist()) - {-1})
            scores = probs.max(dim=-1).values
            span = torch.stack(
                [probs[..., : len(token_prompt)][..., token_prompt == p].amax(-1) for p in prompt_ids], -1
            )
            span_best, span_arg = span.max(dim=-1)
            keep = (scores > params.score_threshold) & (span_best > params.text_threshold)
            for b, image in enumerate(images):
                height, width = image.shape[:2]
                size = np.asarray([width, height, width, height], dtype=np.float32)
                k = keep[b]
                class_id = np.asarray(prompt_ids, dtype=int)[span_arg[b][k].numpy()]
                per_image[b].append(
                    sv.Detections(
                        xyxy=np.clip(boxes[b][k].numpy() * size, 0, size).astype(np.float32),
                        confidence=scores[b][k].numpy(),
                        class_id=class_id,
                        data={CLASS_NAME_DATA_FIELD: np.asarray([query.prompts[i] for i in class_id], dtype=object)},
                    )
                )
        return [sv.Detections.merge(parts) for parts in per_image]

    def _joint_captions(self, prompts: Sequence[str]) -> list[tuple[list[int], str]]:
        """Pack prompts into "a. b. c." captions that fit the text encoder, in order."""
        tokenizer = self.processor.tokenizer
        cleaned = [" ".join(p.replace(".", " ").lower().split()) for p in prompts]
        lengths = [len(tokenizer.tokenize(p)) + 1 for p in cleaned]  # + the " ." separator
        budget = self.max_text_len - 2  # [CLS] and [SEP]
        captions: list[tuple[list[int], str]] = []
        current: list[int] = []
        used = 0
        for i, n in enumerate(lengths):
            if n > budget:
                raise ValueError(f"prompt {prompts[i]!r} is longer than the {budget}-token caption limit")
            if current and used + n > budget:
                captions.append((current, ". ".join(cleaned[j] for j in current) + "."))
                current, used = [], 0
            current.append(i)
            used += n
        if current:
            captions.append((current, ". ".join(cleaned[j] for j in current) + "."))
        return captions


def _token_prompts(caption: str, offsets: list[tuple[int, int]], prompt_ids: list[int]) -> np.ndarray:
    """Prompt index of each token of ``caption`` (-1 for special tokens and separators).

    With one prompt the caption is that prompt, so every non-special token belongs to it (this is how the
    transformers pipeline scores one label).
    """
    if len(prompt_ids) == 1:
        return np.asarray([prompt_ids[0] if end > start else -1 for start, end in offsets])
    spans, pos = [], 0
    for part, prompt in zip(caption.split(". "), prompt_ids, strict=True):
        text = part.rstrip(".")
        spans.append((pos, pos + len(text), prompt))
        pos += len(part) + 2
    owner = []
    for start, end in offsets:
        match = [p for s, e, p in spans if end > start and s <= start and end <= e]
        owner.append(match[0] if match else -1)
    return np.asarray(owner)
