"""Loaded models, shared by every project in the process and loaded in background threads.

``/setup`` must answer in under 3 s, so it only *starts* loading the models a project needs; ``/predict``
waits for them. Loads queue for a few loader threads (``PRELABEL_LOAD_WORKERS``); a model someone is waiting for
(``/setup``, ``/predict``) goes ahead of background preloads, so the first retrieve after a restart never waits
behind other projects' models. Equal ``ModelSpec``s share one adapter instance. Forward passes on one model are
serialised (a lock per model), which bounds memory on a GPU and keeps gunicorn threads from oversubscribing the CPU.
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
# A family's first load imports its model library; those lazy imports are not thread-safe, so they run one at a time.
_IMPORT_LOCK = threading.Lock()
_IMPORTED: set[str] = set()


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
    urgent: bool = False  # someone waits for it: load before background preloads


class ModelPool:
    """Process-wide adapters keyed by ``ModelSpec``.

    Args:
        embedding_cache_items: Image embeddings each promptable segmenter keeps (smart tools).
        embedding_cache_bytes: Bytes of image embeddings each promptable segmenter keeps.
        load_workers: Models loading at once (each holds its load's peak memory).
    """

    def __init__(
        self, embedding_cache_items: int = 32, embedding_cache_bytes: int = 2 << 30, load_workers: int = 1
    ) -> None:
        self._entries: dict[ModelSpec, _Entry] = {}
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._pending: list[_Entry] = []
        self._cache_bounds = (embedding_cache_items, embedding_cache_bytes)
        for i in range(load_workers):
            threading.Thread(target=self._loader, name=f"model-loader-{i}", daemon=True).start()

    def preload(self, spec: ModelSpec, *, urgent: bool = False) -> None:
        """Queue ``spec`` for loading unless it is loaded, loading, or failed just now (returns at once).

        ``urgent`` (someone is about to use it) puts it ahead of background preloads.
        """
        self._entry(spec, urgent)

    def _entry(self, spec: ModelSpec, urgent: bool) -> _Entry:
        with self._lock:
            entry = self._entries.get(spec)
            if entry is None or (entry.error and time.monotonic() - entry.failed_at > _RETRY_AFTER_S):
                entry = self._entries[spec] = _Entry(spec)
                self._pending.append(entry)
            entry.urgent |= urgent
            self._queued.notify()
            return entry

    def _loader(self) -> None:
        while True:
            with self._lock:
                self._queued.wait_for(lambda: bool(self._pending))
                entry = next((e for e in self._pending if e.urgent), self._pending[0])
                self._pending.remove(entry)
            self._load(entry)

    def _load(self, entry: _Entry) -> None:
        spec = entry.spec
        try:
            started = time.perf_counter()
            adapter_cls, _ = resolve_adapter(spec.adapter)
            adapter = adapter_cls(spec)
            if isinstance(adapter, PromptableSegmenter):
                adapter.embeddings = EmbeddingCache(*self._cache_bounds)
            if spec.adapter in _IMPORTED:
                adapter.load()
            else:
                with _IMPORT_LOCK:
                    adapter.load()
                    _IMPORTED.add(spec.adapter)
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
        entry = self._entry(spec, urgent=True)
        if not entry.ready.wait(timeout):
            raise ModelUnavailable(f"{spec.adapter} ({spec.model_id}) is still loading; retry in a moment")
        if entry.error is not None:
            raise ModelUnavailable(f"{spec.adapter} ({spec.model_id}) failed to load: {entry.error}")
        assert entry.adapter is not None
        return entry.adapter

    def retain(self, specs: Iterable[ModelSpec]) -> list[ModelSpec]:
        """Unload (or unqueue) the models not in ``specs``, so settings changes do not pile up models.

        A model loading right now finishes loading and is dropped by a later call.
        """
        keep = set(specs)
        with self._lock:
            dropped = [
                spec
                for spec, e in self._entries.items()
                if spec not in keep and (e.ready.is_set() or e in self._pending)
            ]
            for spec in dropped:
                entry = self._entries.pop(spec)
                if entry in self._pending:
                    self._pending.remove(entry)
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

    def status(self, *, reasons: bool = True) -> list[dict[str, str]]:
        """One line per model: spec and state (queued, loading, ready, failed, with the reason unless not wanted)."""
        with self._lock:
            entries = [(e, e in self._pending) for e in self._entries.values()]
        lines = []
        for entry, queued in entries:
            state = "failed" if entry.error else "ready" if entry.ready.is_set() else "queued" if queued else "loading"
            line = {
                "adapter": entry.spec.adapter,
                "model_id": entry.spec.model_id,
                "device": entry.adapter.device if entry.adapter else entry.spec.device,
                "state": state,
            }
            if entry.error and reasons:
                line["error"] = str(entry.error)
            lines.append(line)
        return lines
