"""BLIP image-text retrieval (``BlipForImageTextRetrieval``) as a zero-shot classifier, with two scoring heads.

load -> preprocess -> _forward -> postprocess. ``head`` picks how a prompt is scored:

- ``"itc"`` (default, fast): the contrastive head. Images and prompts are embedded separately (prompts once per
  prompt set, cached, as in ``ContrastiveClassifier``) and scored by the cosine of their projected CLS features,
  which is what ``model(..., use_itm_head=False)`` returns. BLIP scales it by ``1 / temp`` before its softmax,
  but the transformers checkpoints drop the learned ``temp``; the scale used is BLIP's initial temperature
  (0.07, stored as ``config.logit_scale_init_value = log(1 / 0.07)``). Probabilities are a softmax over the
  prompts (calibration ``"softmax"``).
- ``"itm"`` (slower, finer): the matching head. The text encoder reads each prompt while cross-attending to the
  image's patches, and ``softmax(itm_score)[1]`` is the probability that the pair matches, independently per
  prompt (calibration ``"sigmoid"``). That is one fused pass per (image, prompt) pair: the image tower runs once
  per batch and the pairs go through the text encoder in chunks of ``itm_pairs_per_pass``.

With several templates, ITC averages normalised text embeddings and ITM averages the match probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import supervision as sv

from model_adapters.base import Query
from model_adapters.classification import ClassifierParams, apply_templates, classification_detections
from model_adapters.clip import ClipLike
from model_adapters.registry import register_adapter

__all__ = ["Blip", "BlipParams"]


@dataclass(frozen=True)
class BlipParams(ClassifierParams):
    """Per-request knobs of BLIP.

    Attributes:
        head: ``"itc"``: cosine of projected features, softmax over prompts (one text pass per prompt set).
            ``"itm"``: match probability of each (image, prompt) pair from the fused encoder (one pass per pair).
    """

    head: Literal["itc", "itm"] = "itc"


@register_adapter
class Blip(ClipLike):
    """BLIP retrieval checkpoints (``Salesforce/blip-itm-*``): contrastive (ITC) or matching (ITM) scores."""

    name = "blip"
    variants: Mapping[str, str] = {
        "base": "Salesforce/blip-itm-base-coco",
        "large": "Salesforce/blip-itm-large-coco",
        "base_flickr": "Salesforce/blip-itm-base-flickr",
        "large_flickr": "Salesforce/blip-itm-large-flickr",
    }
    default_variant = "base"
    Params: ClassVar[type] = BlipParams
    max_batch_size = 8
    model_class = "BlipForImageTextRetrieval"
    model_types = ("blip",)
    itm_pairs_per_pass: ClassVar[int] = 64  # (image, text) pairs per text-encoder pass with the ITM head

    def preprocess(self, images: Sequence[np.ndarray], query: Query[BlipParams]) -> dict[str, Any]:  # type: ignore[override]
        """Pixels; prompts, templates and the head pass through to ``_forward``."""
        return {**super().preprocess(images, query), "head": query.params.head}

    def encode_images(self, batch: Mapping[str, Any]) -> Any:
        """Projected, L2-normalised CLS features of the image tower (the ITC image embedding)."""
        states = self.model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        features = self.model.vision_proj(states[:, 0])
        return features / features.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: list[str]) -> Any:
        """Projected, L2-normalised CLS features of the text encoder run without the image (ITC)."""
        tokens = self._tokens(texts)
        states = self.model.text_encoder(**tokens).last_hidden_state
        features = self.model.text_proj(states[:, 0])
        return features / features.norm(dim=-1, keepdim=True)

    def logit_scale(self) -> float:
        """``1 / temp`` with BLIP's initial temperature 0.07; the checkpoints do not carry the learned one."""
        return math.exp(self.model.config.logit_scale_init_value)

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if batch["head"] == "itc":
            return super()._forward(batch)
        return {"match": self.match_probabilities(batch["pixel_values"], batch["prompts"], batch["templates"])}

    def match_probabilities(self, pixel_values: Any, prompts: Sequence[str], templates: Sequence[str]) -> Any:
        """ITM: ``(B, P)`` probabilities that each image matches each prompt, averaged over templates."""
        import torch

        image_states = self.model.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, N, H)
        texts = [text for prompt in prompts for text in apply_templates(prompt, templates)]
        tokens = self._tokens(texts)
        n_images, n_texts = image_states.shape[0], len(texts)
        image_index = torch.arange(n_images, device=image_states.device).repeat_interleave(n_texts)
        text_index = torch.arange(n_texts, device=image_states.device).repeat(n_images)
        chunks = []
        for start in range(0, n_images * n_texts, self.itm_pairs_per_pass):
            images, texts_ = (index[start : start + self.itm_pairs_per_pass] for index in (image_index, text_index))
            states = image_states[images]
            fused = self.model.text_encoder(
                input_ids=tokens["input_ids"][texts_],
                attention_mask=tokens["attention_mask"][texts_],
                encoder_hidden_states=states,
                encoder_attention_mask=torch.ones(states.shape[:-1], dtype=torch.long, device=states.device),
            ).last_hidden_state
            chunks.append(self.model.itm_head(fused[:, 0]).float().softmax(dim=-1)[:, 1])
        return torch.cat(chunks).reshape(n_images, len(prompts), len(templates)).mean(dim=-1)

    def postprocess(
        self, raw: Mapping[str, Any], images: Sequence[np.ndarray], query: Query[BlipParams]
    ) -> list[sv.Detections]:
        """ITC: softmax over the prompts; ITM: each pair's match probability as it is."""
        if "match" in raw:
            probs, calibration = raw["match"].float(), "sigmoid"
        else:
            probs, calibration = raw["logits"].float().softmax(dim=-1), "softmax"
        return [
            classification_detections(p, image, query.prompts, calibration)
            for p, image in zip(probs.cpu().numpy(), images, strict=True)
        ]

    def _tokens(self, texts: list[str]) -> dict[str, Any]:
        """Token ids and attention mask on the model's device, padded to the longest text."""
        tokens = self.processor.tokenizer(
            texts, padding=True, truncation=True, return_token_type_ids=False, return_tensors="pt"
        )
        return {key: tokens[key].to(self.device) for key in ("input_ids", "attention_mask")}
