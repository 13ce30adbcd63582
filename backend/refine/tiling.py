"""A large image -> overlapping tiles (and the whole image) -> one set of boxes, merged across the seams.

Small objects vanish when a detector shrinks a 4000 px image to its 800-1333 px input; cut into tiles of about the
input size, each object keeps its pixels. Tiles overlap by ``overlap`` of their side, so any object smaller than
the overlap lies whole inside some tile; an object cut by a seam is found as a part in one tile and whole (or as
another part) in its neighbour. Merging: boxes of one label whose intersection covers at least ``merge_ios`` of the
smaller box are merged into their union, scored by the area-weighted mean of their scores (supervision's non-maximum
merging by intersection over the smaller area), so the view that saw the whole object counts most. The whole image, downscaled by the detector as usual, is also asked (``whole``), so objects larger
than a tile are found as well. Grounded segmentation segments the merged boxes on the whole image, so its masks
never repeat at a seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import supervision as sv

from model_adapters.base import SettingsError

__all__ = ["AUTO_ABOVE", "MAX_TILES", "Tiling", "merge_tiles", "windows"]

AUTO_ABOVE = 2048  # ``"tiling": "auto"``: images whose longer side exceeds this are tiled
MAX_TILES = 256  # per image, more is refused for that task (a 10000x10000 image at the default settings is 144)


@dataclass(frozen=True)
class Tiling:
    """How a target's images are tiled.

    Attributes:
        tile: Tile side in pixels of the original image.
        overlap: Fraction of the tile side neighbouring tiles share.
        above: Only images whose longer side exceeds this (and the tile) are tiled; the rest run whole.
        whole: Also run the whole image and merge its boxes with the tiles'.
        merge_ios: Intersection over the smaller box above which two boxes of one label are one object.
    """

    tile: int = 1024
    overlap: float = 0.2
    above: int = 0
    whole: bool = True
    merge_ios: float = 0.5

    def __post_init__(self) -> None:
        if not 256 <= self.tile <= 16384:
            raise SettingsError(f"tile must be between 256 and 16384 pixels, got {self.tile!r}")
        if not 0.0 <= self.overlap <= 0.5:
            raise SettingsError(f"overlap must be between 0 and 0.5, got {self.overlap!r}")
        if not 0 <= self.above <= 10**6:
            raise SettingsError(f"above must be between 0 and 1000000 pixels, got {self.above!r}")
        if not 0.0 < self.merge_ios <= 1.0:
            raise SettingsError(f"merge_ios must be above 0 and at most 1, got {self.merge_ios!r}")

    def applies(self, width: int, height: int) -> bool:
        """Whether an image of this size is tiled (an image no larger than a tile never is)."""
        return max(width, height) > max(self.tile, self.above)


def windows(width: int, height: int, tiling: Tiling) -> list[tuple[int, int, int, int]]:
    """Tile windows ``(x0, y0, x1, y1)`` covering the image, evenly spread, each at most ``tile`` a side.

    Per axis, the fewest tiles whose neighbours share at least ``overlap * tile`` pixels; the last tile ends at the
    image's edge (no sliver tiles).
    """
    xs, ys = _starts(width, tiling), _starts(height, tiling)
    return [(x, y, min(x + tiling.tile, width), min(y + tiling.tile, height)) for y in ys for x in xs]


def _starts(length: int, tiling: Tiling) -> list[int]:
    if length <= tiling.tile:
        return [0]
    stride = tiling.tile * (1.0 - tiling.overlap)
    count = math.ceil((length - tiling.tile) / stride) + 1
    return [round(i * (length - tiling.tile) / (count - 1)) for i in range(count)]


def merge_tiles(parts: list[tuple[tuple[int, int], sv.Detections]], merge_ios: float) -> sv.Detections:
    """Tile answers (each with its window's top-left corner, ``class_id`` = label) -> one image's boxes."""
    shifted = []
    for (x0, y0), found in parts:
        if len(found):
            moved = found[np.arange(len(found))]  # a copy: the tile's own answer is not changed
            moved.xyxy = (found.xyxy + np.asarray([x0, y0, x0, y0], dtype=found.xyxy.dtype)).astype(np.float32)
            shifted.append(moved)
    if not shifted:
        return parts[0][1] if parts else sv.Detections.empty()
    merged = sv.Detections.merge(shifted)
    return merged.with_nmm(threshold=merge_ios, class_agnostic=False, overlap_metric=sv.OverlapMetric.IOS)
