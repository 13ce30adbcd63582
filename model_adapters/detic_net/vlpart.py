"""VLPart (R50, LVIS) network: padded batch -> FPN P2-P6 -> anchor RPN -> one ROI box stage -> boxes, masks.

Same building blocks as Detic (timm ResNet-50 with frozen BN, FPN, ROIAlign with detectron2's level rule, here
over p2-p5, zero-shot classifier, class-agnostic masks), with VLPart's differences: an anchor RPN instead of
CenterNet, a single box stage (weights 10, 10, 5, 5), and scores ``sqrt(sigmoid(logit) * sigmoid(objectness))``.
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
    DetectionSettings,
    apply_deltas,
    fast_rcnn_inference,
    roi_pool,
)
from model_adapters.detic_net.rpn import RPNSettings, StandardRPNHead, rpn_proposals

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


@dataclass(frozen=True)
class VLPartArch:
    """Sizes of a VLPart R50 network (``checkpoint.arch_from_state_dict`` reads them off a checkpoint)."""

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
    """VLPart's R50 detector (``VLMROIHeads``)."""

    def __init__(self, arch: VLPartArch) -> None:
        super().__init__()
        bottom_up = TimmResNet(arch.resnet_layers, arch.resnet_stem, arch.resnet_base_planes)
        self.backbone = FPN(bottom_up, ("layer2", "layer3", "layer4", "layer5"), arch.fpn_channels, "maxpool")
        self.rpn_strides = [4, 8, 16, 32, 64]
        self.roi_strides = [4, 8, 16, 32]
        self.rpn_head = StandardRPNHead(arch.fpn_channels, 3)
        self.roi_heads = nn.Module()  # the checkpoint's ``roi_heads.box_head`` / ``roi_heads.box_predictor``
        self.roi_heads.box_head = BoxHead(arch.fpn_channels * 49, arch.fc_dim)
        self.roi_heads.box_predictor = BoxPredictor(arch.fc_dim, arch.zs_dim)
        self.mask_head = MaskHead(arch.fpn_channels, arch.mask_conv_dim)

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of this (the stride of the last bottom-up map)."""
        return self.backbone.size_divisibility

    def box_stage(
        self, feats: dict[str, Tensor], sizes: list[tuple[int, int]], zs_weight: Tensor, settings: RPNSettings
    ) -> list[BoxStage]:
        """RPN proposals and the box stage, per image (boxes in resized-image pixels)."""
        logits, deltas = self.rpn_head([feats[f"p{lv}"] for lv in range(2, 7)])
        proposals = rpn_proposals(logits, deltas, self.rpn_strides, sizes, settings)
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
        stages = self.box_stage(feats, sizes, zs_weight, rpn_settings or RPNSettings())
        roi_feats = [feats[f"p{lv}"] for lv in range(2, 6)]
        results = []
        for i, (stage, size, original) in enumerate(zip(stages, sizes, original_sizes, strict=True)):
            scores = (stage.logits.sigmoid() * stage.objectness.sigmoid()[:, None]) ** 0.5
            boxes, det_scores, classes, index = fast_rcnn_inference(stage.pred_boxes, scores, *size, settings)
            results.append(
                self.postprocess_image(roi_feats, i, boxes, det_scores, classes, index, size, original, with_masks)
            )
        return results
