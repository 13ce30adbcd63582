"""SigLIP and SigLIP 2 through transformers: zero-shot classification with independent (sigmoid) probabilities.

load -> preprocess -> _forward -> postprocess (``ContrastiveClassifier``), like ``clip.py``. SigLIP was trained
with a sigmoid loss, so each prompt's probability is ``sigmoid(logit_scale.exp() * cosine + logit_bias)`` on its
own: an image can match several prompts, or none (calibration ``"sigmoid"``), as the zero-shot pipeline reports.

Texts are padded to the text tower's full length (64 tokens for every released checkpoint), as the pipeline
and ``Siglip2Processor`` do: SigLIP pools the last token, so shorter padding changes the embedding.

SigLIP 2 comes in two layouts. FixRes checkpoints (``google/siglip2-base-patch16-224``, ``-so400m-patch14-384``)
are ``SiglipModel``s with a Gemma tokenizer; NaFlex checkpoints (``...-naflex``) are ``Siglip2Model``s whose
processor cuts each image into at most 256 patches at its own aspect ratio and adds ``pixel_attention_mask`` and
``spatial_shapes``. The ``siglip2`` adapter loads both (``AutoModel`` picks the class); ``siglip`` only the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model_adapters.clip import ClipLike, pooled
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST

__all__ = ["Siglip", "Siglip2"]

_NOT_IMAGE_INPUTS = ("prompts", "templates")


class _SiglipLike(ClipLike):
    """``ClipLike`` loading (``AutoModel``, family check), with SigLIP's padding, bias and sigmoid."""

    model_class = "AutoModel"
    calibration = "sigmoid"

    def preprocess_images(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Every image tensor the processor gives (NaFlex adds ``pixel_attention_mask`` and ``spatial_shapes``).

        The processor, not its image processor, is called because ``Siglip2Processor``'s class defaults
        (``max_num_patches=256``, ``patch_size=16``) take precedence over the saved image-processor values.
        """
        return dict(self.processor(images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST))

    def encode_images(self, batch: Mapping[str, Any]) -> Any:
        """Projected, L2-normalised image embeddings."""
        inputs = {key: value for key, value in batch.items() if key not in _NOT_IMAGE_INPUTS}
        features = pooled(self.model.get_image_features(**inputs))
        return features / features.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: list[str]) -> Any:
        """Projected, L2-normalised text embeddings, padded to the text tower's length as SigLIP was trained."""
        length = self.model.config.text_config.max_position_embeddings
        tokens = self.processor.tokenizer(
            texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).to(self.device)
        features = pooled(self.model.get_text_features(**tokens))
        return features / features.norm(dim=-1, keepdim=True)

    def logit_bias(self) -> Any:
        """SigLIP's learned bias, added after scaling (it sets where the sigmoid crosses 0.5)."""
        return self.model.logit_bias


@register_adapter
class Siglip(_SiglipLike):
    """SigLIP (``SiglipModel``): Google's sigmoid-loss CLIP, and SigLIP 2 FixRes checkpoints in the same layout."""

    name = "siglip"
    variants: Mapping[str, str] = {
        "base": "google/siglip-base-patch16-224",
        "base256": "google/siglip-base-patch16-256",
        "base384": "google/siglip-base-patch16-384",
        "large": "google/siglip-large-patch16-384",
        "so400m": "google/siglip-so400m-patch14-384",
        "i18n": "google/siglip-base-patch16-256-multilingual",
    }
    default_variant = "base"
    model_types = ("siglip",)


@register_adapter
class Siglip2(_SiglipLike):
    """SigLIP 2: FixRes (``SiglipModel`` layout) and NaFlex (``Siglip2Model``) checkpoints; multilingual."""

    name = "siglip2"
    variants: Mapping[str, str] = {
        "base": "google/siglip2-base-patch16-224",
        "base384": "google/siglip2-base-patch16-384",
        "large": "google/siglip2-large-patch16-384",
        "so400m": "google/siglip2-so400m-patch14-384",
        "giant": "google/siglip2-giant-opt-patch16-384",
        "base_naflex": "google/siglip2-base-patch16-naflex",
        "so400m_naflex": "google/siglip2-so400m-patch16-naflex",
    }
    default_variant = "base"
    model_types = ("siglip2", "siglip")
