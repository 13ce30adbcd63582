"""DINOv2 (and DINOv3) image embeddings through transformers, for heads learned on a project's annotations.

load -> embed. DINO models have no text tower, so unlike the other classifiers this adapter cannot answer a
prompt: it is not zero-shot (``zero_shot = False``), and its ``__call__`` stages refuse with an ``AdapterError``
that says so. It serves a ``Choices`` control only through a head fitted on the project's annotated examples
(``extra_params.learning``), which calls ``embed``.

The embedding is the one DINOv2's linear evaluation uses: the final layer norm's class token concatenated with the
mean of its patch tokens (the linear-probe protocol of Oquab et al., "DINOv2: Learning Robust Visual Features
without Supervision", arXiv:2304.07193, which concatenates the class token with the average-pooled patch tokens;
its released one-layer ImageNet heads, ``dinov2_*_lc(layers=1)``, and transformers'
``Dinov2ForImageClassification`` take exactly this ``[CLS, mean(patches)]`` input). Register tokens
(``dinov2-with-registers``, DINOv3 ViTs) are neither, and are left out. The ``2 * hidden_size`` vector is
L2-normalised, as ``Adapter.embed`` promises.

The checkpoint's ``model_type`` picks the model class (``AutoModel``): ``dinov2`` (``Dinov2Model``),
``dinov2_with_registers`` (``Dinov2WithRegistersModel``), ``dinov3_vit`` (``DINOv3ViTModel``) and
``dinov3_convnext`` (``DINOv3ConvNextModel``, whose "class token" is the layer-normed average of its last feature
map and whose patch tokens are that map's cells). All four load in transformers 5.24 and are tested here on tiny
random weights; so ``model`` may be any variant below and ``model_id`` any checkpoint of these four types. DINOv3
checkpoints are gated on the Hugging Face Hub: accept the DINOv3 license there and set ``HF_TOKEN``, or download
them once and point ``model_id`` at the folder. Images go through the checkpoint's own processor (DINOv2: resize
the shorter side, then centre-crop; DINOv3: resize to a square), so every image of a batch has one size and
batches exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, AdapterError, Query, Task
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["Dinov2", "EmbedderParams"]

_HUB = "facebook/dinov3-{}-pretrain-{}"


@dataclass(frozen=True)
class EmbedderParams:
    """No per-request knobs: the embedding does not depend on the prompts, and a learned head has its own settings."""


@register_adapter
class Dinov2(Adapter[EmbedderParams]):
    """DINOv2/DINOv3 backbones: ``embed`` only, no zero-shot answer."""

    name = "dinov2"
    task = Task.CLASSIFICATION
    zero_shot = False
    variants: Mapping[str, str] = {
        "small": "facebook/dinov2-small",
        "base": "facebook/dinov2-base",
        "large": "facebook/dinov2-large",
        "giant": "facebook/dinov2-giant",
        "small_reg": "facebook/dinov2-with-registers-small",
        "base_reg": "facebook/dinov2-with-registers-base",
        "large_reg": "facebook/dinov2-with-registers-large",
        "giant_reg": "facebook/dinov2-with-registers-giant",
        "v3_vits16": _HUB.format("vits16", "lvd1689m"),
        "v3_vits16plus": _HUB.format("vits16plus", "lvd1689m"),
        "v3_vitb16": _HUB.format("vitb16", "lvd1689m"),
        "v3_vitl16": _HUB.format("vitl16", "lvd1689m"),
        "v3_vith16plus": _HUB.format("vith16plus", "lvd1689m"),
        "v3_vit7b16": _HUB.format("vit7b16", "lvd1689m"),
        "v3_vitl16_sat": _HUB.format("vitl16", "sat493m"),  # satellite imagery
        "v3_convnext_tiny": _HUB.format("convnext-tiny", "lvd1689m"),
        "v3_convnext_small": _HUB.format("convnext-small", "lvd1689m"),
        "v3_convnext_base": _HUB.format("convnext-base", "lvd1689m"),
        "v3_convnext_large": _HUB.format("convnext-large", "lvd1689m"),
    }
    default_variant = "small"
    Params: ClassVar[type] = EmbedderParams
    max_batch_size = 8
    model_types: ClassVar[tuple[str, ...]] = ("dinov2", "dinov2_with_registers", "dinov3_vit", "dinov3_convnext")

    def load(self) -> None:
        """Load the image processor and backbone; the config's ``model_type`` picks the class."""
        self.processor, self.model = load_transformers_model(self, "AutoModel", self.model_types)
        self.prefix_tokens = 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 2 * hidden_size)`` float32, L2-normalised: ``[CLS, mean(patch tokens)]`` of each image.

        Each image's row is what it gets alone. Callers pass at most ``max_batch_size`` images at a time.
        """
        return self.forward(self.preprocess_images(images)).float().numpy()

    def preprocess_images(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """The checkpoint's own resize, crop and normalisation."""
        inputs = self.processor(images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST)
        return {"pixel_values": inputs["pixel_values"]}

    def _forward(self, batch: Mapping[str, Any]) -> Any:
        """The normalised ``[CLS, mean(patch tokens)]`` of the final layer norm's output."""
        import torch

        tokens = self.model(pixel_values=batch["pixel_values"]).last_hidden_state.float()
        features = torch.cat([tokens[:, 0], tokens[:, self.prefix_tokens :].mean(dim=1)], dim=-1)
        return features / features.norm(dim=-1, keepdim=True)

    def preprocess(self, images: Sequence[np.ndarray], query: Query[EmbedderParams]) -> Mapping[str, Any]:
        """Refuse: there is no text tower to score prompts with."""
        raise self._no_zero_shot()

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query[EmbedderParams]) -> list[sv.Detections]:
        """Refuse, as ``preprocess`` does."""
        raise self._no_zero_shot()

    def _no_zero_shot(self) -> AdapterError:
        return AdapterError(
            f"{self.name} has no text tower: it predicts only once the project has annotated examples; "
            "see extra_params.learning"
        )
