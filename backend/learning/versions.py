"""A fit's result -> one artifact file per version, written so that a crash never leaves a torn or half version.

The artifact (``MODEL_DIR/learning/<project id>/fit<N>.npz``) holds a JSON manifest and the arrays of each
control's learned state. It is written to a temporary file in the same directory, flushed and fsynced, renamed
into place, and the directory fsynced; only then is the fit recorded in the store. A ``kill -9`` at any point
leaves the previous version as the newest recorded one, and at most a stray temporary file (removed by the next
fit). Old versions are kept up to ``KEPT_VERSIONS`` per project, plus a pinned one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KEPT_VERSIONS", "UNREADABLE", "ControlState", "LearnedState", "read_manifest", "read_state", "write_state"]

# What reading a damaged artifact raises (truncated zip, missing member, bad JSON, unknown format).
UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)

KEPT_VERSIONS = 10
_FORMAT = 1


@dataclass(frozen=True)
class ControlState:
    """What one control learned.

    Attributes:
        control: The control's name.
        head: For ``Choices``: ``{"weights", "bias", "usable"}`` arrays; ``None`` otherwise.
        calibration: The head's ``"softmax"`` or ``"sigmoid"``.
        embedder: ``[adapter, model_id]`` the head's embeddings come from.
        thresholds: Label -> calibrated score threshold (labels with enough examples only).
        queries: ``(Q, D)`` image-guided query embeddings learned from annotated boxes (OWL-ViT/OWLv2).
        query_labels: ``(Q,)`` label index of each query.
    """

    control: str
    head: dict[str, np.ndarray] | None = None
    calibration: str | None = None
    embedder: tuple[str, str] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    queries: np.ndarray | None = None
    query_labels: np.ndarray | None = None


@dataclass(frozen=True)
class LearnedState:
    """Everything a fit learned for a project, per control, a summary for people, and what it was made for.

    ``made_for`` (project key, base version, time) lets the store's record of a fit be rebuilt from the file alone.
    """

    controls: dict[str, ControlState]
    summary: dict[str, Any]
    made_for: dict[str, Any] = field(default_factory=dict)


def write_state(directory: Path, n: int, state: LearnedState) -> Path:
    """Write ``fit<n>.npz`` atomically and durably; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    for stray in directory.glob(".tmp-*"):  # left by a fit that was killed
        stray.unlink(missing_ok=True)
    manifest: dict[str, Any] = {"format": _FORMAT, "summary": state.summary, "made_for": state.made_for, "controls": {}}
    arrays: dict[str, np.ndarray] = {}
    for i, (name, control) in enumerate(state.controls.items()):
        manifest["controls"][name] = {
            "index": i,
            "calibration": control.calibration,
            "embedder": list(control.embedder) if control.embedder else None,
            "thresholds": control.thresholds,
            "head": control.head is not None,
            "queries": control.queries is not None,
        }
        for key, value in (control.head or {}).items():
            arrays[f"c{i}_head_{key}"] = value
        if control.queries is not None and control.query_labels is not None:
            arrays[f"c{i}_queries"] = control.queries
            arrays[f"c{i}_query_labels"] = control.query_labels
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    path = directory / f"fit{n}.npz"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """An artifact's manifest alone (what it was made for, its summary).

    Raises:
        One of ``UNREADABLE``: the file is damaged or not a learned state of a known format.
    """
    with np.load(path, allow_pickle=False) as data:
        return _manifest(data, path)


def _manifest(data: Any, path: Path) -> dict[str, Any]:
    manifest = json.loads(data["manifest"].tobytes())
    if manifest.get("format") != _FORMAT:
        raise ValueError(f"{path}: unknown learned-state format {manifest.get('format')!r}")
    return manifest


def read_state(path: Path) -> LearnedState:
    """Read an artifact written by ``write_state``.

    Raises:
        One of ``UNREADABLE``: the file is damaged or not a learned state of a known format.
    """
    with np.load(path, allow_pickle=False) as data:
        manifest = _manifest(data, path)
        controls = {}
        for name, meta in manifest["controls"].items():
            i = meta["index"]
            head = {key: data[f"c{i}_head_{key}"] for key in ("weights", "bias", "usable")} if meta["head"] else None
            controls[name] = ControlState(
                control=name,
                head=head,
                calibration=meta["calibration"],
                embedder=tuple(meta["embedder"]) if meta["embedder"] else None,
                thresholds={k: float(v) for k, v in meta["thresholds"].items()},
                queries=data[f"c{i}_queries"] if meta["queries"] else None,
                query_labels=data[f"c{i}_query_labels"] if meta["queries"] else None,
            )
    return LearnedState(controls, manifest["summary"], manifest.get("made_for", {}))
