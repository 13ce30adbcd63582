"""detectron2's FPN: bottom-up maps -> ``p3..p7`` (Detic's P6/P7 convs) or ``p2..p6`` (VLPart's P6 max-pool).

Laterals (1x1) and outputs (3x3) are named by the log2 stride of their input (``fpn_lateral3`` for stride 8);
the top-down path upsamples by nearest x2 and sums. Detic: P6 = conv3x3/2(P5), P7 = conv3x3/2(relu(P6)).
VLPart: P6 = P5 subsampled by 2 (``LastLevelMaxPool``: max-pool with kernel 1, stride 2).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class LastLevelP6P7(nn.Module):
    """P6 and P7 from P5 by stride-2 3x3 convs (ReLU between), as Detic's ``LastLevelP6P7_P5``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, p5: Tensor) -> list[Tensor]:
        """P5 -> [P6, P7]."""
        p6 = self.p6(p5)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """Wraps a bottom-up module whose ``forward`` returns named maps with known ``channels``/``strides``."""

    def __init__(
        self, bottom_up: nn.Module, in_features: tuple[str, ...], out_channels: int, top_block: str = "p6p7"
    ) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = in_features
        self.levels = [int(math.log2(bottom_up.strides[name])) for name in in_features]
        for name, level in zip(in_features, self.levels, strict=True):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(bottom_up.channels[name], out_channels, 1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(out_channels, out_channels, 3, 1, 1))
        self.top_block = LastLevelP6P7(out_channels) if top_block == "p6p7" else None
        last = self.levels[-1]
        extra = [last + 1, last + 2] if self.top_block is not None else [last + 1]
        self.strides = {f"p{lv}": 2**lv for lv in [*self.levels, *extra]}
        # Inputs are padded to the stride of the last bottom-up map (not the last FPN level), as detectron2 does.
        self.size_divisibility = 2**last

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Image batch -> ``{p3..p7}``."""
        feats = self.bottom_up(x)
        prev = None
        out: dict[str, Tensor] = {}
        for name, level in reversed(list(zip(self.in_features, self.levels, strict=True))):
            lateral = getattr(self, f"fpn_lateral{level}")(feats[name])
            prev = lateral if prev is None else lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            out[f"p{level}"] = getattr(self, f"fpn_output{level}")(prev)
        last = self.levels[-1]
        out = {f"p{lv}": out[f"p{lv}"] for lv in self.levels}
        if self.top_block is None:
            out[f"p{last + 1}"] = F.max_pool2d(out[f"p{last}"], kernel_size=1, stride=2)
        else:
            out[f"p{last + 1}"], out[f"p{last + 2}"] = self.top_block(out[f"p{last}"])
        return out
