"""Masks -> a ``PolygonLabels`` or ``BrushLabels`` control's regions.

Masks come with labels either from a detector's boxes (SAM-style segmenters) or from a text-prompted
segmenter (prompt ids, mapped to labels here). Small parts are dropped, duplicates suppressed by mask IoU, and
each object becomes a polygon (simplified, holes filled) or a brush RLE mask.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import supervision as sv

from backend.detection import above_label_thresholds
from backend.encode import brush_region, polygon_region
from backend.label_config import Target
from backend.plan import SegmentationPost, TargetPlan
from model_adapters.base import CLASS_NAME_DATA_FIELD

__all__ = ["finish_masks", "mask_regions", "polygons"]


def finish_masks(masks: sv.Detections, plan: TargetPlan, *, prompt_ids: bool) -> sv.Detections:
    """Labels, size filter, mask NMS and the cap, best first.

    Args:
        masks: ``mask`` (N, H, W) bool, ``confidence``, ``class_id``.
        plan: The segmentation target.
        prompt_ids: Whether ``class_id`` indexes prompts (text-prompted segmenter) rather than labels.
    """
    post: SegmentationPost = plan.post
    if len(masks) == 0:
        return masks
    labels = np.asarray(plan.prompt_labels)[masks.class_id] if prompt_ids else masks.class_id
    out = sv.Detections(
        xyxy=masks.xyxy,
        mask=masks.mask,
        confidence=masks.confidence,
        class_id=labels,
        data={CLASS_NAME_DATA_FIELD: np.asarray([plan.target.labels[i] for i in labels], dtype=object)},
    )
    out = out[out.mask.reshape(len(out), -1).sum(axis=1) >= post.min_area]
    out = out[above_label_thresholds(out, plan.target.labels, post.label_thresholds)]
    if post.nms_threshold < 1.0 and len(out) > 1:
        out = out.with_nms(threshold=post.nms_threshold, class_agnostic=False)
    order = np.argsort(-out.confidence, kind="stable")[: post.max_detections]
    return out[order]


def polygons(mask: np.ndarray, post: SegmentationPost) -> list[np.ndarray]:
    """Outlines of a mask's parts (holes filled) as pixel polygons (N, 2), simplified; largest first.

    Outlines follow pixel edges, not pixel centres, so with ``polygon_tolerance`` 0 a polygon is exactly the
    outline of the union of its part's pixel squares (an 8x8 square at the origin gives (0, 0), (8, 0), (8, 8),
    (0, 8)) and covers the mask. They are traced on a grid of half-pixel steps: pixel centres at odd indices,
    each pixel dilated onto its edges and corners; halving the traced indices gives pixel corners.
    """
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return []
    top, left = rows.min(), cols.min()
    crop = mask[top : rows.max() + 1, left : cols.max() + 1]
    grid = np.zeros((2 * crop.shape[0] + 1, 2 * crop.shape[1] + 1), dtype=np.uint8)
    grid[1::2, 1::2] = crop
    grid = cv2.dilate(grid, np.ones((3, 3), dtype=np.uint8))
    contours, _ = cv2.findContours(grid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    parts = []
    for contour in contours:
        outline = _rectilinear(contour.reshape(-1, 2), grid)
        if post.polygon_tolerance > 0:  # in grid units: half pixels
            outline = cv2.approxPolyDP(outline[:, None], 2 * post.polygon_tolerance, True).reshape(-1, 2)
        points = outline / 2.0 + (left, top)
        area = cv2.contourArea(points.astype(np.float32))
        if len(points) >= 3 and area >= post.min_area:
            parts.append((area, points))
    parts.sort(key=lambda item: -item[0])
    return [points for _, points in parts]


def _rectilinear(contour: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A traced contour (N, 2) of unit steps as the corners of its rectilinear outline.

    8-connected tracing cuts each concave corner (and each pinch where parts touch at a corner) with a diagonal
    step; the outline goes through the corner cell instead, the one of the two cells beside the step that is set.
    """
    following = np.roll(contour, -1, axis=0)
    diagonal = np.nonzero((following != contour).all(axis=1))[0]
    one = np.column_stack([following[diagonal, 0], contour[diagonal, 1]])
    other = np.column_stack([contour[diagonal, 0], following[diagonal, 1]])
    corners = np.where(grid[one[:, 1], one[:, 0]][:, None] > 0, one, other)
    points = np.insert(contour, diagonal + 1, corners, axis=0)
    turns = np.sign(points - np.roll(points, 1, axis=0)) != np.sign(np.roll(points, -1, axis=0) - points)
    return points[turns.any(axis=1)]


def mask_regions(
    masks: sv.Detections, target: Target, post: SegmentationPost, image_wh: tuple[int, int]
) -> list[dict[str, Any]]:
    """Regions for finished masks: brush RLE or polygon(s), by the control's type."""
    regions = []
    for mask, score, class_id in zip(masks.mask, masks.confidence, masks.class_id, strict=True):
        label = target.labels[int(class_id)]
        if target.control_type == "BrushLabels":
            regions.append(brush_region(mask, label, score, from_name=target.control, to_name=target.to_name))
            continue
        parts = polygons(mask, post)
        for points in parts if post.polygon_parts == "all" else parts[:1]:
            regions.append(
                polygon_region(
                    points, label, score, image_wh=image_wh, from_name=target.control, to_name=target.to_name
                )
            )
    return regions
