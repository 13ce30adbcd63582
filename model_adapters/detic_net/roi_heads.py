"""Detic's cascade ROI heads: FPN maps + proposals -> per-stage class logits and refined boxes -> detections.

* ``ROIPooler``: detectron2's level rule ``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped to the pooled levels,
  then torchvision ``roi_align(aligned=True, sampling_ratio=0)`` per level (not ``MultiScaleRoIAlign``).
* Each stage: box head (flatten, fc1, ReLU, fc2, ReLU), zero-shot classifier (linear projection, L2 norm, times
  the temperature, dot product with L2-normalised text embeddings plus a zero background column), class-agnostic
  box regression MLP decoded with that stage's weights. Stages 1 and 2 start from the previous stage's boxes,
  clipped to the image; stage 0 takes the proposals unclipped.
* Scores: ``sqrt(mean_k sigmoid(logits_k) * proposal_score)``, optionally only each row's best class, then
  detectron2's ``fast_rcnn_inference`` (clip, strict threshold, per-class NMS, top-k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, roi_align

SCALE_CLAMP = math.log(1000.0 / 16)
CASCADE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


def apply_deltas(deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float]) -> Tensor:
    """detectron2 ``Box2BoxTransform.apply_deltas`` for class-agnostic (N, 4) deltas."""
    wx, wy, ww, wh = weights
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=SCALE_CLAMP)
    dh = (deltas[:, 3] / wh).clamp(max=SCALE_CLAMP)
    px, py = dx * widths + cx, dy * heights + cy
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """detectron2 ``Boxes.clip``: x into [0, width], y into [0, height]."""
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def roi_pool(feats: list[Tensor], strides: list[int], boxes: list[Tensor], size: int) -> Tensor:
    """detectron2 ``ROIPooler`` (ROIAlignV2) over ``feats`` (finest first): (sum N_i, C, size, size)."""
    all_boxes = torch.cat(boxes)
    batch_idx = torch.cat([torch.full((len(b), 1), i, dtype=all_boxes.dtype) for i, b in enumerate(boxes)])
    rois = torch.cat([batch_idx.to(all_boxes.device), all_boxes], dim=1)
    min_level, max_level = int(math.log2(strides[0])), int(math.log2(strides[-1]))
    area = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
    level = torch.floor(4 + torch.log2(torch.sqrt(area) / 224 + 1e-8)).clamp(min=min_level, max=max_level)
    level = level.to(torch.int64) - min_level
    out = feats[0].new_zeros(len(rois), feats[0].shape[1], size, size)
    for i, (feat, stride) in enumerate(zip(feats, strides, strict=True)):
        idx = (level == i).nonzero().squeeze(1)
        if idx.numel():
            out[idx] = roi_align(feat, rois[idx], size, 1.0 / stride, sampling_ratio=0, aligned=True)
    return out


class BoxHead(nn.Module):
    """detectron2 ``FastRCNNConvFCHead`` with two fully connected layers."""

    def __init__(self, in_dim: int, fc_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, 7, 7) pooled features -> (N, fc_dim)."""
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))


class ZeroShotClassifier(nn.Module):
    """Logits ``temperature * normalize(linear(x)) @ zs_weight``; ``zs_weight`` is (D, C + 1), column-normalised."""

    def __init__(self, in_dim: int, zs_dim: int, temperature: float = 50.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, zs_dim)
        self.temperature = temperature

    def forward(self, x: Tensor, zs_weight: Tensor) -> Tensor:
        """(N, in_dim) features -> (N, C + 1) logits."""
        return self.temperature * F.normalize(self.linear(x), p=2, dim=1) @ zs_weight


def classifier_weight(text_embeddings: Tensor) -> Tensor:
    """(C, D) text embeddings -> (D, C + 1) classifier with a zero background column, L2-normalised per column."""
    zs = torch.cat([text_embeddings.T.float(), text_embeddings.new_zeros(text_embeddings.shape[1], 1)], dim=1)
    return F.normalize(zs, p=2, dim=0)


