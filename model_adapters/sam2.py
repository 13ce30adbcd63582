"""SAM 2 / SAM 2.1 on images: masks from boxes and clicks, in transformers (``Sam2Model`` + ``Sam2Processor``).

Same contract and decode rules as SAM (see ``model_adapters.sam``): the Hiera encoder runs once per image and its
three feature levels are cached; boxes share one decoder call; clicks make one mask; a lone click gets the best
of three masks by predicted IoU, and scores are predicted IoUs clipped to [0, 1]. Two differences from SAM: the image is resized to a square without padding, so
coordinates scale per axis to ``processor.target_size``, and masks are upscaled straight to the image size.
Points are ``(image, object, point, xy)`` tensors, the processor's 4-level nesting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model_adapters.registry import register_adapter
from model_adapters.sam import TransformersSam

__all__ = ["Sam2"]


@register_adapter
class Sam2(TransformersSam):
    """SAM 2.1 Hiera tiny/small/base+/large (``Sam2Model``); image prompts only, no video memory."""

    name = "sam2"
    variants: Mapping[str, str] = {
        "tiny": "facebook/sam2.1-hiera-tiny",
        "small": "facebook/sam2.1-hiera-small",
        "base_plus": "facebook/sam2.1-hiera-base-plus",
        "large": "facebook/sam2.1-hiera-large",
    }
    default_variant = "tiny"
    model_class = "Sam2Model"
    model_type = "sam2"

    def _sizes(self, inputs: Mapping[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """The image is stretched to a ``target_size`` square: x and y scale separately."""
        target = self.processor.target_size
        return {"original_size": size, "scale": (target / size[1], target / size[0])}

    def _upscale(self, masks: Any, embedding: Mapping[str, Any], threshold: float) -> Any:
        """Low-res logits ``(B, 1, h, w)`` to bool masks ``(B, H, W)`` with the processor's ``post_process_masks``."""
        sizes = [embedding["original_size"]]
        return self.processor.post_process_masks(masks[None], sizes, mask_threshold=threshold)[0][:, 0]
