"""SAM (Segment Anything): masks from boxes and clicks, through transformers or Meta's ``segment_anything``.

``embed_image`` runs the ViT image encoder once per image; ``decode`` runs the prompt encoder and mask decoder
on the cached embedding, so a click costs only the light decoder. Nothing is kept on the model between calls
(no predictor ``set_image`` state), so concurrent requests on different images cannot mix.

Decode rules (shared by SAM 2, see ``decode_groups`` and ``use_multimask``):

- All boxes of an image go through ONE decoder call, one mask each.
- All clicks together (positive 1, negative 0) make one mask; with exactly one box, box and clicks make one mask;
  with several boxes, the clicks' mask comes after the boxes' masks.
- ``multimask="auto"`` (SAM's own advice): a single click without a box is ambiguous (part or whole?), so the
  decoder proposes three masks and the one with the highest predicted IoU is kept; every other prompt asks for
  the single-mask output. ``"always"``/``"never"`` force one way.
- Confidence is the decoder's predicted IoU of the kept mask, clipped to [0, 1]: the IoU head is a plain
  regression, which can predict a little below 0 or above 1, and scores must be probabilities.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import supervision as sv

from model_adapters.base import AdapterLoadError, ResizeRule
from model_adapters.registry import register_adapter
from model_adapters.segmentation import Click, MaskPrompt, PromptableSegmenter, masks_to_detections
from model_adapters.torch_utils import (
    CHANNELS_LAST,
    SEGMENTER_MAX_SIDE,
    load_transformers_model,
    missing_path,
    resolve_device,
)

__all__ = ["Sam", "SamDecoding", "SamOriginal", "SamParams", "TransformersSam", "decode_groups", "use_multimask"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SamParams:
    """Per-request knobs of the SAM family.

    Attributes:
        mask_threshold: Mask logits above this are inside the mask (SAM's own value is 0.0).
        multimask: ``"auto"``: best of three masks for a lone click, single-mask output otherwise;
            ``"always"``: best of three for every prompt; ``"never"``: always the single-mask output.
    """

    mask_threshold: float = 0.0
    multimask: Literal["auto", "always", "never"] = "auto"


def decode_groups(prompt: MaskPrompt) -> list[tuple[tuple[Box, ...], tuple[Click, ...]]]:
    """Split a prompt into decoder calls: ``(boxes, clicks)`` pairs, boxes' masks first, then the clicks' mask."""
    if len(prompt.boxes) == 1 and prompt.clicks:
        return [(prompt.boxes, prompt.clicks)]
    groups: list[tuple[tuple[Box, ...], tuple[Click, ...]]] = []
    if prompt.boxes:
        groups.append((prompt.boxes, ()))
    if prompt.clicks:
        groups.append(((), prompt.clicks))
    return groups


def use_multimask(rule: str, boxes: tuple[Box, ...], clicks: tuple[Click, ...]) -> bool:
    """Whether to ask for three masks and keep the best by predicted IoU (see the module docstring)."""
    return rule == "always" or (rule == "auto" and not boxes and len(clicks) == 1)


def _best(masks: Any, iou: Any) -> tuple[Any, Any]:
    """Keep each prompt's mask with the highest predicted IoU: ``(B, M, h, w), (B, M) -> (B, 1, h, w), (B,)``."""
    import torch

    best = iou.argmax(dim=-1)
    rows = torch.arange(len(best), device=best.device)
    return masks[rows, best][:, None], iou[rows, best]


class SamDecoding(PromptableSegmenter[SamParams]):
    """``decode`` for the SAM family: the prompt split into decoder calls; subclasses run one call."""

    Params = SamParams
    max_batch_size = 1

    def decode(
        self, embedding: Mapping[str, Any], image: np.ndarray, prompt: MaskPrompt, params: SamParams | None = None
    ) -> sv.Detections:
        """One mask per box (one decoder call for all), one for the clicks, scored by predicted IoU in [0, 1].

        ``params`` defaults to ``SamParams()``.
        """
        params = params or SamParams()
        masks, scores = [np.zeros((0, *image.shape[:2]), dtype=bool)], [np.zeros(0, dtype=np.float32)]
        for boxes, clicks in decode_groups(prompt):
            multimask = use_multimask(params.multimask, boxes, clicks)
            group_masks, group_scores = self._predict(embedding, boxes, clicks, multimask, params.mask_threshold)
            masks.append(group_masks)
            scores.append(group_scores)
        return masks_to_detections(np.concatenate(masks), np.clip(np.concatenate(scores), 0.0, 1.0))

    @abstractmethod
    def _predict(
        self,
        embedding: Mapping[str, Any],
        boxes: tuple[Box, ...],
        clicks: tuple[Click, ...],
        multimask: bool,
        threshold: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One decoder call: bool masks ``(N, H, W)`` and predicted IoUs ``(N,)``, one per box or one for clicks."""


class TransformersSam(SamDecoding):
    """Shared code of transformers' SAM and SAM 2; subclasses say how to encode and to upscale."""

    model_class: ClassVar[str]
    model_type: ClassVar[str]

    def load(self) -> None:
        """Load the processor and the model; refuse a checkpoint of another family."""
        self.processor, self.model = load_transformers_model(self, self.model_class, (self.model_type,))

    def embed_image(self, image: np.ndarray) -> dict[str, Any]:
        """Image embedding plus the sizes ``decode`` needs to map pixels in and masks out."""
        inputs = self.processor.image_processor(images=image, return_tensors="pt", input_data_format=CHANNELS_LAST)
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        return {"embeddings": self.model.get_image_embeddings(pixels), **self._sizes(inputs, image.shape[:2])}

    def _sizes(self, inputs: Mapping[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """SAM resizes the longest side and pads: coordinates scale by the resized over the original size."""
        height, width = (int(v) for v in inputs["reshaped_input_sizes"][0])
        return {"original_size": size, "input_size": (height, width), "scale": (width / size[1], height / size[0])}

    def _upscale(self, masks: Any, embedding: Mapping[str, Any], threshold: float) -> Any:
        """Low-res logits ``(B, 1, h, w)`` to bool masks ``(B, H, W)``, as the processor's ``post_process_masks``."""
        sizes = [embedding["original_size"]], [embedding["input_size"]]
        return self.processor.post_process_masks(masks[None], *sizes, mask_threshold=threshold)[0][:, 0]

    def _predict(
        self,
        embedding: Mapping[str, Any],
        boxes: tuple[Box, ...],
        clicks: tuple[Click, ...],
        multimask: bool,
        threshold: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        sx, sy = embedding["scale"]
        prompts: dict[str, Any] = {}
        if boxes:  # (1, B, 4) in the model's input frame
            prompts["input_boxes"] = torch.as_tensor(np.asarray(boxes, dtype=np.float64) * [sx, sy, sx, sy])[None]
        if clicks:  # one object: (1, 1, K, 2) points, (1, 1, K) labels
            points = np.asarray([[c.x * sx, c.y * sy] for c in clicks], dtype=np.float64)
            prompts["input_points"] = torch.as_tensor(points)[None, None]
            prompts["input_labels"] = torch.as_tensor([[[int(c.positive) for c in clicks]]], device=self.device)
        prompts = {k: v.to(self.device, self.dtype if v.is_floating_point() else None) for k, v in prompts.items()}
        out = self.model(image_embeddings=embedding["embeddings"], multimask_output=multimask, **prompts)
        masks, iou = _best(out.pred_masks[0], out.iou_scores[0])
        full = self._upscale(masks.float(), embedding, threshold)
        return full.cpu().numpy(), iou.float().cpu().numpy()


@register_adapter
class Sam(TransformersSam):
    """SAM ViT-B/L/H in transformers (``SamModel`` + ``SamProcessor``)."""

    name = "sam"
    variants: Mapping[str, str] = {
        "base": "facebook/sam-vit-base",
        "large": "facebook/sam-vit-large",
        "huge": "facebook/sam-vit-huge",
    }
    default_variant = "base"
    model_class = "SamModel"
    model_type = "sam"


# ViT widths of the official checkpoints; everything else in them is shared (1024 px, 256-d prompts).
_ORIGINAL_VARIANTS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_ORIGINAL_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@register_adapter
class SamOriginal(SamDecoding):
    """SAM from Meta's ``segment_anything`` package, for the original ``.pth`` checkpoints.

    ``model_id`` is the checkpoint path. Its variant (vit_b/l/h) is read from the ViT width in the checkpoint
    and the model built by ``sam_model_registry``. A checkpoint of any other size needs a JSON file beside it,
    ``<checkpoint stem>.json``, holding the builder's sizes (``encoder_embed_dim``, ``encoder_depth``,
    ``encoder_num_heads``, ``encoder_global_attn_indexes``, ``prompt_embed_dim``, ``image_size``,
    ``vit_patch_size``, ``window_size``, ``mask_in_chans``, ``decoder_mlp_dim``, ``decoder_num_heads``,
    ``iou_head_depth``, ``iou_head_hidden_dim``), because the decoder's head count is not in the weights.
    """

    name = "segment_anything"
    variants: Mapping[str, str] = {
        "vit_b": "sam_vit_b_01ec64.pth",
        "vit_l": "sam_vit_l_0b3195.pth",
        "vit_h": "sam_vit_h_4b8939.pth",
    }
    default_variant = "vit_b"

    def load(self) -> None:
        """Read the checkpoint, build the matching ``Sam`` and its (stateless) resize transform."""
        import torch
        from segment_anything import sam_model_registry
        from segment_anything.utils.transforms import ResizeLongestSide

        self.device = resolve_device(self.spec.device)
        self.resize_rule = ResizeRule(longest=SEGMENTER_MAX_SIDE)
        if self.spec.dtype not in ("auto", "float32"):  # its prompt encoder casts coordinates to float32
            raise AdapterLoadError(f"segment_anything runs in float32 only; got dtype {self.spec.dtype!r}")
        self.dtype = torch.float32
        path = Path(self.spec.model_id).expanduser()
        if not path.is_file():
            instead = f"a checkpoint downloaded from e.g. {_ORIGINAL_URL}{self.variants[self.default_variant]}"
            raise missing_path("segment_anything", path, "file", instead)
        state = torch.load(path, map_location="cpu", weights_only=True)
        sizes = path.with_suffix(".json")
        if sizes.is_file():
            model = build_original_sam(**json.loads(sizes.read_text()))
        else:
            width = state["image_encoder.patch_embed.proj.weight"].shape[0]
            if width not in _ORIGINAL_VARIANTS:
                raise AdapterLoadError(f"segment_anything: {path} has a {width}-wide ViT, not SAM's; add {sizes.name}")
            model = sam_model_registry[_ORIGINAL_VARIANTS[width]]()
        model.load_state_dict(state)
        self.model = model.to(self.device, self.dtype).eval()
        self.transform = ResizeLongestSide(model.image_encoder.img_size)

    def embed_image(self, image: np.ndarray) -> dict[str, Any]:
        """``SamPredictor.set_image`` without the predictor: resize, normalise and pad, encode; keep the sizes."""
        import torch

        resized = torch.as_tensor(self.transform.apply_image(image), device=self.device)
        resized = resized.permute(2, 0, 1).contiguous()[None]
        features = self.model.image_encoder(self.model.preprocess(resized).to(self.dtype))
        return {"features": features, "original_size": image.shape[:2], "input_size": tuple(resized.shape[-2:])}

    def _predict(
        self,
        embedding: Mapping[str, Any],
        boxes: tuple[Box, ...],
        clicks: tuple[Click, ...],
        multimask: bool,
        threshold: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        size = embedding["original_size"]
        points = box_tensor = None
        if clicks:
            coords = self.transform.apply_coords(np.asarray([[c.x, c.y] for c in clicks], dtype=float), size)
            labels = torch.as_tensor([[int(c.positive) for c in clicks]], dtype=torch.int, device=self.device)
            points = (torch.as_tensor(coords, dtype=self.dtype, device=self.device)[None], labels)
        if boxes:
            box_array = self.transform.apply_boxes(np.asarray(boxes, dtype=float), size)
            box_tensor = torch.as_tensor(box_array, dtype=self.dtype, device=self.device)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=box_tensor, masks=None)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=embedding["features"],
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        low_res, iou = _best(low_res, iou)
        full = self.model.postprocess_masks(low_res.float(), embedding["input_size"], size)[:, 0] > threshold
        return full.cpu().numpy(), iou.float().cpu().numpy()


def build_original_sam(
    *,
    encoder_embed_dim: int = 768,
    encoder_depth: int = 12,
    encoder_num_heads: int = 12,
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    prompt_embed_dim: int = 256,
    image_size: int = 1024,
    vit_patch_size: int = 16,
    window_size: int = 14,
    mask_in_chans: int = 16,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
) -> Any:
    """``segment_anything``'s ``_build_sam`` with every size exposed (defaults: ViT-B)."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = image_size // vit_patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth,
            embed_dim=encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=encoder_num_heads,
            patch_size=vit_patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(encoder_global_attn_indexes),
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
