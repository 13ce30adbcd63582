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
    if post.nms_threshold < 1.0 and len(out) > 1:
        out = out.with_nms(threshold=post.nms_threshold, class_agnostic=False)
    order = np.argsort(-out.confidence, kind="stable")[: post.max_detections]
    return out[order]


def polygons(mask: np.ndarray, post: SegmentationPost) -> list[np.ndarray]:
    """Outer contours of a mask's parts (holes filled) as pixel polygons (N, 2), simplified; largest first."""
    parts = []
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        simplified = contour.reshape(-1, 2)
        if post.polygon_tolerance > 0:
            simplified = cv2.approxPolyDP(contour, post.polygon_tolerance, True).reshape(-1, 2)
        area = cv2.contourArea(simplified.astype(np.float32))
        if len(simplified) >= 3 and area >= post.min_area:
            parts.append((area, simplified.astype(np.float64) + 0.5))  # pixel centres
    parts.sort(key=lambda item: -item[0])
    return [points for _, points in parts]


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
