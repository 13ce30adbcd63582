"""VLPart network: padded batch -> FPN P2-P6 -> anchor RPN -> ROI box stage(s) -> boxes, masks.

Same building blocks as Detic (timm ResNet-50 with frozen BN or Swin-B, FPN, ROIAlign with detectron2's level rule,
here over p2-p5, zero-shot classifier, class-agnostic masks), with VLPart's differences: an anchor RPN instead of
CenterNet and a P6 max-pool instead of P6/P7 convs. Two heads, as its configs build them:

* R50 (``VLMROIHeads``): one box stage (weights 10, 10, 5, 5), scores ``sqrt(sigmoid(logit) * sigmoid(objectness))``.
* Swin-B (``CascadeVLMROIHeads``): Swin with all four stage outputs (``swin0..3``, ``norm0..3``) and Detic's three
  class-agnostic cascade stages, scores ``sqrt(mean_k sigmoid(logit_k) * sigmoid(objectness))``. Unlike Detic there
  is no one-class-per-proposal filter and stage 0 takes the RPN's (already clipped) proposals.

Inputs and outputs are those of ``DeticNet.forward``; the classifier's width is the text encoder's (1024 for the
CLIP RN50 embeddings VLPart was trained with).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model_adapters.detic_net.fpn import FPN
from model_adapters.detic_net.masks import MaskHead
from model_adapters.detic_net.model import Detections, MaskedDetector
from model_adapters.detic_net.resnet import TimmResNet
from model_adapters.detic_net.roi_heads import (
    BoxHead,
    BoxPredictor,
    CascadeROIHeads,
    DetectionSettings,
    StageOutput,
    apply_deltas,
    fast_rcnn_inference,
    fuse_scores,
    roi_pool,
)
from model_adapters.detic_net.rpn import RPNSettings, StandardRPNHead, rpn_proposals
from model_adapters.detic_net.swin import SwinBackbone

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


@dataclass(frozen=True)
class VLPartArch:
    """Sizes of a VLPart network (``checkpoint.arch_from_state_dict`` reads them off a checkpoint).

    ``backbone`` is ``"resnet"`` (R50, one box stage) or ``"swin"`` (Swin-B, three cascade stages).
    """

    backbone: str = "resnet"
    swin_embed_dim: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window: int = 7
    resnet_layers: tuple[int, ...] = (3, 4, 6, 3)
    resnet_stem: int = 64
    resnet_base_planes: int = 64
    fpn_channels: int = 256
    fc_dim: int = 1024
    zs_dim: int = 1024
    mask_conv_dim: int = 256


@dataclass
class BoxStage:
    """The single box stage on one image: proposals, their objectness logits, class logits, deltas, boxes."""

    in_boxes: Tensor
    objectness: Tensor
    logits: Tensor
    deltas: Tensor
    pred_boxes: Tensor


class VLPartNet(MaskedDetector):
    """VLPart's R50 detector (``VLMROIHeads``) or Swin-B cascade detector (``CascadeVLMROIHeads``)."""

    def __init__(self, arch: VLPartArch) -> None:
        super().__init__()
        self.cascade = arch.backbone == "swin"
        if self.cascade:
            bottom_up: nn.Module = SwinBackbone(
                arch.swin_embed_dim, arch.swin_depths, arch.swin_heads, arch.swin_window, out_indices=(0, 1, 2, 3)
            )
            in_features = ("swin0", "swin1", "swin2", "swin3")
        else:
            bottom_up = TimmResNet(arch.resnet_layers, arch.resnet_stem, arch.resnet_base_planes)
            in_features = ("layer2", "layer3", "layer4", "layer5")
        self.backbone = FPN(bottom_up, in_features, arch.fpn_channels, "maxpool")
        self.rpn_strides = [4, 8, 16, 32, 64]
        self.roi_strides = [4, 8, 16, 32]
        self.rpn_head = StandardRPNHead(arch.fpn_channels, 3)
        self.roi_heads: nn.Module
        if self.cascade:
            self.roi_heads = CascadeROIHeads(arch.fpn_channels, arch.fc_dim, arch.zs_dim, self.roi_strides)
        else:
            self.roi_heads = nn.Module()  # the checkpoint's ``roi_heads.box_head`` / ``roi_heads.box_predictor``
            self.roi_heads.box_head = BoxHead(arch.fpn_channels * 49, arch.fc_dim)
            self.roi_heads.box_predictor = BoxPredictor(arch.fc_dim, arch.zs_dim)
        self.mask_head = MaskHead(arch.fpn_channels, arch.mask_conv_dim)

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of this (the stride of the last bottom-up map)."""
        return self.backbone.size_divisibility

    def proposals(
        self, feats: dict[str, Tensor], sizes: list[tuple[int, int]], settings: RPNSettings
    ) -> list[tuple[Tensor, Tensor]]:
        """Per image: RPN proposal boxes (resized-image pixels, clipped) and their objectness logits."""
        logits, deltas = self.rpn_head([feats[f"p{lv}"] for lv in range(2, 7)])
        return rpn_proposals(logits, deltas, self.rpn_strides, sizes, settings)

    def box_stage(
        self, feats: dict[str, Tensor], sizes: list[tuple[int, int]], zs_weight: Tensor, settings: RPNSettings
    ) -> list[BoxStage]:
        """R50: RPN proposals and the box stage, per image (boxes in resized-image pixels)."""
        proposals = self.proposals(feats, sizes, settings)
        return self.run_box_head([feats[f"p{lv}"] for lv in range(2, 6)], proposals, zs_weight)

    def run_box_head(
        self, roi_feats: list[Tensor], proposals: list[tuple[Tensor, Tensor]], zs_weight: Tensor
    ) -> list[BoxStage]:
        """Per image (proposal boxes, objectness logits) -> the box stage's logits, deltas and decoded boxes."""
        boxes = [p[0] for p in proposals]
        pooled = roi_pool(roi_feats, self.roi_strides, boxes, 7)
        cls_logits, box_deltas = self.roi_heads.box_predictor(self.roi_heads.box_head(pooled), zs_weight)
        pred = apply_deltas(box_deltas, torch.cat(boxes), BOX_WEIGHTS)
        counts = [len(b) for b in boxes]
        return [
            BoxStage(p[0], p[1], lg, dt, pb)
            for p, lg, dt, pb in zip(
                proposals, cls_logits.split(counts), box_deltas.split(counts), pred.split(counts), strict=True
            )
        ]

    def run_cascade(
        self,
        roi_feats: list[Tensor],
        proposals: list[tuple[Tensor, Tensor]],
        sizes: list[tuple[int, int]],
        zs_weight: Tensor,
    ) -> list[list[StageOutput]]:
        """Swin-B: per image, the three cascade stages run on the RPN proposals (Detic's cascade code)."""
        stages = self.roi_heads.run_stages(roi_feats, [p[0] for p in proposals], sizes, zs_weight)
        return [list(per_image) for per_image in zip(*stages, strict=True)]

    def forward(
        self,
        images: Tensor,
        sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        zs_weight: Tensor,
        rpn_settings: RPNSettings | None = None,
        settings: DetectionSettings | None = None,
        with_masks: bool = True,
    ) -> list[Detections]:
        """Padded batch -> one ``Detections`` per image in original-image pixels."""
        settings = settings or DetectionSettings()
        feats = self.backbone(images)
        proposals = self.proposals(feats, sizes, rpn_settings or RPNSettings())
        roi_feats = [feats[f"p{lv}"] for lv in range(2, 6)]
        per_image = self.run_cascade(roi_feats, proposals, sizes, zs_weight) if self.cascade else [
            [s] for s in self.run_box_head(roi_feats, proposals, zs_weight)]  # fmt: skip
        results = []
        for i, (stages, (_, objectness), size, original) in enumerate(
            zip(per_image, proposals, sizes, original_sizes, strict=True)
        ):
            # The one-stage head's sqrt(sigmoid * objectness) is this fusion with a single stage.
            scores = fuse_scores([s.logits for s in stages], objectness.sigmoid(), one_class_per_proposal=False)
            boxes, det_scores, classes, index = fast_rcnn_inference(stages[-1].pred_boxes, scores, *size, settings)
            results.append(
                self.postprocess_image(roi_feats, i, boxes, det_scores, classes, index, size, original, with_masks)
            )
        return results
