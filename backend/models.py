"""Loaded models, shared by every project in the process and loaded in background threads.

``/setup`` must answer in under 3 s, so it only *starts* loading the models a project needs; ``/predict``
waits for them. Equal ``ModelSpec``s share one adapter instance. Forward passes on one model are serialised
(a lock per model), which bounds memory on a GPU and keeps gunicorn threads from oversubscribing the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import supervision as sv

from backend import metrics
from model_adapters.base import Adapter, ModelSpec, Query
from model_adapters.registry import resolve_adapter
from model_adapters.segmentation import EmbeddingCache, PromptableSegmenter

__all__ = ["ModelPool", "ModelUnavailable"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRY_AFTER_S = 30.0
# One load at a time per process: model libraries' lazy imports are not thread-safe, and parallel loads
# would only compete for the same disk and memory.
_LOAD_LOCK = threading.Lock()


class ModelUnavailable(Exception):
    """A model failed to load or is still loading after the wait; the whole request is answered 503."""


@dataclass
class _Entry:
    spec: ModelSpec
    ready: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapter: Adapter | None = None
    error: Exception | None = None
    failed_at: float = 0.0


class ModelPool:
    """Process-wide adapters keyed by ``ModelSpec``.

    Args:
        embedding_cache_items: Image embeddings each promptable segmenter keeps (smart tools).
        embedding_cache_bytes: Bytes of image embeddings each promptable segmenter keeps.
    """

    def __init__(self, embedding_cache_items: int = 32, embedding_cache_bytes: int = 2 << 30) -> None:
        self._entries: dict[ModelSpec, _Entry] = {}
        self._lock = threading.Lock()
        self._cache_bounds = (embedding_cache_items, embedding_cache_bytes)

    def preload(self, spec: ModelSpec) -> None:
        """Start loading ``spec`` in the background unless it is loaded, loading, or failed just now."""
        self._entry(spec)

    def _entry(self, spec: ModelSpec) -> _Entry:
        with self._lock:
            entry = self._entries.get(spec)
            if entry is not None and not (entry.error and time.monotonic() - entry.failed_at > _RETRY_AFTER_S):
                return entry
            entry = self._entries[spec] = _Entry(spec)
        threading.Thread(target=self._load, args=(entry,), name=f"load-{spec.adapter}", daemon=True).start()
        return entry

    def _load(self, entry: _Entry) -> None:
        spec = entry.spec
        try:
            with _LOAD_LOCK:
                started = time.perf_counter()
                adapter_cls, _ = resolve_adapter(spec.adapter)
                adapter = adapter_cls(spec)
                if isinstance(adapter, PromptableSegmenter):
                    adapter.embeddings = EmbeddingCache(*self._cache_bounds)
                adapter.load()
            entry.adapter = adapter
            seconds = time.perf_counter() - started
            metrics.MODEL_LOAD_SECONDS.labels(spec.adapter, spec.model_id).observe(seconds)
            log.info("loaded %s (%s) on %s in %.1f s", spec.adapter, spec.model_id, adapter.device, seconds)
        except Exception as exc:
            entry.error, entry.failed_at = exc, time.monotonic()
            metrics.ERRORS.labels("model_load").inc()
            log.error("could not load %s (%s): %s", spec.adapter, spec.model_id, exc)
        finally:
            entry.ready.set()

    def get(self, spec: ModelSpec, timeout: float) -> Adapter:
        """The loaded adapter, waiting up to ``timeout`` seconds for a load in progress.

        Raises:
            ModelUnavailable: Loading failed or did not finish in time.
        """
        entry = self._entry(spec)
        if not entry.ready.wait(timeout):
            raise ModelUnavailable(f"{spec.adapter} ({spec.model_id}) is still loading; retry in a moment")
        if entry.error is not None:
            raise ModelUnavailable(f"{spec.adapter} ({spec.model_id}) failed to load: {entry.error}")
        assert entry.adapter is not None
        return entry.adapter

    def retain(self, specs: Iterable[ModelSpec]) -> list[ModelSpec]:
        """Unload the loaded (or failed) models not in ``specs``, so settings changes do not pile up models."""
        keep = set(specs)
        with self._lock:
            dropped = [spec for spec, e in self._entries.items() if spec not in keep and e.ready.is_set()]
            for spec in dropped:
                del self._entries[spec]
        for spec in dropped:
            log.info("unloaded %s (%s): no project uses it any more", spec.adapter, spec.model_id)
        return dropped

    def call(self, spec: ModelSpec, work: Callable[[Adapter], T], images: int) -> T:
        """Run ``work(adapter)`` on a loaded model (the caller has waited for it with ``get``), timed.

        Raises:
            ModelUnavailable: The model was unloaded meanwhile (its project's settings changed).
        """
        entry = self._entries.get(spec)
        if entry is None or entry.adapter is None:
            raise ModelUnavailable(f"{spec.adapter} ({spec.model_id}) is not loaded; retry")
        started = time.perf_counter()
        with entry.lock:
            out = work(entry.adapter)
        metrics.ADAPTER_SECONDS.labels(spec.adapter).observe(time.perf_counter() - started)
        metrics.ADAPTER_IMAGES.labels(spec.adapter).inc(images)
        return out

    def run(self, spec: ModelSpec, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        """Run a loaded model's three stages on one batch."""
        return self.call(spec, lambda adapter: adapter(images, query), len(images))

    def status(self) -> list[dict[str, str]]:
        """One line per model: spec and state (loading, ready, failed)."""
        with self._lock:
            entries = list(self._entries.values())
        return [
            {
                "adapter": e.spec.adapter,
                "model_id": e.spec.model_id,
                "device": e.adapter.device if e.adapter else e.spec.device,
                "state": "failed" if e.error else "ready" if e.ready.is_set() else "loading",
            }
            for e in entries
        ]
