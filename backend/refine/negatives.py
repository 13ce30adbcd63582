"""A detector's boxes + the project's negative prompts -> the boxes no negative vetoes.

Negative prompts are asked in the same forward pass as the labels' prompts (they follow them in the query), so the
detector itself decides, per box, whether a label's prompt or a negative matches best: a box whose best match is a
negative is never a label's box. A label's box is also dropped when it overlaps, above ``iou``, a box found for a
negative that applies to its label: detectors that answer each prompt separately (Grounding DINO) can find "car"
and "toy car" as two boxes on one toy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import supervision as sv

__all__ = ["Negatives", "vetoed"]


@dataclass(frozen=True)
class Negatives:
    """Where a target's negative prompts sit among its prompts and which labels each one vetoes.

    Attributes:
        first: Index of the first negative prompt (they come after the labels' prompts, before examples).
        scopes: Per negative prompt, the label indices whose boxes it vetoes.
        iou: Overlap with a negative's box above which a label's box is dropped.
    """

    first: int
    scopes: tuple[tuple[int, ...], ...]
    iou: float = 0.5

    def is_negative(self, prompt_ids: np.ndarray) -> np.ndarray:
        """Which prompt ids are negative prompts."""
        return (prompt_ids >= self.first) & (prompt_ids < self.first + len(self.scopes))


def vetoed(found: sv.Detections, labels: np.ndarray, negatives: Negatives) -> np.ndarray:
    """Per box of ``found`` (``class_id``: prompt ids; ``labels``: their label ids), whether a negative drops it.

    Negative boxes themselves are always dropped.
    """
    negative = negatives.is_negative(found.class_id)
    out = negative.copy()
    if not negative.any() or negative.all():
        return out
    positive = np.nonzero(~negative)[0]
    overlap = sv.box_iou_batch(found.xyxy[positive], found.xyxy[negative])  # (positives, negatives)
    applies = np.asarray(
        [[labels[p] in negatives.scopes[k - negatives.first] for k in found.class_id[negative]] for p in positive]
    )
    out[positive] = ((overlap > negatives.iou) & applies).any(axis=1)
    return out
