"""What zero-shot classifiers share: prompt templates, cached text embeddings, and the answer's shape.

A classifier answers each image with one row per prompt: the whole-image box, the prompt's probability as
``confidence`` and the prompt index as ``class_id``. ``metadata["calibration"]`` says how the probabilities
relate: ``"softmax"`` (they sum to one over the prompts: pick one) or ``"sigmoid"`` (independent, one per prompt).
The server turns prompts into labels and picks choices from these rows.

Contrastive models (CLIP and its kin) subclass ``ContrastiveClassifier``: they embed images in batches and
each prompt set once (cached per prompts and templates), so a large batch costs only the image encoder.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD, Adapter, ModelSpec, Query, Task

__all__ = [
    "CALIBRATION",
    "ClassifierParams",
    "ContrastiveClassifier",
    "apply_templates",
    "classification_detections",
]

CALIBRATION = "calibration"
DEFAULT_TEMPLATES = ("a photo of a {}.",)
_TEXT_CACHE_SIZE = 32


@dataclass(frozen=True)
class ClassifierParams:
    """Per-request knobs of zero-shot classifiers.

    Attributes:
        templates: Prompt templates; ``{}`` is replaced by the prompt. Several templates are an ensemble: their
            normalised text embeddings are averaged per prompt.
    """

    templates: tuple[str, ...] = DEFAULT_TEMPLATES


def apply_templates(prompt: str, templates: Sequence[str]) -> list[str]:
    """The texts a prompt is embedded as: one per template (``{}`` -> prompt; no ``{}`` -> appended)."""
    return [t.replace("{}", prompt) if "{}" in t else f"{t} {prompt}".strip() for t in templates]


def classification_detections(
    probabilities: np.ndarray, image: np.ndarray, prompts: Sequence[Any], calibration: Literal["softmax", "sigmoid"]
) -> sv.Detections:
    """One row per prompt: whole-image box, probability as confidence, prompt index as class id."""
    height, width = image.shape[:2]
    n = len(prompts)
    return sv.Detections(
        xyxy=np.tile(np.asarray([0, 0, width, height], dtype=np.float32), (n, 1)),
        confidence=np.asarray(probabilities, dtype=np.float32).reshape(n),
        class_id=np.arange(n),
        data={CLASS_NAME_DATA_FIELD: np.asarray([str(p) for p in prompts], dtype=object)},
        metadata={CALIBRATION: calibration},
    )


class ContrastiveClassifier(Adapter[ClassifierParams]):
    """Image and text towers scored by scaled cosine similarity.

    Subclasses load ``self.model`` and implement ``encode_images`` and ``encode_texts`` (both return
    L2-normalised embeddings) and ``logit_scale``/``logit_bias``; this class does batching, template
    ensembles, caching and the softmax or sigmoid.
    """

    task = Task.CLASSIFICATION
    Params: ClassVar[type] = ClassifierParams
    max_batch_size = 16
    calibration: ClassVar[Literal["softmax", "sigmoid"]] = "softmax"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self._text_cache: OrderedDict[Any, Any] = OrderedDict()

    def preprocess_images(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Tensors for the image tower (e.g. ``{"pixel_values": ...}``)."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[np.ndarray], query: Query[ClassifierParams]) -> dict[str, Any]:
        """Image tensors; prompts and templates pass through to ``_forward``, which embeds them (cached)."""
        return {**self.preprocess_images(images), "prompts": tuple(query.prompts), "templates": query.params.templates}

    def encode_images(self, batch: Mapping[str, Any]) -> Any:
        """L2-normalised image embeddings ``(B, D)`` from a preprocessed batch."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> Any:
        """L2-normalised text embeddings ``(T, D)``."""
        raise NotImplementedError

    def logit_scale(self) -> Any:
        """Multiplier of cosine similarities (a tensor or float)."""
        raise NotImplementedError

    def logit_bias(self) -> Any:
        """Added to scaled similarities (SigLIP); 0 for CLIP-style models."""
        return 0.0

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The image tower's L2-normalised embeddings, as the zero-shot scores use them."""
        import torch

        from model_adapters.torch_utils import to_device

        with torch.inference_mode():
            embeds = self.encode_images(to_device(self.preprocess_images(images), self.device, self.dtype))
        return embeds.float().cpu().numpy()

    def text_prior(self, prompts: Sequence[str], templates: Sequence[str]) -> tuple[np.ndarray, float, float]:
        """The zero-shot classifier as a linear head: prompt embeddings ``(P, D)``, logit scale and bias.

        ``logits = scale * image_embedding @ prompts.T + bias`` is exactly what ``_forward`` computes, so a head
        initialised from this reproduces the zero-shot answer before it has seen an example.
        """
        import torch

        with torch.inference_mode():
            embeds = self.prompt_embeddings(prompts, templates)
            return embeds.float().cpu().numpy(), float(self.logit_scale()), float(self.logit_bias())

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        images = self.encode_images(batch)
        texts = self.prompt_embeddings(batch["prompts"], batch["templates"])
        logits = images @ texts.T * self.logit_scale() + self.logit_bias()
        return {"logits": logits}

    def postprocess(
        self, raw: Mapping[str, Any], images: Sequence[np.ndarray], query: Query[ClassifierParams]
    ) -> list[sv.Detections]:
        """Softmax (or sigmoid) over the prompts, one ``Detections`` per image."""
        logits = raw["logits"].float()
        probs = logits.softmax(dim=-1) if self.calibration == "softmax" else logits.sigmoid()
        return [
            classification_detections(p, image, query.prompts, self.calibration)
            for p, image in zip(probs.numpy(), images, strict=True)
        ]

    def prompt_embeddings(self, prompts: Sequence[str], templates: Sequence[str]) -> Any:
        """One normalised embedding per prompt, averaged over templates; cached per (prompts, templates)."""
        import torch

        key = (tuple(prompts), tuple(templates))
        if key not in self._text_cache:
            texts = [text for prompt in prompts for text in apply_templates(prompt, templates)]
            with torch.inference_mode():
                embeds = self.encode_texts(texts).reshape(len(prompts), len(templates), -1)
                if len(templates) > 1:
                    embeds = embeds.mean(dim=1)
                    embeds = embeds / embeds.norm(dim=-1, keepdim=True)
                else:
                    embeds = embeds[:, 0]
            self._text_cache[key] = embeds
            while len(self._text_cache) > _TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        self._text_cache.move_to_end(key)
        return self._text_cache[key]
