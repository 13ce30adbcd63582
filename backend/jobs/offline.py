"""Image files + a label config -> Label Studio import JSON with predictions: prelabel before importing.

What enters: image paths (files, or folders searched recursively for image files), the label config and the
project's extra params (the server's defaults underneath). What leaves: a JSON list written as it goes, one task per
image, ``{"data": {<image key>: <url>}, "predictions": [<prediction>]}``, where the URL is ``image_root_url`` plus
the image's path below the folder common to all images, or by default Label Studio's local-files URL
(``/data/local-files/?d=<path>``, for a local-files storage whose document root is that folder). Images are read
from disk and predicted through the same fetcher, runner and models as ``/predict``, a chunk at a time, so memory
holds one chunk whatever the number of images. An image that cannot be predicted still becomes a task, without a
prediction (Label Studio's retrieve or a bulk job predicts it after import), and is reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from backend.errors import BadRequest
from backend.plan import Plan
from backend.runner import Runner

__all__ = ["CHUNK", "IMAGE_SUFFIXES", "Summary", "common_root", "image_files", "write_import_json"]

CHUNK = 64
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass
class Summary:
    """What an offline run wrote."""

    tasks: int = 0
    predicted: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # image path -> why it has no prediction


def image_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files named, folders searched recursively; sorted, each once.

    Raises:
        BadRequest: A path does not exist, or no image was found.
    """
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.add(path)
        else:
            raise BadRequest(f"{raw} is neither an image file nor a folder")
    if not found:
        raise BadRequest(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}")
    return sorted(found)


def common_root(files: Sequence[Path]) -> Path:
    """The deepest folder holding every file."""
    return Path(os.path.commonpath([f.parent for f in files]))


def write_import_json(
    files: Sequence[Path],
    root: Path,
    plan: Plan,
    runner: Runner,
    out: TextIO,
    image_root_url: str | None = None,
    progress: Callable[[int], None] = lambda done: None,
) -> Summary:
    """Predict every file and write the import JSON to ``out`` (see the module docstring).

    ``runner`` must read ``/data/local-files/?d=`` from ``root`` (its fetcher's ``LOCAL_FILES_DOCUMENT_ROOT``).

    Raises:
        BadRequest: The label config reads more than one image per task.
    """
    keys = sorted({target.target.value_key for target in plan.targets})
    if len(keys) != 1:
        raise BadRequest(f"offline prelabel takes configs with one image per task; this one reads {keys}")
    (key,) = keys
    summary = Summary()
    out.write("[")
    for start, chunk in _chunks(files):
        relative = [f.relative_to(root).as_posix() for f in chunk]
        local = ["/data/local-files/?d=" + quote(r, safe="/") for r in relative]
        tasks = [{"id": start + i + 1, "data": {key: url}} for i, url in enumerate(local)]
        outcome = runner.predict(tasks, plan, None)
        for task, path, entry in zip(tasks, relative, outcome.entries, strict=True):
            url = image_root_url.rstrip("/") + "/" + quote(path, safe="/") if image_root_url else task["data"][key]
            item: dict[str, Any] = {"data": {key: url}}
            if isinstance(entry, dict):
                item["predictions"] = [entry]
                summary.predicted += 1
            else:
                reasons = outcome.failed.get(task["id"]) or [outcome.stop_reason or "not predicted"]
                summary.failed[path] = "; ".join(reasons)
            out.write(("," if summary.tasks else "") + "\n" + json.dumps(item))
            summary.tasks += 1
        progress(summary.tasks)
    out.write("\n]\n")
    return summary


def _chunks(files: Sequence[Path]) -> Iterator[tuple[int, Sequence[Path]]]:
    for start in range(0, len(files), CHUNK):
        yield start, files[start : start + CHUNK]
