"""A ``/preview`` answer -> the text table ``prelabel preview`` prints: one row per label, scores at a glance."""

from __future__ import annotations

from typing import Any

__all__ = ["preview_table"]

_BARS = " ▁▂▃▄▅▆▇█"  # one character per histogram bin, the fullest bin drawn full


def preview_table(report: dict[str, Any]) -> str:
    """Per label: how many regions, the score quartiles and a 10-bin histogram over 0-1; then the tasks that failed."""
    tasks, failed = report.get("tasks", []), report.get("failed", {})
    lines = [
        f"model version {report.get('model_version')}: {len(tasks) - len(failed)} of {len(tasks)} tasks predicted, "
        f"{sum(t.get('regions', 0) for t in tasks)} regions"
    ]
    header = ("control", "label", "count", "min", "p25", "median", "p75", "max", "scores 0 → 1")
    rows = [
        (control, label, str(d["count"]), *(f"{d[k]:.2f}" for k in ("min", "p25", "median", "p75", "max")),
         _sparkline(d["histogram"]))
        for control, labels in sorted(report.get("labels", {}).items())
        for label, d in sorted(labels.items())
    ]  # fmt: skip
    if rows:
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                  for row in (header, *rows)]  # fmt: skip
    else:
        lines.append("no regions: lower the thresholds, check the prompts, or look at the failed tasks below")
    lines += [f"task {task} failed: {'; '.join(reasons)}" for task, reasons in sorted(failed.items())]
    return "\n".join(lines)


def _sparkline(histogram: list[int]) -> str:
    top = max(histogram) or 1
    return "".join(_BARS[0 if n == 0 else max(1, round(n / top * (len(_BARS) - 1)))] for n in histogram)
