"""Swin Transformer backbone as Detic/CoDet build it (mmdet-style): image (B, 3, H, W) -> ``swin1..3`` maps.

Differences from the torchvision/timm Swin that matter for the official checkpoints: each stage output gets its
own LayerNorm (``norm1..3``) before PatchMerging; windows are zero-padded *after* ``norm1`` (padded tokens take part
in attention unmasked) and the shift mask is built on the padded grid; odd sizes are padded before patch merging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """Transformer MLP: fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP."""
        return self.fc2(self.act(self.fc1(x)))


def _relative_position_index(window: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """(windows * B, N, C) tokens -> same shape; ``mask`` is the shifted windows' mask."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        if mask is not None:  # (windows, N, N): the same windows repeat for every image of the batch
            windows = mask.shape[0]
            bias = (bias[None] + mask[:, None]).repeat(b // windows, 1, 1, 1)
        else:
            bias = bias[None]
        # softmax(q k^T * head_dim**-0.5 + bias) v, fused (the original scales q first: same within float error)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


def _to_windows(x: Tensor, w: int) -> Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _from_windows(windows: Tensor, w: int, h: int, wd: int) -> Tensor:
    b = windows.shape[0] // ((h // w) * (wd // w))
    x = windows.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


class SwinBlock(nn.Module):
    """Swin block: LN, padded (and shifted) window attention, residual, LN, MLP, residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: Tensor, h: int, w: int, mask: Tensor) -> Tensor:
        """(B, h * w, C) tokens -> same shape."""
        b, _, c = x.shape
        ws = self.window
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_to_windows(y, ws), mask if self.shift else None)
        y = _from_windows(y, ws, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w, :].reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat, LayerNorm, linear to twice the width (odd sizes padded first)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, h * w, C) -> (B, ceil(h/2) * ceil(w/2), 2C)."""
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """A stage of alternating plain and shifted blocks, then patch merging (but for the last)."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool) -> None:
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def shift_mask(self, h: int, w: int, device: torch.device) -> Tensor:
        """-100 between tokens of a shifted window that come from different image regions (padded grid)."""
        ws, shift = self.window, self.window // 2
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        region = torch.zeros(1, hp, wp, 1, device=device)
        count = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                region[:, hs, wsl, :] = count
                count += 1
        ids = _to_windows(region, ws).squeeze(-1)
        mask = ids[:, None, :] - ids[:, :, None]
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor | None]:
        """-> (stage output tokens, merged tokens for the next stage or None)."""
        mask = self.shift_mask(h, w, x.device)
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x, (self.downsample(x, h, w) if self.downsample is not None else None)


class PatchEmbed(nn.Module):
    """4x4 patch projection after zero-padding to a multiple of the patch size (norm applied by the caller)."""

    def __init__(self, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C, ceil(H/4), ceil(W/4))."""
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (self.patch - w % self.patch) % self.patch, 0, (self.patch - h % self.patch) % self.patch))
        return self.proj(x)


class SwinBackbone(nn.Module):
    """Swin with outputs ``swin{i}`` (stride ``4 * 2**i``) for ``i`` in ``out_indices``, each after ``norm{i}``."""

    def __init__(
        self,
        embed_dim: int,
        depths: tuple[int, ...],
        heads: tuple[int, ...],
        window: int = 7,
        out_indices: tuple[int, ...] = (1, 2, 3),
    ) -> None:
        super().__init__()
        self.out_indices = out_indices
        self.patch_embed = PatchEmbed(embed_dim)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(dims[i], depths[i], heads[i], window, i < len(depths) - 1) for i in range(len(depths))
        )
        for i in out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
        self.channels = {f"swin{i}": dims[i] for i in out_indices}
        self.strides = {f"swin{i}": 4 * 2**i for i in out_indices}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Image batch -> ``{swin1..3}`` maps after their LayerNorms."""
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        out = {}
        for i, stage in enumerate(self.layers):
            y, down = stage(x, h, w)
            if i in self.out_indices:
                y = getattr(self, f"norm{i}")(y)
                out[f"swin{i}"] = y.view(-1, h, w, y.shape[-1]).permute(0, 3, 1, 2).contiguous()
            if down is not None:
                x, h, w = down, (h + 1) // 2, (w + 1) // 2
        return out
