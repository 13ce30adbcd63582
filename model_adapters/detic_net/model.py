"""The Detic network: padded batch -> FPN -> CenterNet proposals -> cascade ROI heads -> boxes, classes, masks.

``DeticNet.forward`` takes the tensor from ``preprocess.batch_images``, the resized (h, w) per image, the original
(H, W) per image and a (D, C + 1) classifier (``roi_heads.classifier_weight``); it returns one ``Detections``
per image in original-image pixels, as detectron2's ``detector_postprocess`` leaves them (boxes scaled and
clipped, empty boxes dropped, masks pasted at the original size). CoDet shares this network; only its
checkpoint carries extra training-time keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from model_adapters.detic_net.centernet import CenterNetHead, ProposalSettings, decode_proposals
from model_adapters.detic_net.fpn import FPN
from model_adapters.detic_net.masks import MaskHead, paste_masks
from model_adapters.detic_net.resnet import TimmResNet
from model_adapters.detic_net.roi_heads import (
    CascadeROIHeads,
    DetectionSettings,
    clip_boxes,
    fast_rcnn_inference,
    fuse_scores,
    roi_pool,
)
from model_adapters.detic_net.swin import SwinBackbone


@dataclass(frozen=True)
class DeticArch:
    """Sizes of one Detic network; ``checkpoint.arch_from_state_dict`` reads them off a checkpoint."""

    backbone: str  # "swin" or "resnet"
    swin_embed_dim: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window: int = 7
    resnet_layers: tuple[int, ...] = (3, 4, 6, 3)
    resnet_stem: int = 64
    resnet_base_planes: int = 64
    fpn_channels: int = 256
    fc_dim: int = 1024
    zs_dim: int = 512
    mask_conv_dim: int = 256


@dataclass
class Detections:
    """One image's detections: boxes (N, 4) xyxy, scores (N,), classes (N,), masks (N, H, W) bool or None."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    masks: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class MaskedDetector(nn.Module):
    """The class-agnostic mask head and detectron2's ``detector_postprocess``, shared by Detic and VLPart.

    Subclasses set ``mask_head`` and ``roi_strides``.
    """

    mask_head: MaskHead
    roi_strides: list[int]

    def mask_logits(self, roi_feats: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """(N, 1, 28, 28) mask logits for boxes in resized-image pixels (14x14 ROIAlign on the ROI levels)."""
        return self.mask_head(roi_pool(roi_feats, self.roi_strides, boxes, 14))

    def postprocess_image(
        self,
        roi_feats: list[Tensor],
        i: int,
        boxes: Tensor,
        scores: Tensor,
        classes: Tensor,
        index: Tensor,
        size: tuple[int, int],
        original: tuple[int, int],
        with_masks: bool,
    ) -> Detections:
        """detectron2 ``detector_postprocess``: scale to the original size, clip, drop empty boxes, paste masks."""
        logits = None
        if with_masks and len(boxes):
            logits = self.mask_logits([f[i : i + 1] for f in roi_feats], [boxes])
        (h, w), (oh, ow) = size, original
        out = boxes.clone()
        out[:, 0::2] *= ow / w
        out[:, 1::2] *= oh / h
        out = clip_boxes(out, oh, ow)
        keep = ((out[:, 2] - out[:, 0]) > 0) & ((out[:, 3] - out[:, 1]) > 0)
        masks = None
        if with_masks:
            if logits is None:
                masks = torch.zeros(0, oh, ow, dtype=torch.bool)
            else:
                masks = paste_masks(logits[keep, 0].sigmoid(), out[keep], oh, ow)
        extras = {"proposal_index": index[keep], "resized_boxes": boxes[keep]}
        if logits is not None:
            extras["mask_logits"] = logits[keep]
        return Detections(out[keep], scores[keep], classes[keep], masks, extras)


class DeticNet(MaskedDetector):
    """Backbone + FPN, CenterNet proposals, three-stage cascade and mask head of Detic/CoDet."""

    def __init__(self, arch: DeticArch) -> None:
        super().__init__()
        self.arch = arch
        if arch.backbone == "swin":
            bottom_up: nn.Module = SwinBackbone(
                arch.swin_embed_dim, arch.swin_depths, arch.swin_heads, arch.swin_window
            )
            in_features = ("swin1", "swin2", "swin3")
        else:
            bottom_up = TimmResNet(arch.resnet_layers, arch.resnet_stem, arch.resnet_base_planes)
            in_features = ("layer3", "layer4", "layer5")
        self.backbone = FPN(bottom_up, in_features, arch.fpn_channels)
        self.proposal_strides = [8, 16, 32, 64, 128]
        self.roi_strides = [8, 16, 32]
        self.centernet_head = CenterNetHead(arch.fpn_channels, len(self.proposal_strides))
        self.roi_heads = CascadeROIHeads(arch.fpn_channels, arch.fc_dim, arch.zs_dim, self.roi_strides)
        self.mask_head = MaskHead(arch.fpn_channels, arch.mask_conv_dim)

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of this (the stride of the last bottom-up map)."""
        return self.backbone.size_divisibility

    def forward(
        self,
        images: Tensor,
        sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        zs_weight: Tensor,
        proposal_settings: ProposalSettings | None = None,
        settings: DetectionSettings | None = None,
        with_masks: bool = True,
    ) -> list[Detections]:
        """Padded batch -> one ``Detections`` per image in original-image pixels."""
        proposal_settings = proposal_settings or ProposalSettings()
        settings = settings or DetectionSettings()
        feats = self.backbone(images)
        heatmaps, regs = self.centernet_head([feats[f"p{lv}"] for lv in range(3, 8)])
        proposals = decode_proposals(heatmaps, regs, self.proposal_strides, proposal_settings)
        roi_feats = [feats["p3"], feats["p4"], feats["p5"]]
        stages = self.roi_heads.run_stages(roi_feats, [p[0] for p in proposals], sizes, zs_weight)
        results = []
        for i, ((h, w), (oh, ow)) in enumerate(zip(sizes, original_sizes, strict=True)):
            scores = fuse_scores([s[i].logits for s in stages], proposals[i][1], settings.one_class_per_proposal)
            boxes, det_scores, classes, index = fast_rcnn_inference(stages[-1][i].pred_boxes, scores, h, w, settings)
            results.append(
                self.postprocess_image(roi_feats, i, boxes, det_scores, classes, index, (h, w), (oh, ow), with_masks)
            )
        return results
