"""detectron2 ``DefaultPredictor`` input handling: RGB uint8 images -> normalised, zero-padded batch tensor.

The shortest edge is scaled to ``min_size`` (then capped so the long edge is at most ``max_size``), sizes rounded
with ``int(x + 0.5)``, resized with PIL bilinear on uint8 (PIL's widened support antialiases; ``interpolate`` does
not), normalised with ImageNet mean/std in 0..255 and padded with zeros right/bottom to ``size_divisibility``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: (new_h, new_w)."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> resized (h, w, 3) uint8, as detectron2's ``ResizeTransform`` does it."""
    h, w = resized_shape(image.shape[0], image.shape[1], min_size, max_size)
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def batch_images(images: Sequence[np.ndarray], size_divisibility: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """Resized uint8 images -> ((B, 3, Hp, Wp) normalised float tensor, [(h, w)] before padding)."""
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    d = size_divisibility
    hp = -(-max(h for h, _ in sizes) // d) * d
    wp = -(-max(w for _, w in sizes) // d) * d
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    batch = torch.zeros(len(images), 3, hp, wp)
    for i, im in enumerate(images):
        t = torch.from_numpy(np.array(im, dtype=np.float32)).permute(2, 0, 1)
        batch[i, :, : t.shape[1], : t.shape[2]] = (t - mean) / std
    return batch, sizes
