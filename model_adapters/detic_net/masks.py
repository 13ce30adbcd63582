"""Class-agnostic mask head and detectron2's mask pasting: pooled 14x14 features -> 28x28 logits -> image masks.

Pasting follows ``paste_masks_in_image`` on CPU: one mask at a time, sampled with ``grid_sample``
(``align_corners=False``) at pixel centres mapped into the box, only over the box's integer extent widened by one
pixel (``floor(x0) - 1 .. ceil(x1) + 1``), thresholded ``>= 0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskHead(nn.Module):
    """detectron2's ``MaskRCNNConvUpsampleHead``, class-agnostic: 4 convs, deconv x2, 1x1 predictor."""

    def __init__(self, channels: int, conv_dim: int, num_convs: int = 4) -> None:
        super().__init__()
        self.num_convs = num_convs
        for i in range(num_convs):
            self.add_module(f"mask_fcn{i + 1}", nn.Conv2d(channels if i == 0 else conv_dim, conv_dim, 3, 1, 1))
        self.deconv = nn.ConvTranspose2d(conv_dim, conv_dim, 2, 2)
        self.predictor = nn.Conv2d(conv_dim, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, 14, 14) pooled features -> (N, 1, 28, 28) mask logits."""
        for i in range(self.num_convs):
            x = F.relu(getattr(self, f"mask_fcn{i + 1}")(x))
        return self.predictor(F.relu(self.deconv(x)))


def paste_masks(probs: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """(N, M, M) probabilities + (N, 4) boxes in output pixels -> (N, height, width) bool masks."""
    out = torch.zeros(len(probs), height, width, dtype=torch.bool, device=probs.device)
    for i in range(len(probs)):
        box = boxes[i : i + 1]
        x0i, y0i = (box.min(dim=0).values.floor()[:2] - 1).clamp(min=0).to(torch.int32).tolist()
        x1i = int(box[:, 2].max().ceil().add(1).clamp(max=width).item())
        y1i = int(box[:, 3].max().ceil().add(1).clamp(max=height).item())
        x0, y0, x1, y1 = box[0]
        ys = (torch.arange(y0i, y1i, dtype=torch.float32, device=probs.device) + 0.5 - y0) / (y1 - y0) * 2 - 1
        xs = (torch.arange(x0i, x1i, dtype=torch.float32, device=probs.device) + 0.5 - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack([xs[None, :].expand(len(ys), len(xs)), ys[:, None].expand(len(ys), len(xs))], dim=2)
        sampled = F.grid_sample(probs[i][None, None], grid[None].to(probs.dtype), align_corners=False)
        out[i, y0i:y1i, x0i:x1i] = sampled[0, 0] >= threshold
    return out
