"""VLPart (R50 or Swin-B) open-vocabulary object and part detection with masks, from its official checkpoints.

load -> preprocess -> _forward -> postprocess, as ``detic.CheckpointDetector``: detectron2's resize, the
``detic_net.vlpart`` network (anchor RPN; one box stage for R50, a three-stage cascade for Swin-B, read off the
checkpoint; class-agnostic masks), prompts embedded as VLPart's demo
does (``"a " + name.lower()`` with ``:`` as a space, so ``"dog:head"`` reads "a dog head") by CLIP RN50's text
tower through open_clip (``RN50/openai``, 1024-d; the ``openclip`` extra). Boxes serve ``RectangleLabels``, masks
``PolygonLabels``/``BrushLabels``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from model_adapters.base import AdapterLoadError, SettingsError
from model_adapters.detic import NETWORK_MAX_DETECTIONS, NETWORK_NMS, PROMPT_PREFIX, CheckpointDetector, TextEncoder
from model_adapters.registry import register_adapter

__all__ = ["VLPart", "VLPartParams"]

_RELEASES = "https://github.com/PeizeSun/VLPart/releases/download/v0.1/"
DEFAULT_TEXT_ENCODER = "RN50/openai"
TEXT_ENCODER_FOLDER = "clip-rn50"  # an open_clip folder (``open_clip_config.json`` + weights) beside the checkpoint


@dataclass(frozen=True)
class VLPartParams:
    """Per-request knobs (defaults: VLPart's demo and configs).

    Attributes:
        score_threshold: Keep a detection whose score ``sqrt(sigmoid(class) * sigmoid(objectness))`` exceeds this
            (Swin-B: the class sigmoid is the mean of its three cascade stages).
        min_size: Shortest image edge after resizing (``INPUT.MIN_SIZE_TEST``).
        max_size: Longest image edge after resizing (``INPUT.MAX_SIZE_TEST``).
        text_encoder: open_clip id of CLIP RN50 (``"RN50/openai"``, ``"RN50:/path/file.pt"``,
            ``"local-dir:/folder"``); empty: the ``clip-rn50`` folder beside the checkpoint if there is one, else
            ``RN50/openai``.
        task: Set by the server from the control: ``"detection"`` (boxes only) or ``"segmentation"`` (and masks).
    """

    score_threshold: float = 0.5
    min_size: int = 800
    max_size: int = 1333
    text_encoder: str = ""
    task: Literal["detection", "segmentation"] = "detection"

    def __post_init__(self) -> None:
        """Refuse values the network cannot use."""
        if not 0 <= self.score_threshold < 1:
            raise SettingsError(f"vlpart.score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 64 <= self.min_size <= self.max_size:
            raise SettingsError(
                f"vlpart.min_size and max_size must satisfy 64 <= min_size <= max_size (like 800 and 1333), got "
                f"{self.min_size} and {self.max_size}"
            )


class OpenClipTextEncoder(TextEncoder):
    """open_clip text tower (VLPart's CLIP RN50)."""

    def load(self, model_id: str) -> Any:
        """Model and tokenizer from an open_clip id."""
        try:
            import open_clip

            from model_adapters.openclip import parse_model_id
        except ImportError as exc:
            raise AdapterLoadError(
                "vlpart: its prompts need open_clip (CLIP RN50); install the openclip extra"
            ) from exc
        try:
            name, pretrained = parse_model_id(model_id)
            model, _ = open_clip.create_model_from_pretrained(name, pretrained, device=self.device)
        except (AdapterLoadError, OSError, RuntimeError, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise SettingsError(
                f"vlpart.text_encoder {model_id!r} could not be loaded ({reason}); give an open_clip id such as "
                f"{DEFAULT_TEXT_ENCODER!r}"
            ) from exc
        return model.eval(), open_clip.get_tokenizer(name)

    def encode(self, model: Any, texts: list[str]) -> Any:
        """``encode_text`` without normalisation (the classifier normalises)."""
        clip, tokenizer = model
        return clip.encode_text(tokenizer(texts).to(self.device))


@register_adapter
class VLPart(CheckpointDetector):
    """VLPart R50 and Swin-B cascade (MIT) from its GitHub releases: objects and parts (``"dog:head"``)."""

    name = "vlpart"
    Params = VLPartParams
    network = "vlpart"
    text_folder = TEXT_ENCODER_FOLDER
    default_text_model = DEFAULT_TEXT_ENCODER
    variants: Mapping[str, str] = {
        "r50_lvis": _RELEASES + "r50_lvis.pth",
        "r50_lvis_paco": _RELEASES + "r50_lvis_paco.pth",
        "r50_lvis_paco_pascalpart": _RELEASES + "r50_lvis_paco_pascalpart.pth",
        "r50_pascalpart": _RELEASES + "r50_pascalpart.pth",
        "r50_partimagenet": _RELEASES + "r50_partimagenet.pth",
        "swinbase_cascade_lvis": _RELEASES + "swinbase_cascade_lvis.pth",
        "swinbase_cascade_lvis_paco": _RELEASES + "swinbase_cascade_lvis_paco.pth",
        "swinbase_cascade_lvis_paco_pascalpart": _RELEASES + "swinbase_cascade_lvis_paco_pascalpart.pth",
        "swinbase_cascade_pascalpart": _RELEASES + "swinbase_cascade_pascalpart.pth",
        "swinbase_cascade_partimagenet": _RELEASES + "swinbase_cascade_partimagenet.pth",
    }
    default_variant = "r50_lvis_paco_pascalpart"
    source = "VLPart's model zoo (github.com/facebookresearch/VLPart, MODEL_ZOO.md; R50 and Swin-B cascade checkpoints)"

    def text_encoder(self) -> TextEncoder:
        """CLIP RN50 through open_clip."""
        return OpenClipTextEncoder(self.device)

    def text_model_id(self, folder: str) -> str:
        """open_clip names a folder ``local-dir:<folder>``."""
        return f"local-dir:{folder}"

    def prompt_texts(self, prompts: tuple[str, ...]) -> tuple[str, ...]:
        """VLPart's ``get_clip_embeddings``: ``"a " + name.lower()`` with ``:`` as a space."""
        return tuple(PROMPT_PREFIX + p.lower().replace(":", " ") for p in prompts)

    def settings(self, params: VLPartParams) -> Any:
        """The request's threshold; the network's own NMS and cap."""
        from model_adapters.detic_net.roi_heads import DetectionSettings

        return DetectionSettings(params.score_threshold, NETWORK_NMS, NETWORK_MAX_DETECTIONS, False)
