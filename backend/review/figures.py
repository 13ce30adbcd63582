"""The report's numbers (``backend.review.curves``) -> inline SVG figures for the HTML page; no scripts, no fonts.

Both figures share one frame: ``PLOT_W`` x ``PLOT_H`` pixels inside a ``PAD`` margin, scores 0-1 left to right.
The score histogram draws, per bin, the accepted objects (green) beside the corrected ones (red); a threshold curve
draws F1 (solid), precision and recall (dashed) against the threshold, and the project's threshold as a vertical line.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["ACCEPTED", "CORRECTED", "PAD", "PLOT_H", "PLOT_W", "THRESHOLD", "histogram_svg", "threshold_svg"]

PLOT_W, PLOT_H, PAD = 300, 120, 30
ACCEPTED, CORRECTED = "#2e7d32", "#c62828"
_F1, _PRECISION, _RECALL = "#1b1b1b", "#1565c0", "#ef6c00"
THRESHOLD = "#6a1b9a"


def _x(score: float) -> float:
    return round(float(PAD + score * PLOT_W), 1)


def _y(fraction: float) -> float:
    return round(float(PAD + (1 - fraction) * PLOT_H), 1)


def _frame(title: str, body: str) -> str:
    ticks = "".join(
        f"<line x1='{_x(t)}' y1='{_y(0)}' x2='{_x(t)}' y2='{_y(0) + 4}' stroke='#999'/>"
        f"<text x='{_x(t)}' y='{_y(0) + 16}' text-anchor='middle'>{t:g}</text>"
        for t in (0, 0.25, 0.5, 0.75, 1)
    )
    return (
        f"<svg width='{PLOT_W + 2 * PAD}' height='{PLOT_H + 2 * PAD + 6}' role='img' aria-label='{escape(title)}'>"
        f"<text x='{PAD}' y='16'>{escape(title)}</text>"
        f"<line x1='{PAD}' y1='{_y(0)}' x2='{_x(1)}' y2='{_y(0)}' stroke='#999'/>{ticks}{body}</svg>"
    )


def histogram_svg(histogram: dict[str, list]) -> str:
    """Accepted and corrected predicted objects per score bin; bar heights relative to the fullest bin."""
    counts = [*histogram["accepted"], *histogram["corrected"]]
    top = max(counts, default=0) or 1
    bins = len(histogram["accepted"])
    width = PLOT_W / bins / 2 - 1
    bars = []
    for i, (kept, fixed) in enumerate(zip(histogram["accepted"], histogram["corrected"], strict=True)):
        left = PAD + i * PLOT_W / bins
        for offset, n, colour, name in (
            (0.5, kept, ACCEPTED, "accepted"),
            (width + 1.5, fixed, CORRECTED, "corrected"),
        ):
            height = round(PLOT_H * n / top, 1)
            bars.append(
                f"<rect class='{name}' x='{round(left + offset, 1)}' y='{round(_y(0) - height, 1)}' "
                f"width='{round(width, 1)}' height='{height}' fill='{colour}'><title>{n} {name}</title></rect>"
            )
    return _frame(f"predicted objects per score (tallest bar: {top})", "".join(bars))


def threshold_svg(curve: dict[str, Any]) -> str:
    """F1, precision and recall of one label against the score threshold, the project's threshold marked."""
    lines = []
    for key, colour, dash in (("precision", _PRECISION, "4 3"), ("recall", _RECALL, "4 3"), ("f1", _F1, "")):
        points = " ".join(
            f"{_x(t)},{_y(v)}" for t, v in zip(curve["thresholds"], curve[key], strict=True) if v is not None
        )
        lines.append(
            f"<polyline class='{key}' points='{points}' fill='none' stroke='{colour}' stroke-width='{2 if key == 'f1' else 1}'"
            + (f" stroke-dasharray='{dash}'" if dash else "")
            + "/>"
        )
    if curve["project_threshold"] is not None:
        t = curve["project_threshold"]
        lines.append(
            f"<line class='threshold' x1='{_x(t)}' y1='{_y(1)}' x2='{_x(t)}' y2='{_y(0)}' stroke='{THRESHOLD}' "
            f"stroke-width='2'><title>{escape(curve['threshold_source'] or '')} threshold {t:g}</title></line>"
            f"<text x='{_x(t) + 3}' y='{_y(1) + 10}' fill='{THRESHOLD}'>{escape(curve['threshold_source'] or '')} "
            f"{t:g}</text>"
        )
    title = f"{curve['control']} / {curve['label']}: F1 vs score threshold (best {_g(curve['best'])})"
    return _frame(title, "".join(lines))


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
