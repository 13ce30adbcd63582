"""What a fit computes per image, kept on disk so a refit after one more annotation costs only the new image.

Entries are keyed by *what* computed them (model, weights, dtype and the knobs that change the answer) and *which*
image (Label Studio origin plus the task's image reference), and written atomically (a temporary file renamed into
place), so a worker killed mid-write leaves no torn entry. Embeddings are a few KiB per image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FeatureCache", "key_of"]


def key_of(*parts: Any) -> str:
    """A stable digest of JSON-able parts (a model's identity, an image's reference)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class FeatureCache:
    """Arrays per (computation, image) under ``root``.

    Args:
        root: Directory of the cache (``MODEL_DIR/learning/features``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, computation: str, image: str) -> Path:
        return self.root / computation / image[:2] / f"{image}.npz"

    def get(self, computation: str, image: str) -> dict[str, np.ndarray] | None:
        """The arrays stored for this image, or ``None``."""
        path = self._path(computation, image)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # damaged: recompute
            path.unlink(missing_ok=True)
            return None

    def put(self, computation: str, image: str, arrays: dict[str, np.ndarray]) -> None:
        """Store arrays for this image, atomically."""
        path = self._path(computation, image)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as file:
                np.savez(file, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
