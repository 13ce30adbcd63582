"""OWL-ViT and OWLv2: open-vocabulary boxes from text queries or from example boxes (few-shot).

load -> preprocess -> _forward -> postprocess. The model is run in its parts: the image embedder once per batch,
query embeddings (text, or the class embedding of an example box) computed once per prompt set and cached,
then the class and box heads. A box gets the query with its highest logit, as in the processor's
``post_process_grounded_object_detection``.

OWLv2 pads images to a square before resizing, so its boxes are relative to that square; they are scaled by
the longer side and clipped to the image (the zero-shot pipeline scales them by width and height instead,
which stretches them past the image edge).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, ExamplePrompt, Query, QueryEmbedding, Task
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import CHANNELS_LAST, load_transformers_model

__all__ = ["OwlParams", "OwlV2", "OwlViT"]

_CACHE_SIZE = 64  # query embeddings kept per model (prompt sets and example boxes)


@dataclass(frozen=True)
class OwlParams:
    """Per-request knobs.

    Attributes:
        score_threshold: Keep a box when the sigmoid of its best query logit exceeds this.
    """

    score_threshold: float = 0.1


class _Owl(Adapter[OwlParams]):
    task = Task.DETECTION
    Params = OwlParams
    max_batch_size = 4
    accepts_examples = True
    model_class: ClassVar[str]
    model_type: ClassVar[str]
    pads_to_square: ClassVar[bool]

    def load(self) -> None:
        """Load processor and model, and start empty query-embedding caches."""
        self.processor, self.model = load_transformers_model(self, self.model_class, (self.model_type,))
        self._queries: OrderedDict[Any, Any] = OrderedDict()

    def preprocess(self, images: Sequence[np.ndarray], query: Query[OwlParams]) -> dict[str, Any]:
        """Pixels for the batch; prompts pass through to ``_forward``, which embeds them (cached)."""
        pixels = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )["pixel_values"]
        return {"pixel_values": pixels, "prompts": query.prompts}

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        queries = self.embed_prompts(batch["prompts"])  # (Q, D)
        feature_map, _ = self.model.image_embedder(pixel_values=batch["pixel_values"])
        b, h, w, d = feature_map.shape
        image_feats = feature_map.reshape(b, h * w, d)
        logits, _ = self.model.class_predictor(image_feats, queries.unsqueeze(0).expand(b, -1, -1), None)
        boxes = self.model.box_predictor(image_feats, feature_map)
        return {"logits": logits, "boxes": boxes}

    def postprocess(
        self, raw: dict[str, Any], images: Sequence[np.ndarray], query: Query[OwlParams]
    ) -> list[sv.Detections]:
        """Best query per box, threshold, scale to pixels (OWLv2: of the padded square), clip to the image."""
        from transformers.image_transforms import center_to_corners_format

        best = raw["logits"].float().max(dim=-1)
        scores = best.values.sigmoid().numpy()
        labels = best.indices.numpy()
        corners = center_to_corners_format(raw["boxes"].float()).numpy()
        out = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            scale = [max(height, width)] * 4 if self.pads_to_square else [width, height, width, height]
            keep = scores[i] > query.params.score_threshold
            xyxy = np.clip(corners[i][keep] * scale, 0, [width, height, width, height]).astype(np.float32)
            class_id = labels[i][keep]
            names = [p if isinstance(p, str) else f"example {j}" for j, p in enumerate(query.prompts)]
            out.append(
                sv.Detections(
                    xyxy=xyxy,
                    confidence=scores[i][keep],
                    class_id=class_id,
                    data={CLASS_NAME_DATA_FIELD: np.asarray([names[c] for c in class_id], dtype=object)},
                )
            )
        return out

    def embed_prompts(self, prompts: Sequence[str | ExamplePrompt | QueryEmbedding]) -> Any:
        """Query embeddings ``(Q, D)`` for text prompts, example boxes and given embeddings, cached per prompt.

        Runs on the model's device under ``inference_mode``; the training loop can call it directly.
        """
        import torch

        texts = [p for p in prompts if isinstance(p, str)]
        with torch.inference_mode():
            text_embeds = dict(zip(texts, self._embed_texts(texts), strict=True)) if texts else {}
            return torch.stack([self._embed_one(p, text_embeds) for p in prompts])

    def _embed_one(self, prompt: str | ExamplePrompt | QueryEmbedding, texts: Mapping[str, Any]) -> Any:
        import torch

        if isinstance(prompt, str):
            return texts[prompt]
        if isinstance(prompt, QueryEmbedding):
            return torch.as_tensor(prompt.vector, device=self.device, dtype=self.dtype)
        return self._embed_example(prompt)

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Class embeddings ``(K, D)`` of the regions best matching ``boxes`` (K, 4 pixels xyxy) on ``image``."""
        import torch

        with torch.inference_mode():
            class_embeds, corners = self._image_queries(image)
            return np.stack(
                [
                    self._best_match(class_embeds, corners, self._relative(image, box)).float().cpu().numpy()
                    for box in boxes
                ]
            )

    def _embed_texts(self, texts: list[str]) -> Any:
        key = ("text", tuple(texts))
        if key not in self._queries:
            # Tokenized as the processor does (padded to the 16-token limit); longer prompts are truncated.
            tokens = self.processor.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
            backbone = getattr(self.model, self.model_type)
            self._remember(key, backbone.get_text_features(**tokens.to(self.device)).pooler_output)
        self._queries.move_to_end(key)
        return self._queries[key]

    def _embed_example(self, example: ExamplePrompt) -> Any:
        image_key = example.key or hashlib.blake2b(example.image.tobytes(), digest_size=16).hexdigest()
        key = ("example", image_key, example.box)
        if key not in self._queries:
            class_embeds, corners = self._image_queries(example.image)
            self._remember(key, self._best_match(class_embeds, corners, self._relative(example.image, example.box)))
        self._queries.move_to_end(key)
        return self._queries[key]

    def _image_queries(self, image: np.ndarray) -> tuple[Any, Any]:
        """Every patch's class embedding ``(P, D)`` and predicted box ``(P, 4)``, relative xyxy."""
        from transformers.image_transforms import center_to_corners_format

        inputs = self.processor.image_processor(images=[image], return_tensors="pt", input_data_format=CHANNELS_LAST)
        feature_map, _ = self.model.image_embedder(pixel_values=inputs["pixel_values"].to(self.device, self.dtype))
        b, h, w, d = feature_map.shape
        image_feats = feature_map.reshape(b, h * w, d)
        _, class_embeds = self.model.class_predictor(image_feats)
        corners = center_to_corners_format(self.model.box_predictor(image_feats, feature_map))
        return class_embeds[0], corners[0].float()

    def _relative(self, image: np.ndarray, box: Sequence[float]) -> list[float]:
        """A pixel box in the model's relative frame (OWLv2: of the padded square)."""
        height, width = image.shape[:2]
        scale = [max(height, width)] * 4 if self.pads_to_square else [width, height, width, height]
        return [float(v) / s for v, s in zip(box, scale, strict=True)]

    @staticmethod
    def _best_match(class_embeds: Any, corners: Any, box: list[float]) -> Any:
        """The class embedding of the predicted box that best matches ``box`` (relative xyxy).

        Among boxes within 80% of the best IoU (generalised IoU if none overlaps), take the one least similar
        to the image's mean class embedding, which steers away from background-like boxes.
        """
        import torch
        from torchvision.ops import box_iou, generalized_box_iou

        target = torch.tensor([box], dtype=corners.dtype, device=corners.device)
        ious = box_iou(target, corners)[0]
        if not bool((ious > 0).any()):
            ious = generalized_box_iou(target, corners)[0]
        best = ious.max()
        candidates = (ious >= best - 0.2 * best.abs()).nonzero().squeeze(1)  # within 80% of the best

        similarity = class_embeds[candidates] @ class_embeds.mean(dim=0)
        return class_embeds[candidates[similarity.argmin()]]

    def _remember(self, key: Any, value: Any) -> None:
        self._queries[key] = value
        while len(self._queries) > _CACHE_SIZE:
            self._queries.popitem(last=False)


@register_adapter
class OwlViT(_Owl):
    """OWL-ViT (``OwlViTForObjectDetection``)."""

    name = "owlvit"
    variants: Mapping[str, str] = {
        "base32": "google/owlvit-base-patch32",
        "base16": "google/owlvit-base-patch16",
        "large14": "google/owlvit-large-patch14",
    }
    default_variant = "base32"
    model_class = "OwlViTForObjectDetection"
    model_type = "owlvit"
    pads_to_square = False


@register_adapter
class OwlV2(_Owl):
    """OWLv2 (``Owlv2ForObjectDetection``)."""

    name = "owlv2"
    variants: Mapping[str, str] = {
        "base": "google/owlv2-base-patch16-ensemble",
        "base_plain": "google/owlv2-base-patch16",
        "large": "google/owlv2-large-patch14-ensemble",
    }
    default_variant = "base"
    model_class = "Owlv2ForObjectDetection"
    model_type = "owlv2"
    pads_to_square = True
