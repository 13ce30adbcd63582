"""SAM 3: every instance of a text concept ("car", "person") as a mask, in transformers (``Sam3Model``).

load -> preprocess -> _forward -> postprocess. Each image is encoded ONCE (``get_vision_features``) and that
embedding is reused for every prompt: prompts are decoded in chunks that share the image features (expanded, not
copied). Text features are computed once per prompt set and cached, since the same labels come with every batch.
``postprocess`` is the processor's ``post_process_instance_segmentation`` per prompt; ``class_id`` indexes the
prompts, so one object matched by two prompts appears once per prompt (the server's NMS merges them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, AdapterError, Query, Task
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["Sam3", "Sam3Params"]

_PROMPTS_PER_PASS = 8  # prompts decoded together on one image (activations grow with it)
_TEXT_CACHE_SIZE = 16  # prompt sets whose text features are kept


@dataclass(frozen=True)
class Sam3Params:
    """Per-request knobs.

    Attributes:
        score_threshold: Keep an instance whose score (query probability times concept presence) exceeds
            this; 0.5 is SAM 3's own demo threshold.
        mask_threshold: Mask probabilities above this are inside the mask.
    """

    score_threshold: float = 0.5
    mask_threshold: float = 0.5


@register_adapter
class Sam3(Adapter[Sam3Params]):
    """SAM 3 image detector (``Sam3Model`` + ``Sam3Processor``), prompted by text."""

    name = "sam3"
    task = Task.SEGMENTATION
    variants: Mapping[str, str] = {"base": "facebook/sam3"}  # the one released image checkpoint
    default_variant = "base"
    Params = Sam3Params
    max_batch_size = 2

    def load(self) -> None:
        """Load processor and model; start an empty text-feature cache."""
        self.processor, self.model = load_transformers_model(self, "Sam3Model", ("sam3",))
        self._texts: OrderedDict[tuple[str, ...], tuple[Any, Any]] = OrderedDict()

    def preprocess(self, images: Sequence[np.ndarray], query: Query[Sam3Params]) -> dict[str, Any]:
        """Pixels for the batch; the prompts pass through to ``_forward``, which embeds them (cached)."""
        if not all(isinstance(p, str) for p in query.prompts):
            raise AdapterError("sam3 takes text prompts only, not example boxes")
        pixels = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )["pixel_values"]
        return {"pixel_values": pixels, "prompts": tuple(query.prompts)}

    def _forward(self, batch: Mapping[str, Any]) -> list[list[Any]]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        text, mask = self._embed_texts(batch["prompts"]) if batch["prompts"] else ((), ())
        answers = []
        for pixels in batch["pixel_values"].split(1):
            vision = self.model.get_vision_features(pixel_values=pixels)
            chunks = []
            for start in range(0, len(text), _PROMPTS_PER_PASS):
                n = len(text[start : start + _PROMPTS_PER_PASS])
                shared = type(vision)(  # the same features for n prompts, as views
                    fpn_hidden_states=[h.expand(n, -1, -1, -1) for h in vision.fpn_hidden_states],
                    fpn_position_encoding=[p.expand(n, -1, -1, -1) for p in vision.fpn_position_encoding],
                )
                chunks.append(
                    self.model(
                        vision_embeds=shared,
                        text_embeds=BaseModelOutputWithPooling(pooler_output=text[start : start + n]),
                        attention_mask=mask[start : start + n],
                    )
                )
            answers.append(chunks)
        return answers

    def postprocess(
        self, raw: list[list[Any]], images: Sequence[np.ndarray], query: Query[Sam3Params]
    ) -> list[sv.Detections]:
        """Per prompt: score threshold, masks upscaled to the image and binarised, boxes clipped to it.

        ``class_id`` is the prompt index.
        """
        out = []
        for image, chunks in zip(images, raw, strict=True):
            size = image.shape[:2]
            found = [
                r
                for chunk in chunks
                for r in self.processor.post_process_instance_segmentation(
                    chunk,
                    threshold=query.params.score_threshold,
                    mask_threshold=query.params.mask_threshold,
                    target_sizes=[size] * len(chunk.pred_logits),
                )
            ]
            class_id = np.asarray([i for i, r in enumerate(found) for _ in range(len(r["scores"]))], dtype=int)
            out.append(
                sv.Detections(
                    xyxy=np.clip(_stack(found, "boxes", (4,)), 0, [size[1], size[0], size[1], size[0]]),
                    mask=_stack(found, "masks", size) > 0,
                    confidence=_stack(found, "scores", ()),
                    class_id=class_id,
                    data={CLASS_NAME_DATA_FIELD: np.asarray([query.prompts[c] for c in class_id], dtype=object)},
                )
            )
        return out

    def _embed_texts(self, prompts: tuple[str, ...]) -> tuple[Any, Any]:
        """Projected text features ``(P, 32, D)`` and their attention mask, tokenised as the processor does."""
        if prompts not in self._texts:
            tokens = self.processor.tokenizer(
                list(prompts), padding="max_length", max_length=32, truncation=True, return_tensors="pt"
            )
            tokens = tokens.to(self.device)
            features = self.model.get_text_features(**tokens).pooler_output
            self._texts[prompts] = (features, tokens["attention_mask"])
            while len(self._texts) > _TEXT_CACHE_SIZE:
                self._texts.popitem(last=False)
        self._texts.move_to_end(prompts)
        return self._texts[prompts]


def _stack(results: list[dict[str, Any]], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """One field of the per-prompt results as float32 rows of ``shape``, concatenated (also when none)."""
    rows = [r[key].float().cpu().numpy().reshape(-1, *shape) for r in results]
    return np.concatenate([*rows, np.zeros((0, *shape), dtype=np.float32)])