class BoxPredictor(nn.Module):
    """Detic's output layers of one stage: zero-shot classifier and class-agnostic box MLP."""

    def __init__(self, fc_dim: int, zs_dim: int) -> None:
        super().__init__()
        self.cls_score = ZeroShotClassifier(fc_dim, zs_dim)
        self.bbox_pred = nn.Sequential(nn.Linear(fc_dim, fc_dim), nn.ReLU(), nn.Linear(fc_dim, 4))

    def forward(self, x: Tensor, zs_weight: Tensor) -> tuple[Tensor, Tensor]:
        """(N, fc_dim) features -> (logits (N, C + 1), deltas (N, 4))."""
        return self.cls_score(x, zs_weight), self.bbox_pred(x)


@dataclass(frozen=True)
class DetectionSettings:
    """``fast_rcnn_inference`` knobs and Detic's ``ONE_CLASS_PER_PROPOSAL``."""

    score_thresh: float = 0.02
    nms_thresh: float = 0.5
    max_detections: int = 100
    one_class_per_proposal: bool = True


@dataclass
class StageOutput:
    """One cascade stage on one image: input boxes, box-head features, logits, deltas, decoded boxes."""

    in_boxes: Tensor
    features: Tensor
    logits: Tensor
    deltas: Tensor
    pred_boxes: Tensor


class CascadeROIHeads(nn.Module):
    """Detic's three-stage cascade box heads (box pooler on p3-p5)."""

    def __init__(self, channels: int, fc_dim: int, zs_dim: int, strides: list[int], stages: int = 3) -> None:
        super().__init__()
        self.strides = strides
        self.box_head = nn.ModuleList(BoxHead(channels * 49, fc_dim) for _ in range(stages))
        self.box_predictor = nn.ModuleList(BoxPredictor(fc_dim, zs_dim) for _ in range(stages))

    def run_stages(
        self, feats: list[Tensor], proposals: list[Tensor], sizes: list[tuple[int, int]], zs_weight: Tensor
    ) -> list[list[StageOutput]]:
        """Per stage, per image: what went in and what came out (boxes in resized-image pixels)."""
        boxes = proposals
        stages = []
        for k, (head, predictor) in enumerate(zip(self.box_head, self.box_predictor, strict=True)):
            if k > 0:
                boxes = [clip_boxes(s.pred_boxes, h, w) for s, (h, w) in zip(stages[-1], sizes, strict=True)]
            x = head(roi_pool(feats, self.strides, boxes, 7))
            logits, deltas = predictor(x, zs_weight)
            pred = apply_deltas(deltas, torch.cat(boxes), CASCADE_WEIGHTS[k])
            counts = [len(b) for b in boxes]
            stages.append(
                [
                    StageOutput(b, *parts)
                    for b, *parts in zip(
                        boxes,
                        x.split(counts),
                        logits.split(counts),
                        deltas.split(counts),
                        pred.split(counts),
                        strict=True,
                    )
                ]
            )
        return stages


def fuse_scores(stage_logits: list[Tensor], proposal_scores: Tensor, one_class_per_proposal: bool) -> Tensor:
    """(N, C + 1) Detic scores: sqrt(mean of stage sigmoids * proposal score), optionally best class only."""
    scores = sum(logits.sigmoid() for logits in stage_logits) * (1.0 / len(stage_logits))
    scores = (scores * proposal_scores[:, None]) ** 0.5
    if one_class_per_proposal:
        scores = scores * (scores == scores[:, :-1].max(dim=1)[0][:, None]).float()
    return scores


def fast_rcnn_inference(
    boxes: Tensor, scores: Tensor, height: int, width: int, settings: DetectionSettings
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """detectron2 single-image inference, class-agnostic boxes -> (boxes, scores, classes, proposal index)."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    index = torch.arange(len(boxes), device=boxes.device)
    if not valid.all():
        boxes, scores, index = boxes[valid], scores[valid], index[valid]
    scores = scores[:, :-1]
    boxes = clip_boxes(boxes, height, width)
    mask = scores > settings.score_thresh
    where = mask.nonzero()
    boxes, scores = boxes[where[:, 0]], scores[mask]
    keep = batched_nms(boxes, scores, where[:, 1], settings.nms_thresh)
    if settings.max_detections >= 0:
        keep = keep[: settings.max_detections]
    return boxes[keep], scores[keep], where[keep, 1], index[where[keep, 0]]
