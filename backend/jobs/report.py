"""A job's stored state -> what a person reads: the ``GET /jobs/<id>`` answer, a terminal progress bar, a summary.

Rates count tasks finished per second of running time (over every run of the job, pauses between runs excluded);
the ETA is the tasks left at that rate.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from backend.jobs.store import Job

__all__ = ["ProgressBar", "describe", "summary"]

_BAR_WIDTH = 30


def describe(job: Job, failures: list[tuple[int, str]]) -> dict[str, Any]:
    """The job as ``GET /jobs/<id>`` answers it (``failures``: its first failed tasks and why)."""
    rate = _rate(job)
    left = None if job.total is None else max(job.total - job.finished_tasks, 0)
    return {
        "id": job.id,
        "project": job.project_id,
        "state": job.state,
        "origin": job.origin,
        "filter": job.filter.to_json(),
        "model_version": job.model_version,
        "total": job.total,
        "finished": job.finished_tasks,
        "predicted": job.predicted,
        "skipped": job.skipped,
        "failed": job.failed,
        "failures": [{"task": task, "reason": reason} for task, reason in failures],
        "error": job.error,
        "cancel_requested": job.cancel and job.state in ("queued", "running"),
        "seconds": round(job.run_seconds, 2),
        "tasks_per_second": round(rate, 3) if rate else None,
        "eta_seconds": round(left / rate, 1) if rate and left is not None and job.state == "running" else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def summary(job: Job, failures: list[tuple[int, str]]) -> str:
    """The end-of-job lines of ``prelabel bulk``."""
    rate = job.predicted / job.run_seconds if job.run_seconds > 0 else 0.0
    lines = [
        f"job {job.id} (project {job.project_id}): {job.state}"
        + (f" ({job.model_version})" if job.model_version else ""),
        f"  predicted {job.predicted}, skipped {job.skipped} (annotated or already predicted), failed {job.failed}",
        f"  time {_clock(job.run_seconds)}, {rate:.2f} images/s",
    ]
    if job.error:
        lines.append(f"  why it stopped: {job.error}")
    if failures:
        lines.append("  first failures (they have no prediction; the next job or retrieve tries them again):")
        lines += [f"    task {task}: {reason}" for task, reason in failures[:5]]
    return "\n".join(lines)


class ProgressBar:
    """One line redrawn in place on a terminal (a line every ``every`` seconds otherwise, e.g. into a log).

    Args:
        out: Where it draws (stderr).
        every: Seconds between lines when ``out`` is not a terminal.
    """

    def __init__(self, out: TextIO, every: float = 10.0) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every = every
        self._last = 0.0

    def update(self, job: Job) -> None:
        """Draw the job's progress."""
        now = time.monotonic()
        if not self.tty and now - self._last < self.every and job.state == "running":
            return
        self._last = now
        total = job.total or 0
        done = job.finished_tasks
        share = min(done / total, 1.0) if total else 0.0
        filled = round(share * _BAR_WIDTH)
        rate = _rate(job)
        eta = _clock((total - done) / rate) if rate and total >= done else "?"
        line = (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total or '?'} {share:4.0%} "
                f"{rate:.2f} tasks/s ETA {eta} (failed {job.failed})")  # fmt: skip
        self.out.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the redrawn line."""
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _rate(job: Job) -> float:
    return job.finished_tasks / job.run_seconds if job.run_seconds > 0 else 0.0


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
