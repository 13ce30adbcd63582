"""timm FastViT: a closed-set ImageNet-1k classifier that answers prompts naming ImageNet classes.

load -> preprocess -> _forward -> postprocess. Unlike the zero-shot classifiers, the model only knows its 1000
classes, so prompts are matched to class names instead of embedded: a prompt matches a class when it equals,
ignoring case, one of the class's WordNet lemmas as timm ships them (``"tabby"``, ``"tabby cat"``, ``"crane"``,
...) or its synset id (``"n02123045"``). A prompt's probability is the sum of the softmax probabilities of the
classes it matches (``"crane"`` is both a bird and a machine); a prompt that matches nothing gets 0 and is
logged once per model, so a label that can never be predicted is visible rather than silently dropped. Labels
list several prompts with ``predicted_values`` (``"cat"`` alone matches no class; ``"tabby,tiger cat,Persian
cat"`` does). Templates do not apply and are ignored. Calibration is ``"softmax"``.

The model is re-parameterised for inference (its multi-branch blocks fused into single convolutions, which gives
the same outputs several times faster), and images go through timm's eval transform for its data config.

``model_id`` forms: ``"fastvit_t8.apple_in1k"`` (timm's architecture.tag; weights from the Hub, cached under
``HF_HOME``), ``"fastvit_t8:/path/weights.safetensors"`` (an architecture with a local ``.pth``/``.safetensors``
file), ``"/path"`` or ``"local-dir:/path"`` (a folder with timm's ``config.json`` and weights, as ``hf download
timm/<repo>`` and ``timm.models.save_for_hf`` write) or ``"hf-hub:timm/<repo>"``. Any timm ImageNet-1k
classifier loads the same way (e.g. ``"resnet50.a1_in1k"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import supervision as sv

from model_adapters.base import Adapter, AdapterLoadError, Query, Task
from model_adapters.classification import ClassifierParams, classification_detections
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import local_path, missing_path, resize_rule_of_transform, resolve_device, resolve_dtype

__all__ = ["FastVit", "imagenet_class_index"]

logger = logging.getLogger(__name__)

_INSTEAD = "a timm id such as 'fastvit_t8.apple_in1k' or 'fastvit_t8:/path/to/weights.safetensors'"
_NUM_CLASSES = 1000


def imagenet_class_index() -> dict[str, list[int]]:
    """Lower-cased ImageNet-1k lemma or synset id -> the class indices that carry it (timm's offline tables)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    index: dict[str, list[int]] = {}
    for i in range(info.num_classes()):
        for name in (info.index_to_label_name(i), *info.index_to_description(i).split(", ")):
            classes = index.setdefault(name.strip().lower(), [])
            if i not in classes:
                classes.append(i)
    return index


@register_adapter
class FastVit(Adapter[ClassifierParams]):
    """FastViT ImageNet-1k classifiers (Apple, via timm); prompts must name ImageNet classes."""

    name = "fastvit"
    task = Task.CLASSIFICATION
    variants: Mapping[str, str] = {
        "t8": "fastvit_t8.apple_in1k",
        "t12": "fastvit_t12.apple_in1k",
        "s12": "fastvit_s12.apple_in1k",
        "sa12": "fastvit_sa12.apple_in1k",
        "sa24": "fastvit_sa24.apple_in1k",
        "sa36": "fastvit_sa36.apple_in1k",
        "ma36": "fastvit_ma36.apple_in1k",
        "t8_dist": "fastvit_t8.apple_dist_in1k",
        "sa36_dist": "fastvit_sa36.apple_dist_in1k",
        "ma36_dist": "fastvit_ma36.apple_dist_in1k",
    }
    default_variant = "t8"
    Params: ClassVar[type] = ClassifierParams
    max_batch_size = 16

    def load(self) -> None:
        """Create the model with its weights, check it classifies ImageNet-1k, fuse it, build its transform."""
        from timm.data import create_transform, resolve_data_config
        from timm.utils.model import reparameterize_model

        self.device = resolve_device(self.spec.device)
        self.dtype = resolve_dtype(self.spec.dtype, self.device)
        model = _create_model(self.spec.model_id)
        if getattr(model, "num_classes", None) != _NUM_CLASSES:
            raise AdapterLoadError(
                f"fastvit: {self.spec.model_id!r} has {getattr(model, 'num_classes', None)} outputs, not the "
                f"{_NUM_CLASSES} ImageNet-1k classes; use an *_in1k checkpoint, e.g. {self.variants['t8']!r}"
            )
        self.transform = create_transform(**resolve_data_config(model=model))
        self.resize_rule = resize_rule_of_transform(self.transform)
        model = reparameterize_model(model.eval(), inplace=True)  # new fused convs start in training mode
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.class_index = imagenet_class_index()
        self._matches: dict[tuple[str, ...], np.ndarray] = {}
        self._warned: set[str] = set()

    def preprocess(self, images: Sequence[np.ndarray], query: Query[ClassifierParams]) -> dict[str, Any]:
        """Resize, center-crop and normalise each image with timm's eval transform for this model."""
        import torch
        from PIL import Image

        return {"pixel_values": torch.stack([self.transform(Image.fromarray(image)) for image in images])}

    def _forward(self, batch: Mapping[str, Any]) -> Any:
        return self.model(batch["pixel_values"])

    def postprocess(
        self, raw: Any, images: Sequence[np.ndarray], query: Query[ClassifierParams]
    ) -> list[sv.Detections]:
        """Softmax over the 1000 classes, then each prompt's summed probability over the classes it names."""
        probs = raw.float().softmax(dim=-1).cpu().numpy()  # (B, 1000)
        scores = probs @ self.prompt_matrix([str(p) for p in query.prompts]).T  # (B, P)
        return [
            classification_detections(s, image, query.prompts, "softmax")
            for s, image in zip(scores, images, strict=True)
        ]

    def prompt_matrix(self, prompts: Sequence[str]) -> np.ndarray:
        """``(P, 1000)`` float32, 1 where a prompt names a class; cached per prompt set, misses logged once."""
        key = tuple(prompts)
        if key not in self._matches:
            matrix = np.zeros((len(prompts), _NUM_CLASSES), dtype=np.float32)
            for row, prompt in enumerate(prompts):
                classes = self.class_index.get(prompt.strip().lower(), [])
                matrix[row, classes] = 1.0
                if not classes and prompt not in self._warned:
                    self._warned.add(prompt)
                    logger.warning(
                        "fastvit (%s): prompt %r names no ImageNet-1k class, its probability is always 0; use "
                        'ImageNet class names, e.g. predicted_values="tabby,tiger cat"',
                        self.spec.model_id,
                        prompt,
                    )
            self._matches[key] = matrix
        return self._matches[key]


def _create_model(model_id: str) -> Any:
    """``timm.create_model`` with weights from the hub tag, a local file or a folder; errors say what to do."""
    import timm

    source, kwargs, repo = model_id, {}, "timm/<name.tag>"
    if model_id.startswith("local-dir:"):
        source = _folder(model_id, Path(model_id.removeprefix("local-dir:")).expanduser())
    elif ":" not in model_id and (folder := local_path(model_id)) is not None:
        source = _folder(model_id, folder)
    elif not model_id.startswith("hf-hub:"):
        name, sep, path = model_id.partition(":")
        arch, _, tag = name.partition(".")
        if not timm.is_model(arch):
            known = ", ".join(n for n in timm.list_pretrained("fastvit*") if "in1k" in n)
            raise AdapterLoadError(f"fastvit: unknown timm model {arch!r}; FastViT ImageNet-1k weights: {known}")
        tags = timm.list_pretrained(f"{arch}.*")
        if tag and name not in tags:
            raise AdapterLoadError(f"fastvit: unknown weights tag {tag!r} for {arch}; it has: {', '.join(tags)}")
        if sep:
            file = Path(path).expanduser()
            if not file.is_file():
                raise missing_path("fastvit", file, "file", _INSTEAD)
            source, kwargs = name, {"pretrained_cfg_overlay": {"file": str(file)}}
        else:
            repo = timm.models.get_pretrained_cfg(name).hf_hub_id or repo
    try:
        return timm.create_model(source, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        if source.startswith("local-dir:"):
            raise AdapterLoadError(f"fastvit: could not load the folder {model_id!r}: {reason}") from exc
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise AdapterLoadError(
            f"fastvit: could not load {model_id!r}{offline}: {reason}. Download it once where the Hub is "
            f"reachable (cached under HF_HOME), or `hf download {repo} --local-dir /models/x` and set "
            f'"model_id": "local-dir:/models/x".'
        ) from exc


def _folder(model_id: str, path: Path) -> str:
    """The timm name of a model folder, which must exist (a weights file needs its architecture named)."""
    if path.is_file():
        raise AdapterLoadError(
            f"fastvit: {model_id!r} is a file; name its architecture too, e.g. 'fastvit_t8:{model_id}'"
        )
    if not path.is_dir():
        raise missing_path("fastvit", path, "directory", _INSTEAD)
    return f"local-dir:{path}"
