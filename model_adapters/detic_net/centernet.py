"""CenterNet2's class-agnostic proposal stage as Detic uses it: FPN maps ``p3..p7`` -> scored proposal boxes.

Head: a shared 4x(conv3x3, GroupNorm(32), ReLU) box tower per level, a 1-channel heatmap conv (``agn_hm``) and a
4-channel ltrb regression conv scaled per level and ReLU'd (in stride units). Decoding: heatmap sigmoid over
``score_thresh`` (strict), per-level top ``pre_nms_topk``, boxes around cell centres (``x2 >= x1 + 0.01``), score
``sqrt(sigmoid)``, class-agnostic NMS, then a ``kthvalue`` cut to ``post_nms_topk`` that keeps ties. Boxes are
not clipped (stage 0 of the cascade sees them as they are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms


class Scale(nn.Module):
    """A learned per-level scalar (CenterNet's ``Scale``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        """Multiply by the learned scale."""
        return x * self.scale


class CenterNetHead(nn.Module):
    """CenterNet's proposal head: shared box tower, heatmap and ltrb regression convs."""

    def __init__(self, channels: int, num_levels: int, num_convs: int = 4) -> None:
        super().__init__()
        tower: list[nn.Module] = []
        for _ in range(num_convs):
            tower += [nn.Conv2d(channels, channels, 3, 1, 1), nn.GroupNorm(32, channels), nn.ReLU()]
        self.bbox_tower = nn.Sequential(*tower)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        self.bbox_pred = nn.Conv2d(channels, 4, 3, 1, 1)
        self.agn_hm = nn.Conv2d(channels, 1, 3, 1, 1)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """-> (heatmap logits [(B, 1, H, W)], ltrb regression in stride units [(B, 4, H, W)])."""
        heatmaps, regs = [], []
        for level, feat in enumerate(feats):
            tower = self.bbox_tower(feat)
            heatmaps.append(self.agn_hm(tower))
            regs.append(F.relu(self.scales[level](self.bbox_pred(tower))))
        return heatmaps, regs


@dataclass(frozen=True)
class ProposalSettings:
    """CenterNet's test-time proposal knobs (Detic's configs' values as defaults)."""

    score_thresh: float = 1e-4
    pre_nms_topk: int = 1000
    nms_thresh: float = 0.9
    post_nms_topk: int = 256


def _centres(h: int, w: int, stride: int, device: torch.device) -> Tensor:
    ys = torch.arange(0, h * stride, stride, dtype=torch.float32, device=device)
    xs = torch.arange(0, w * stride, stride, dtype=torch.float32, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1) + stride // 2


def decode_proposals(
    heatmaps: list[Tensor], regs: list[Tensor], strides: list[int], settings: ProposalSettings
) -> list[tuple[Tensor, Tensor]]:
    """Per image: (boxes (N, 4) in padded-input pixels, scores (N,)), in NMS order."""
    per_image: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(heatmaps[0].shape[0])]
    for hm, reg, stride in zip(heatmaps, regs, strides, strict=True):
        b, _, h, w = hm.shape
        grid = _centres(h, w, stride, hm.device)
        prob = hm.sigmoid().reshape(b, -1)
        ltrb = (reg * stride).permute(0, 2, 3, 1).reshape(b, -1, 4)
        for i in range(b):
            keep = (prob[i] > settings.score_thresh).nonzero().squeeze(1)
            score = prob[i][keep]
            if keep.numel() > settings.pre_nms_topk:
                score, top = score.topk(settings.pre_nms_topk, sorted=False)
                keep = keep[top]
            c, d = grid[keep], ltrb[i][keep]
            x1, y1 = c[:, 0] - d[:, 0], c[:, 1] - d[:, 1]
            x2 = torch.maximum(c[:, 0] + d[:, 2], x1 + 0.01)
            y2 = torch.maximum(c[:, 1] + d[:, 3], y1 + 0.01)
            per_image[i].append((torch.stack([x1, y1, x2, y2], dim=1), score.sqrt()))
    results = []
    for parts in per_image:
        boxes = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        keep = batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), settings.nms_thresh)
        boxes, scores = boxes[keep], scores[keep]
        if len(scores) > settings.post_nms_topk:
            thresh = torch.kthvalue(scores.float().cpu(), len(scores) - settings.post_nms_topk + 1).values.item()
            kept = scores >= thresh
            boxes, scores = boxes[kept], scores[kept]
        results.append((boxes, scores))
    return results
