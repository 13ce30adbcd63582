"""timm's ResNet-50 (Detic R50's ``resnet50_in21k``) with frozen batch norm: image -> ``layer3..5`` maps.

Keys follow timm (``base.conv1``, ``base.layer1.0.bn3``...) so the official checkpoints load by rule; outputs are
named by detectron2's res-stage numbering (timm ``layer2..4`` are strides 8, 16, 32 -> ``layer3..5``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """detectron2's FrozenBatchNorm2d: ``x * w / sqrt(var + eps) + b - mean * scale`` with eps 1e-5."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - eps)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the frozen affine transform."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + bias.view(1, -1, 1, 1).to(x.dtype)


class Bottleneck(nn.Module):
    """timm's ResNet bottleneck (stride on the 3x3 conv) with frozen BN."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), FrozenBatchNorm2d(out))
            if downsample
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """One residual block."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class _Trunk(nn.Module):
    def __init__(self, layers: tuple[int, ...], stem: int, base_planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(stem)
        inplanes = stem
        for i, blocks in enumerate(layers):
            planes = base_planes * 2**i
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride, True)]
            stage += [Bottleneck(planes * 4, planes, 1, False) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            inplanes = planes * 4


class TimmResNet(nn.Module):
    """Detic's TIMM backbone wrapper around a ResNet trunk (weights under ``base.``)."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), stem: int = 64, base_planes: int = 64) -> None:
        super().__init__()
        self.base = _Trunk(layers, stem, base_planes)
        self.channels = {f"layer{i + 2}": base_planes * 2**i * 4 for i in range(4)}
        self.strides = {f"layer{i + 2}": 4 * 2**i for i in range(4)}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Image batch -> ``{layer2..layer5}`` stage outputs (strides 4..32)."""
        b = self.base
        x = F.max_pool2d(F.relu(b.bn1(b.conv1(x))), 3, 2, 1)
        out = {}
        for i in range(4):
            x = getattr(b, f"layer{i + 1}")(x)
            out[f"layer{i + 2}"] = x
        return out
