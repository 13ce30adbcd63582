"""open_clip models (MetaCLIP, Perception Encoder, EVA-CLIP, DFN, SigLIP, ...) as zero-shot classifiers.

load -> preprocess -> _forward -> postprocess (``ContrastiveClassifier``), like ``clip.py``, but every piece comes
from open_clip: the model's own eval transform, its tokenizer, normalised ``encode_image``/``encode_text``,
``logit_scale``, and ``logit_bias`` when the model has one (SigLIP-style models: sigmoid calibration, each prompt
on its own; otherwise a softmax over the prompts).

``model_id`` names an architecture and where its weights come from:

- ``"<architecture>/<tag>"``: a pair listed by ``open_clip.list_pretrained()``, e.g.
  ``"ViT-B-32-quickgelu/metaclip_400m"``, ``"ViT-H-14/metaclip_altogether"``, ``"PE-Core-B-16/meta"``,
  ``"EVA02-B-16/merged2b_s8b_b131k"``. open_clip downloads the weights from the Hub into ``HF_HOME`` (offline:
  only what is cached there).
- ``"<architecture>:<file>"``: an architecture from ``open_clip.list_models()`` with a local checkpoint (a state
  dict, or ``{"state_dict": ...}``, as ``.pt``/``.bin``/``.safetensors``), e.g. ``"ViT-B-32:/models/b32.pt"``.
- ``"local-dir:<folder>"`` or just ``"<folder>"``: a folder with ``open_clip_config.json`` and the weights, as
  ``hf download <repo> --local-dir <folder>`` writes for open_clip repos.
- ``"hf-hub:<org>/<repo>"``: a Hub repo in open_clip's layout, e.g. ``"hf-hub:timm/ViT-B-16-SigLIP2"``.

MetaCLIP 1 weights were trained with QuickGELU, so their variants use the ``-quickgelu`` architectures.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_adapters.base import AdapterLoadError
from model_adapters.classification import ContrastiveClassifier
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import local_path, missing_path, resize_rule_of_transform, resolve_device, resolve_dtype

__all__ = ["OpenClip", "parse_model_id"]

_INSTEAD = "an open_clip id such as 'ViT-B-32/openai' or 'ViT-B-32:/path/to/checkpoint.pt'"


def parse_model_id(model_id: str) -> tuple[str, str | None]:
    """Split a ``model_id`` into open_clip's ``(model_name, pretrained)``, checking names against open_clip's lists.

    Raises:
        AdapterLoadError: Unknown architecture or tag, missing file, or no weights named; the message lists
            the valid choices.
    """
    import open_clip

    if model_id.startswith("hf-hub:"):
        return model_id, None
    if model_id.startswith("local-dir:"):
        return _folder(Path(model_id.removeprefix("local-dir:")).expanduser()), None
    name, colon, file = model_id.partition(":")
    if colon and "/" not in name:  # <architecture>:<checkpoint file>
        _check_architecture(name, open_clip.list_models())
        path = Path(file).expanduser()
        if not path.is_file():
            raise missing_path("openclip", path, "file", _INSTEAD)
        return name, str(path)
    path = local_path(model_id)
    if path is not None and path.is_file():
        raise AdapterLoadError(
            f"openclip: {model_id!r} is a file; name its architecture too, e.g. 'ViT-B-32:{model_id}' "
            f"(architectures: open_clip.list_models())"
        )
    if path is not None:
        return _folder(path), None
    name, _, tag = model_id.partition("/")
    pairs = open_clip.list_pretrained()
    _check_architecture(name, sorted({arch for arch, _ in pairs}))
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        what = f"unknown pretrained tag {tag!r}" if tag else "no pretrained tag"
        known = ", ".join(f"{name}/{t}" for t in tags)
        raise AdapterLoadError(
            f"openclip: {what} in {model_id!r}; {name} has: {known}. "
            f'Local weights: "{name}:/path/to/checkpoint.pt" or "local-dir:/path/to/folder"'
        )
    return name, tag


def _folder(path: Path) -> str:
    """open_clip's name for a model folder, which must exist."""
    if not path.is_dir():
        raise missing_path("openclip", path, "directory", _INSTEAD)
    return f"local-dir:{path}"


