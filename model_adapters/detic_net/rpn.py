"""detectron2's anchor RPN as VLPart uses it: FPN maps ``p2..p6`` -> proposals with objectness logits.

Head: shared conv3x3 + ReLU, then 1x1 convs for objectness (A per cell) and deltas (4A). Anchors: one size per
level (32..512) times aspect ratios (0.5, 1, 2), centred on ``stride * (x, y)`` (offset 0). Per level the
``pre_nms_topk`` highest logits are kept, boxes decoded with weights (1, 1, 1, 1), clipped, empty ones dropped,
NMS per level (``batched_nms`` by level), then the first ``post_nms_topk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from model_adapters.detic_net.roi_heads import apply_deltas, clip_boxes


class StandardRPNHead(nn.Module):
    """detectron2's ``StandardRPNHead`` with one hidden conv."""

    def __init__(self, channels: int, anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.objectness_logits = nn.Conv2d(channels, anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, anchors * 4, 1)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """-> (objectness logits [(B, A, H, W)], deltas [(B, 4A, H, W)])."""
        logits, deltas = [], []
        for feat in feats:
            hidden = F.relu(self.conv(feat))
            logits.append(self.objectness_logits(hidden))
            deltas.append(self.anchor_deltas(hidden))
        return logits, deltas


def cell_anchors(size: float, ratios: tuple[float, ...]) -> Tensor:
    """(A, 4) anchors centred on 0: area ``size**2``, height / width = ratio."""
    out = []
    for ratio in ratios:
        w = math.sqrt(size * size / ratio)
        h = ratio * w
        out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out)


def grid_anchors(h: int, w: int, stride: int, base: Tensor) -> Tensor:
    """(H * W * A, 4) anchors, location-major as detectron2 orders them."""
    xs = torch.arange(0, w * stride, step=stride, dtype=torch.float32)
    ys = torch.arange(0, h * stride, step=stride, dtype=torch.float32)
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([sx.reshape(-1), sy.reshape(-1), sx.reshape(-1), sy.reshape(-1)], dim=1)
    return (shifts[:, None, :] + base[None].to(shifts)).reshape(-1, 4)


@dataclass(frozen=True)
class RPNSettings:
    """Test-time RPN knobs (VLPart's configs' values as defaults)."""

    sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_topk: int = 1000
    post_nms_topk: int = 1000
    nms_thresh: float = 0.7


def rpn_proposals(
    logits: list[Tensor],
    deltas: list[Tensor],
    strides: list[int],
    sizes: list[tuple[int, int]],
    settings: RPNSettings,
) -> list[tuple[Tensor, Tensor]]:
    """Per image: (boxes (N, 4) clipped to the resized image, objectness logits (N,)), best first."""
    boxes_per_level, scores_per_level, level_ids = [], [], []
    for level, (lg, dt, stride, size) in enumerate(zip(logits, deltas, strides, settings.sizes, strict=False)):
        b, a, h, w = lg.shape
        anchors = grid_anchors(h, w, stride, cell_anchors(size, settings.ratios)).to(lg.device)
        score = lg.permute(0, 2, 3, 1).reshape(b, -1)
        delta = dt.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        decoded = apply_deltas(delta.reshape(-1, 4), anchors.repeat(b, 1), (1.0, 1.0, 1.0, 1.0)).view(b, -1, 4)
        k = min(settings.pre_nms_topk, score.shape[1])
        top_score, top_idx = score.topk(k, dim=1)
        boxes_per_level.append(torch.gather(decoded, 1, top_idx[..., None].expand(-1, -1, 4)))
        scores_per_level.append(top_score)
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=lg.device))
    all_boxes, all_scores, all_levels = (
        torch.cat(boxes_per_level, 1),
        torch.cat(scores_per_level, 1),
        torch.cat(level_ids),
    )
    results = []
    for i, (h, w) in enumerate(sizes):
        boxes, scores, levels = all_boxes[i], all_scores[i], all_levels
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        if not valid.all():
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes = clip_boxes(boxes, h, w)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, settings.nms_thresh)[: settings.post_nms_topk]
        results.append((boxes[keep], scores[keep]))
    return results
