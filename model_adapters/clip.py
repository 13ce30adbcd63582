"""CLIP through transformers (OpenAI CLIP, MetaCLIP and any checkpoint in the CLIP layout) and AltCLIP.

load -> preprocess -> _forward -> postprocess (``ContrastiveClassifier``): images embedded in batches, prompts
once per prompt set, probabilities by softmax over ``logit_scale * cosine``, as CLIP was trained. AltCLIP
shares the layout with a multilingual (XLM-R) text tower, so label values in any language work as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from model_adapters.classification import ContrastiveClassifier
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["AltClip", "Clip", "ClipLike", "pooled"]


class ClipLike(ContrastiveClassifier):
    """A transformers dual encoder with ``get_image_features``/``get_text_features`` (CLIP, AltCLIP, SigLIP, BLIP)."""

    model_class: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]

    def load(self) -> None:
        """Load processor and model (class from ``model_class``), checking the checkpoint's family."""
        self.processor, self.model = load_transformers_model(self, self.model_class, self.model_types)

    def preprocess_images(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """The checkpoint's own resize, crop and normalisation."""
        inputs = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )
        return {"pixel_values": inputs["pixel_values"]}

    def encode_images(self, batch: Mapping[str, Any]) -> Any:
        """Projected, L2-normalised image embeddings."""
        features = pooled(self.model.get_image_features(pixel_values=batch["pixel_values"]))
        return features / features.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: list[str]) -> Any:
        """Projected, L2-normalised text embeddings (padded to the longest text, as the pipeline does)."""
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        features = pooled(self.model.get_text_features(**tokens))
        return features / features.norm(dim=-1, keepdim=True)

    def logit_scale(self) -> Any:
        """CLIP's learned temperature, exponentiated."""
        return self.model.logit_scale.exp()


def pooled(output: Any) -> Any:
    """``get_*_features`` returns a tensor or, in transformers 5, an output whose pooler holds the projection."""
    return getattr(output, "pooler_output", output)


@register_adapter
class Clip(ClipLike):
    """CLIP-layout checkpoints (``CLIPModel``): OpenAI CLIP, MetaCLIP, ..."""

    name = "clip"
    variants: Mapping[str, str] = {
        "b32": "openai/clip-vit-base-patch32",
        "b16": "openai/clip-vit-base-patch16",
        "l14": "openai/clip-vit-large-patch14",
        "metaclip_b32": "facebook/metaclip-b32-400m",
        "metaclip_l14": "facebook/metaclip-l14-fullcc2.5b",
        "metaclip_h14": "facebook/metaclip-h14-fullcc2.5b",
    }
    default_variant = "b32"
    model_class = "CLIPModel"
    model_types = ("clip",)


@register_adapter
class AltClip(ClipLike):
    """AltCLIP (``AltCLIPModel``): CLIP's image tower with a multilingual text tower."""

    name = "altclip"
    variants: Mapping[str, str] = {"base": "BAAI/AltCLIP", "m9": "BAAI/AltCLIP-m9"}
    default_variant = "base"
    model_class = "AltCLIPModel"
    model_types = ("altclip",)