def _check_architecture(name: str, known: Sequence[str]) -> None:
    """Refuse an architecture open_clip does not know, suggesting close names and listing the rest."""
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise AdapterLoadError(
            f"openclip: unknown architecture {name!r}{hint}. model_id is '<architecture>/<tag>' (see "
            f"open_clip.list_pretrained()), '<architecture>:<checkpoint file>', 'local-dir:<folder>' or "
            f"'hf-hub:<repo>'; architectures: {', '.join(known)}"
        )


@register_adapter
class OpenClip(ContrastiveClassifier):
    """Any open_clip image-text model; softmax over prompts, or per-prompt sigmoid when it has a logit bias."""

    name = "openclip"
    variants: Mapping[str, str] = {
        "metaclip_b32": "ViT-B-32-quickgelu/metaclip_400m",
        "metaclip_b16": "ViT-B-16-quickgelu/metaclip_400m",
        "metaclip_l14": "ViT-L-14-quickgelu/metaclip_fullcc",
        "metaclip_h14": "ViT-H-14-quickgelu/metaclip_fullcc",
        "metaclip_h14_altogether": "ViT-H-14/metaclip_altogether",
        "metaclip2_h14": "ViT-H-14-worldwide-quickgelu/metaclip2_worldwide",
        "pe_core_b16": "PE-Core-B-16/meta",
        "pe_core_l14": "PE-Core-L-14-336/meta",
        "pe_core_g14": "PE-Core-bigG-14-448/meta",
        "eva02_b16": "EVA02-B-16/merged2b_s8b_b131k",
        "eva02_l14": "EVA02-L-14/merged2b_s4b_b131k",
        "dfn_h14": "ViT-H-14-quickgelu/dfn5b",
        "siglip2_b16": "ViT-B-16-SigLIP2/webli",
    }
    default_variant = "metaclip_b32"

    def load(self) -> None:
        """Build the model with its weights (required), its eval transform and tokenizer."""
        import open_clip

        self.device = resolve_device(self.spec.device)
        self.dtype = resolve_dtype(self.spec.dtype, self.device)
        model_name, pretrained = parse_model_id(self.spec.model_id)
        try:
            model, self.transform = open_clip.create_model_from_pretrained(model_name, pretrained, device=self.device)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as exc:
            raise AdapterLoadError(_load_failure(self.spec.model_id, model_name, pretrained, exc)) from exc
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.resize_rule = resize_rule_of_transform(self.transform)
        self.calibration = "sigmoid" if getattr(self.model, "logit_bias", None) is not None else "softmax"  # type: ignore[misc]

    def preprocess_images(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """The model's own eval transform (resize, crop, normalisation), one PIL image at a time."""
        import torch
        from PIL import Image

        return {"pixel_values": torch.stack([self.transform(Image.fromarray(image)) for image in images])}

    def encode_images(self, batch: Mapping[str, Any]) -> Any:
        """L2-normalised image embeddings."""
        return self.model.encode_image(batch["pixel_values"], normalize=True)

    def encode_texts(self, texts: list[str]) -> Any:
        """L2-normalised text embeddings (the tokenizer pads to the model's context length)."""
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)

    def logit_scale(self) -> Any:
        """The learned temperature, exponentiated."""
        return self.model.logit_scale.exp()

    def logit_bias(self) -> Any:
        """The learned bias of sigmoid-trained models; 0 for the others."""
        bias = getattr(self.model, "logit_bias", None)
        return 0.0 if bias is None else bias


def _load_failure(model_id: str, model_name: str, pretrained: str | None, exc: Exception) -> str:
    """A load error that names the id and says how to get the weights onto an offline machine."""
    import open_clip

    reason = " ".join(str(exc).split()).rstrip(".")
    repo = (open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub") or "").rstrip("/") if pretrained else ""
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    hint = (
        f" Download it once where the Hub is reachable (it is cached under HF_HOME), or fetch it "
        f"(`hf download {repo} --local-dir /models/x`) and set "
        f'"model_id": "{model_name}:/models/x/<open_clip weights file>".'
        if repo
        else ""
    )
    return f"openclip: could not load {model_id!r}{offline}: {reason}.{hint}"
