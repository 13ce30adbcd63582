"""Webhooks in, learned versions out: records annotation changes, runs fits in the background, serves the result.

A webhook only writes the change and asks for a fit, well inside Label Studio's 1 s webhook timeout. Every worker
runs a small loop that claims due fits from the store (``LearningStore.claim_fit``: a fit starts once no event has
arrived for ``PRELABEL_FIT_DEBOUNCE`` seconds, and exactly one worker holds it), so a burst of annotations becomes
one fit. A fit reads the project's annotations, computes what it lacks of the image features (cached on disk), fits
heads and thresholds, and writes a new version; a fit that fails keeps the last good version and says why (log,
status page, ``prelabel_fits_total{outcome="failed"}``). Predictions then use the newest version of the project's
current base version (or the one ``learning.version`` pins), in every worker, read from disk.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend import metrics
from backend.errors import BadRequest, MediaError, ProjectSettingsError
from backend.label_config import Target
from backend.learning.events import Annotation, Change, annotation_from, parse_change
from backend.learning.examples import MASK_GRID, BoxExample, ImageRef, box_examples, choice_examples, region_shape
from backend.learning.features import FeatureCache, key_of
from backend.learning.heads import box_iou, calibrate_threshold, fit_choice_head, greedy_matches
from backend.learning.overlay import learned_plan
from backend.learning.settings import LearningSettings, learning_settings
from backend.learning.store import FitRecord, FitRequest, LearningStore
from backend.learning.sync import fetch_annotations
from backend.learning.versions import (
    KEPT_VERSIONS,
    UNREADABLE,
    ControlState,
    LearnedState,
    read_manifest,
    read_state,
    write_state,
)
from backend.ls_client import LabelStudioAPIError, LabelStudioClient
from backend.media import MediaFetcher
from backend.models import ModelPool, ModelUnavailable
from backend.plan import Plan, TargetPlan
from backend.store import ProjectRecord, ProjectStore, project_id
from model_adapters.base import ModelSpec, Task
from model_adapters.registry import UnknownAdapterError, resolve_adapter

__all__ = ["FitFailed", "Learner"]

log = logging.getLogger(__name__)
# Predictions for calibration are made down to this score (or the configured threshold, if lower).
CALIBRATION_FLOOR = 0.05
_LEASE_S = 900.0
_POLL_S = 2.0  # fits asked for in another worker start within this (a local webhook wakes the loop at once)
_STATES_KEPT = 16


class FitFailed(Exception):
    """A fit could not complete; the last good version stays in service."""


class NothingToLearn(Exception):
    """No control learned anything yet; the message says why, per control."""


@dataclass(frozen=True)
class Services:
    """What fits borrow from the prediction side: models, images, plans, Label Studio, and the batch runner."""

    pool: ModelPool
    fetcher: MediaFetcher
    plan: Callable[[ProjectRecord], Plan]
    label_studio: Callable[[ProjectRecord], LabelStudioClient | None]
    predict: Callable[[list[dict[str, Any]], Plan, LabelStudioClient | None], list[Any]]
    model_wait: float
    fitted: Callable[[ProjectRecord, str], None] = lambda record, version: None  # told each new version


class Learner:
    """One per process.

    Args:
        model_dir: ``MODEL_DIR``: the store, the feature cache and the versions live under ``learning/``.
        projects: The project store (records, versions, status-page events).
        services: See ``Services``.
        debounce: Seconds without a new event before a fit starts.
    """

    def __init__(self, model_dir: Path, projects: ProjectStore, services: Services, debounce: float = 3.0) -> None:
        self.root = model_dir / "learning"
        self.store = LearningStore(model_dir)
        self.features = FeatureCache(self.root / "features")
        self.projects = projects
        self.services = services
        self.debounce = debounce
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._wake = threading.Event()
        self._states: OrderedDict[Path, LearnedState] = OrderedDict()
        self._damaged: set[Path] = set()
        self._states_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ webhooks

    def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Record a webhook's change and ask for a fit; answers at once.

        Raises:
            BadRequest: The payload lacks what its action carries.
        """
        action = payload.get("action")
        change = parse_change(payload)
        if change is None:
            return {"action": action, "status": "ignored", "detail": "this action does not change what is learned"}
        record = self.projects.find(change.project_id)
        settings = learning_settings(record.extra_params) if record else LearningSettings()
        self._apply(change)
        answer = {"action": action, "project": change.project_id, "last_fit": self.store.outcome(change.project_id)}
        if record is None:
            return {**answer, "status": "recorded", "detail": "this project has not been set up here yet: it will "
                    "learn from these annotations once Label Studio connects it"}  # fmt: skip
        if not settings.enabled:
            return {**answer, "status": "disabled", "detail": "learning is off (extra_params.learning.enabled)"}
        self.store.request_fit(change.project_id, sync=change.kind == "sync")
        self._wake.set()
        return {**answer, "status": "scheduled", "detail": f"a fit starts after {self.debounce:g} s without new "
                "events; the next retrieve uses its version", "model_version": self._serving(record)}  # fmt: skip

    def _apply(self, change: Change) -> None:
        if change.kind == "upsert":
            self.store.upsert(change.project_id, change.annotations)
        elif change.kind == "delete":
            self.store.delete(change.project_id, change.deleted)

    # ------------------------------------------------------------------------------------------------- serving

    def serve(self, record: ProjectRecord, plan: Plan) -> Plan:
        """The plan predictions use: the newest (or pinned) fit of this base version, else the base plan.

        Raises:
            ProjectSettingsError: ``learning.version`` pins a version that does not exist.
        """
        settings = learning_settings(record.extra_params)
        pid = project_id(record.project)
        if pid is None or not settings.enabled:
            return plan
        fits = [f for f in self._fits(pid) if f.base_version == plan.model_version]
        if settings.version is not None:
            chosen = [f for f in fits if settings.version in (f.version, f"fit{f.n}")]
            if not chosen:
                known = ", ".join(f"fit{f.n}" for f in fits) or "none yet"
                raise ProjectSettingsError(
                    f"extra_params.learning.version {settings.version!r} is not a fit of the current settings; "
                    f"fits: {known}"
                )
            state = self._state(chosen[0], record.project)
            if state is None:
                raise ProjectSettingsError(f"extra_params.learning.version {settings.version!r}: its file is damaged")
            return learned_plan(plan, state, chosen[0].version)
        if not fits:
            self._refit_for_new_settings(pid, plan.model_version, settings)
        for fit in reversed(fits):  # the newest whose file reads; a damaged one is skipped (and reported once)
            state = self._state(fit, record.project)
            if state is not None:
                return learned_plan(plan, state, fit.version)
        return plan

    def _fits(self, pid: int) -> list[FitRecord]:
        """The project's fits; rebuilt from the files when the store lost them (its file was deleted or corrupt)."""
        fits = self.store.fits(pid)
        if fits:
            return fits
        for path in sorted(self._artifacts(pid), key=lambda p: _number(p)):
            try:
                made = read_manifest(path)["made_for"]
                self.store.add_fit(FitRecord(pid, _number(path), made["project"], made["base_version"], path,
                                             made["created"], {}))  # fmt: skip
            except (*UNREADABLE, sqlite3.IntegrityError):
                continue
        return self.store.fits(pid)

    def _artifacts(self, pid: int) -> list[Path]:
        folder = self.root / str(pid)
        return [p for p in folder.glob("fit*.npz") if _number(p) > 0] if folder.is_dir() else []

    def _refit_for_new_settings(self, pid: int, base: str, settings: LearningSettings) -> None:
        """Settings changed (a new base version) and annotations exist: ask for a fit, once per base version."""
        if not settings.enabled or not self.store.has_annotations(pid) or self.store.pending(pid):
            return
        outcome = self.store.outcome(pid)
        if outcome is None or outcome["base_version"] != base:
            self.store.request_fit(pid)
            self._wake.set()

    def _state(self, fit: FitRecord, project: str) -> LearnedState | None:
        """A fit's learned state (cached), or ``None`` when its file is damaged (logged and reported once)."""
        path = fit.path
        with self._states_lock:
            if path in self._states:
                self._states.move_to_end(path)
                return self._states[path]
        try:
            state = read_state(path)
        except UNREADABLE as exc:
            if path not in self._damaged:
                self._damaged.add(path)
                message = f"{fit.version} cannot be read ({type(exc).__name__}: {exc}); serving an older version"
                log.error("project %s: %s", project, message)
                self.projects.record_event("fit", message, project=project)
            return None
        with self._states_lock:
            self._states[path] = state
            while len(self._states) > _STATES_KEPT:
                self._states.popitem(last=False)
        return state

    # -------------------------------------------------------------------------------------------------- fitting

    def start(self) -> None:
        """Start this process's fit loop (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="learner", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        pause = _POLL_S
        while True:
            self._wake.wait(pause)
            self._wake.clear()
            try:
                while self.run_due():
                    pass
                oldest = self.store.next_request_at()  # sleep until it is due rather than a whole poll
                pause = _POLL_S if oldest is None else min(max(oldest + self.debounce - time.time(), 0.05), _POLL_S)
            except Exception:  # the loop must survive anything (the store heals itself; see sqlite_file)
                log.exception("learning loop")
                pause = _POLL_S

    def run_due(self, debounce: float | None = None) -> bool:
        """Claim and run one due fit, if any (``debounce`` overrides the quiet time it needs); whether one ran."""
        wait = self.debounce if debounce is None else debounce
        request = self.store.claim_fit(self.worker, debounce=wait, lease=_LEASE_S)
        if request is None:
            return False
        running = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(request, running), name="fit-lease", daemon=True)
        renewer.start()
        try:
            self.fit(request)
        finally:
            running.set()
            self.store.finish_fit(request, self.worker)
        return True

    def _renew(self, request: FitRequest, done: threading.Event) -> None:
        """Keep a running fit's lease alive; a worker that dies stops renewing and another takes over."""
        while not done.wait(_LEASE_S / 3):
            self.store.renew_claim(request, self.worker, _LEASE_S)

    def fit(self, request: FitRequest) -> FitRecord | None:
        """Run one fit now; returns the new version's record (``None`` when there is nothing to learn yet)."""
        started = time.perf_counter()
        record = self.projects.find(request.project_id)
        if record is None:
            log.info("fit for project %s skipped: not set up here", request.project_id)
            return None
        try:
            made = self._fit(record, request)
        except NothingToLearn as exc:
            metrics.FITS.labels("nothing_to_learn").inc()
            log.info("project %s: nothing to learn yet: %s", record.project, exc)
            self.store.set_outcome(request.project_id, "nothing_to_learn", str(exc), self._base(record))
            return None
        except Exception as exc:  # a fit must never die silently: whatever it was, it is reported
            metrics.FITS.labels("failed").inc()
            reason = str(exc) if isinstance(exc, FitFailed) else f"{type(exc).__name__}: {exc}"
            message = f"fit failed, still serving {self._serving(record)}: {reason}"
            if isinstance(exc, FitFailed):
                log.warning("project %s: %s", record.project, message)
            else:
                log.exception("project %s: %s", record.project, message)
            self.projects.record_event("fit", message, project=record.project)
            self.store.set_outcome(request.project_id, "failed", message, self._base(record))
            return None
        if made is None:  # learning is off
            return None
        seconds = time.perf_counter() - started
        metrics.FIT_SECONDS.observe(seconds)
        metrics.FITS.labels("fitted").inc()
        log.info("project %s: fitted %s in %.1f s (%s)", record.project, made.version, seconds, made.summary)
        self.store.set_outcome(request.project_id, "fitted", f"{made.version} in {seconds:.1f} s", made.base_version)
        try:
            self.services.fitted(record, made.version)
        except Exception:  # what follows a fit (e.g. re-predicting) never undoes it
            log.exception("project %s: after fitting %s", record.project, made.version)
        return made

    def _base(self, record: ProjectRecord) -> str:
        try:
            return self.services.plan(record).model_version
        except BadRequest:
            return record.model_version

    def _serving(self, record: ProjectRecord) -> str:
        try:
            return self.serve(record, self.services.plan(record)).model_version
        except BadRequest:
            return record.model_version

    def _fit(self, record: ProjectRecord, request: FitRequest) -> FitRecord | None:
        pid = request.project_id
        try:
            settings = learning_settings(record.extra_params)
            plan = self.services.plan(record)
        except BadRequest as exc:
            raise FitFailed(f"the project's settings are invalid: {exc}") from None
        if not settings.enabled:
            return None
        ls = self.services.label_studio(record)
        if request.sync:
            if ls is None:
                raise FitFailed("'Start training' needs Label Studio's URL to fetch annotations: set LABEL_STUDIO_URL")
            try:
                self.store.replace_all(pid, list(fetch_annotations(ls, pid)))
            except (LabelStudioAPIError, BadRequest) as exc:
                raise FitFailed(f"could not fetch the annotations: {exc}") from None
        if ls is not None:
            self._verify(pid, ls)
        annotations = self.store.annotations(pid)
        controls, summary, reasons = {}, {}, {}
        for target in plan.targets:
            try:
                learned = self._learn(target, annotations, settings, ls)
            except (MediaError, ModelUnavailable, UnknownAdapterError) as exc:
                raise FitFailed(f"control {target.target.control!r}: {exc}") from None
            if isinstance(learned, str):
                reasons[target.target.control] = learned
            else:
                controls[target.target.control], summary[target.target.control] = learned
        if not controls:
            raise NothingToLearn("; ".join(f"{control}: {why}" for control, why in reasons.items()) or "no control")
        # Numbers never repeat, even when the store was lost: a reused name would be a different model to Label Studio.
        n = max([f.n for f in self.store.fits(pid)] + [_number(p) for p in self._artifacts(pid)], default=0) + 1
        made_for = {"project": record.project, "base_version": plan.model_version, "created": time.time()}
        path = write_state(self.root / str(pid), n, LearnedState(controls, summary, made_for))
        made = FitRecord(pid, n, record.project, plan.model_version, path, made_for["created"], summary)
        self.store.add_fit(made)
        self.projects.add_version(record.project, made.version)
        self._prune(pid, settings)
        return made

    def _verify(self, pid: int, ls: LabelStudioClient) -> None:
        """Read back from Label Studio every annotation a webhook announced: keep what it says, drop what it does not.

        Label Studio posts webhooks without credentials, so a payload is only a claim: anyone who can reach
        ``/webhook`` could invent annotations (or put them in another project). Only Label Studio's answer teaches.
        """
        for claimed in self.store.annotations(pid, unverified=True):
            try:
                item = ls.get_json(f"/api/annotations/{claimed.id}/")
                task = ls.get_json(f"/api/tasks/{item.get('task')}/") if isinstance(item, dict) else None
            except LabelStudioAPIError as exc:
                if " 404" in str(exc) or " 403" in str(exc):
                    log.warning(
                        "project %s: annotation %s is not in Label Studio (%s): not learned", pid, claimed.id, exc
                    )
                    self.store.delete(pid, [claimed.id])
                    continue
                raise FitFailed(f"could not read annotation {claimed.id} back from Label Studio: {exc}") from None
            try:
                verified = annotation_from(item, task)
            except BadRequest as exc:
                raise FitFailed(f"Label Studio's annotation {claimed.id} is unreadable: {exc}") from None
            if not isinstance(task, dict) or task.get("project") != pid:
                log.warning("project %s: annotation %s belongs to another project: not learned", pid, claimed.id)
                self.store.delete(pid, [claimed.id])
                continue
            self.store.upsert(pid, [verified], verified=True)

    def _prune(self, pid: int, settings: LearningSettings) -> None:
        fits = self.store.fits(pid)
        pinned = {f.n for f in fits if settings.version in (f.version, f"fit{f.n}")}
        old = [f for f in fits[:-KEPT_VERSIONS] if f.n not in pinned]
        self.store.forget_fits(pid, [f.n for f in old])
        for fit in old:
            fit.path.unlink(missing_ok=True)

    def _learn(
        self,
        target: TargetPlan,
        annotations: list[Annotation],
        settings: LearningSettings,
        ls: LabelStudioClient | None,
    ) -> tuple[ControlState, dict[str, Any]] | str:
        """What a control learns, or why it learns nothing yet."""
        if target.target.task is Task.CLASSIFICATION:
            return self._learn_choices(target, annotations, settings, ls)
        if target.target.task in (Task.DETECTION, Task.SEGMENTATION):
            return self._learn_boxes(target, annotations, settings, ls)
        return "this kind of control does not learn"

    # ------------------------------------------------------------------------------------------------- choices

    def _learn_choices(
        self,
        target: TargetPlan,
        annotations: list[Annotation],
        settings: LearningSettings,
        ls: LabelStudioClient | None,
    ) -> tuple[ControlState, dict[str, Any]] | str:
        examples = choice_examples(target.target, annotations)
        if not examples:
            return "no annotated task answers it yet"
        spec = self._embedder(target, settings)
        adapter = self.services.pool.get(spec, self.services.model_wait)
        labels = target.target.labels
        prior = None
        if settings.embedding == "classifier" and hasattr(adapter, "text_prior"):
            prompts, scale, bias = adapter.text_prior(target.prompts, getattr(target.params, "templates", ()))
            rows = [prompts[np.asarray(target.prompt_labels) == i].mean(axis=0) for i in range(len(labels))]
            weights = np.stack([row / max(np.linalg.norm(row), 1e-12) for row in rows]) * scale
            prior = (weights, np.full(len(labels), bias))
        multiple = target.target.attrs.get("choice", "single") == "multiple"
        calibration = getattr(adapter, "calibration", None) if prior else ("sigmoid" if multiple else "softmax")
        features = self._embeddings(spec, adapter, [e.image for e in examples], ls)
        targets = np.zeros((len(examples), len(labels)))
        for row, example in enumerate(examples):
            targets[row, sorted(example.labels)] = 1.0
        head = fit_choice_head(
            features, targets, calibration=calibration or "softmax", prior=prior, prior_weight=settings.prior_weight
        )
        state = ControlState(
            control=target.target.control,
            head={"weights": head.weights.astype(np.float32), "bias": head.bias.astype(np.float32),
                  "usable": head.usable},
            calibration=head.calibration,
            embedder=(spec.adapter, spec.model_id),
        )  # fmt: skip
        counts = targets.sum(axis=0)
        return state, {"examples": len(examples), "per_label": {labels[i]: int(c) for i, c in enumerate(counts)}}

    def _embedder(self, target: TargetPlan, settings: LearningSettings) -> ModelSpec:
        if settings.embedding == "classifier":
            return target.spec
        cls, default_id = resolve_adapter(settings.embedding)
        return ModelSpec(cls.name, default_id, target.spec.device, target.spec.dtype)

    def _embeddings(
        self, spec: ModelSpec, adapter: Any, images: list[ImageRef], ls: LabelStudioClient | None
    ) -> np.ndarray:
        """``(N, D)`` embeddings of the images, computing (and caching) only those not cached yet."""
        computation = key_of("embed", spec.adapter, spec.model_id, spec.dtype)
        keys = [self._image_key(image, ls) for image in images]
        found: dict[str, np.ndarray] = {}
        missing = []
        for image, key in zip(images, keys, strict=True):
            cached = self.features.get(computation, key)
            if cached is not None:
                found[key] = cached["embedding"]
            elif key not in found:
                missing.append((image, key))
        rule = adapter.resize_rule.scale if adapter.resize_rule else None
        for start in range(0, len(missing), adapter.max_batch_size):
            batch = missing[start : start + adapter.max_batch_size]
            pixels = [
                self.services.fetcher.load(image.value, task_id=image.task_id, ls=ls, scale=rule).pixels
                for image, _ in batch
            ]
            vectors = self.services.pool.call(spec, lambda a, p=pixels: a.embed(p), len(pixels))
            for (_, key), vector in zip(batch, vectors, strict=True):
                self.features.put(computation, key, {"embedding": vector})
                found[key] = vector
        return np.stack([found[key] for key in keys])

    @staticmethod
    def _image_key(image: ImageRef, ls: LabelStudioClient | None) -> str:
        return key_of(str(ls.origin) if ls else "", image.value)

    # --------------------------------------------------------------------------------------------------- boxes

    def _learn_boxes(
        self,
        target: TargetPlan,
        annotations: list[Annotation],
        settings: LearningSettings,
        ls: LabelStudioClient | None,
    ) -> tuple[ControlState, dict[str, Any]] | str:
        examples = box_examples(target.target, annotations)
        if not examples:
            return "no annotated task yet"
        labels = target.target.labels
        truths = np.bincount(np.concatenate([e.labels for e in examples]).astype(int), minlength=len(labels))
        thresholds: dict[str, float] = {}
        curves: dict[str, Any] = {}
        scorer = target.detector or target
        configured = getattr(scorer.params, "score_threshold", None)
        calibrating = [i for i in range(len(labels)) if truths[i] >= settings.min_examples]
        if calibrating and configured is not None:
            predictions = self._floor_predictions(target, examples, ls)
            for i in calibrating:
                curve = calibrate_threshold(
                    [_matched(example, found, i) for example, found in zip(examples, predictions, strict=True)],
                    [int((example.labels == i).sum()) for example in examples],
                    floor=min(CALIBRATION_FLOOR, configured),
                )
                curves[labels[i]] = {"threshold": curve.best, "f1": float(curve.f1.max()) if len(curve.f1) else 0.0}
                if curve.best is not None:
                    thresholds[labels[i]] = round(curve.best, 6)
        queries, query_labels = self._queries(scorer, examples, settings, ls)
        if not thresholds and queries is None:
            if configured is None:
                return f"{scorer.spec.adapter} has no score threshold to calibrate"
            floor = min(CALIBRATION_FLOOR, configured)
            why = [
                f"{labels[i]}: the model found none of its {truths[i]} annotated objects above {floor:g}"
                if i in calibrating
                else f"{labels[i]}: {truths[i]} of the {settings.min_examples} annotated objects calibration needs"
                for i in range(len(labels))
            ]
            return "; ".join(why)
        state = ControlState(target.target.control, thresholds=thresholds, queries=queries, query_labels=query_labels)
        summary = {
            "examples": len(examples),
            "per_label": {labels[i]: int(c) for i, c in enumerate(truths)},
            "calibration": curves,
            "queries": 0 if queries is None else len(queries),
        }
        return state, summary

    def _floor_predictions(
        self, target: TargetPlan, examples: list[BoxExample], ls: LabelStudioClient | None
    ) -> list[_Found]:
        """What the control predicts on each annotated image down to the calibration floor, as prediction does it."""
        scorer = target.detector or target
        floor = min(CALIBRATION_FLOOR, scorer.params.score_threshold)
        lowered = replace(
            scorer, params=replace(scorer.params, score_threshold=floor), post=_no_label_thresholds(scorer)
        )
        probe = replace(target, detector=lowered) if target.detector else lowered
        plan = Plan((probe,), model_version="calibration")
        computation = key_of("floor", repr(probe.spec), repr(probe.params), repr(probe.post), probe.prompts,
                             probe.prompt_labels, repr(lowered.spec), repr(lowered.params), repr(lowered.post))  # fmt: skip
        found: list[_Found] = []
        missing: list[int] = []
        for i, example in enumerate(examples):
            cached = self.features.get(computation, self._image_key(example.image, ls))
            found.append(_Found.from_arrays(cached) if cached is not None else _Found.empty())
            if cached is None:
                missing.append(i)
        if missing:
            tasks = [{"id": examples[i].image.task_id, "data": {target.target.value_key: examples[i].image.value}}
                     for i in missing]  # fmt: skip
            entries = self.services.predict(tasks, plan, ls)
            for i, entry in zip(missing, entries, strict=True):
                if not isinstance(entry, dict):
                    raise FitFailed(f"could not predict task {examples[i].image.task_id} (see the status page)")
                result = _Found.from_regions(entry["result"], target.target)
                self.features.put(computation, self._image_key(examples[i].image, ls), result.arrays())
                found[i] = result
        return found

    def _queries(
        self, scorer: TargetPlan, examples: list[BoxExample], settings: LearningSettings, ls: LabelStudioClient | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Image-guided queries for OWL-ViT/OWLv2, from annotations.

        The newest annotated boxes of each label, and the newest boxes annotators deleted from the prediction they
        started from, as negatives (label ``-1``: a predicted box whose best query is a negative is dropped).
        """
        adapter = self.services.pool.get(scorer.spec, self.services.model_wait)
        if not settings.few_shot or not hasattr(adapter, "embed_boxes") or scorer.target.task is not Task.DETECTION:
            return None, None
        kept = settings.queries_per_label
        chosen: dict[int, list[tuple[ImageRef, np.ndarray]]] = {}
        for example in reversed(examples):  # newest tasks first
            for label, box in zip(example.labels, example.boxes, strict=True):
                if len(chosen.setdefault(int(label), [])) < kept:
                    chosen[int(label)].append((example.image, box))
        deleted: list[tuple[ImageRef, np.ndarray]] = []
        for example in reversed(examples):
            deleted += [(example.image, box) for box in self._deleted_boxes(scorer.target, example, ls)]
        vectors, labels = [], []
        for label, items in [*sorted(chosen.items()), (-1, deleted[: kept * len(scorer.target.labels)])]:
            for image, box in items:
                vectors.append(self._box_embedding(scorer.spec, image, box, ls))
                labels.append(label)
        if not vectors:
            return None, None
        return np.stack(vectors).astype(np.float32), np.asarray(labels, dtype=np.int64)

    def _box_embedding(self, spec: ModelSpec, image: ImageRef, box: np.ndarray, ls: LabelStudioClient | None) -> Any:
        """The model's class embedding of a box (percent xyxy) on an image, cached."""
        computation = key_of("queries", spec.adapter, spec.model_id, spec.dtype)
        key = key_of(self._image_key(image, ls), np.asarray(box).round(4).tolist())
        cached = self.features.get(computation, key)
        if cached is not None:
            return cached["embedding"]
        fetched = self.services.fetcher.load(image.value, task_id=image.task_id, ls=ls)
        height, width = fetched.pixels.shape[:2]
        pixels_box = np.asarray(box) / 100 * [width, height, width, height]
        vector = self.services.pool.call(spec, lambda a: a.embed_boxes(fetched.pixels, pixels_box[None]), 1)[0]
        self.features.put(computation, key, {"embedding": vector})
        return vector

    def _deleted_boxes(self, target: Target, example: BoxExample, ls: LabelStudioClient | None) -> list[np.ndarray]:
        """Boxes of the prediction the annotator started from that no annotated box of their label matches."""
        if example.parent_prediction is None or ls is None:
            return []
        computation = key_of("parent-prediction", str(ls.origin))
        key = key_of(example.parent_prediction)
        cached = self.features.get(computation, key)
        if cached is None:
            try:
                prediction = ls.get_json(f"/api/predictions/{example.parent_prediction}/")
            except LabelStudioAPIError as exc:
                log.info("prediction %s of task %s not read: %s", example.parent_prediction, example.image.task_id, exc)
                return []
            found = _Found.from_regions(prediction.get("result") or [], target)
            cached = found.arrays()
            self.features.put(computation, key, cached)
        predicted = _Found.from_arrays(cached)
        deleted = []
        for label, box in zip(predicted.labels, predicted.boxes, strict=True):
            same = example.boxes[example.labels == label]
            if not len(same) or box_iou(box[None], same).max() < 0.5:
                deleted.append(box)
        return deleted


@dataclass(frozen=True)
class _Found:
    """A control's predictions on one image: labels, percent boxes, scores, and masks on the comparison grid."""

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray | None

    @classmethod
    def empty(cls) -> _Found:
        return cls(np.zeros(0, int), np.zeros((0, 4)), np.zeros(0), None)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> _Found:
        return cls(arrays["labels"], arrays["boxes"], arrays["scores"], arrays.get("masks"))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"labels": self.labels, "boxes": self.boxes, "scores": self.scores}
        return out if self.masks is None else {**out, "masks": self.masks}

    @classmethod
    def from_regions(cls, regions: list[dict[str, Any]], target: Target) -> _Found:
        """Back from Label Studio regions (what prediction answered) to arrays, with the annotation's conventions."""
        kind = {"RectangleLabels": "rectanglelabels", "PolygonLabels": "polygonlabels", "BrushLabels": "brushlabels"}
        key = kind[target.control_type]
        labels, boxes, scores, masks = [], [], [], []
        for region in regions:
            if region.get("from_name") != target.control:
                continue
            shape = region_shape(region, key)
            label = (region["value"].get(key) or [None])[0]
            if shape is None or label not in target.labels:
                continue
            labels.append(target.labels.index(label))
            boxes.append(shape[0])
            scores.append(float(region.get("score", 0.0)))
            masks.append(shape[1])
        masked = target.task is Task.SEGMENTATION
        return cls(
            np.asarray(labels, dtype=int),
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(scores, dtype=np.float64),
            (np.stack(masks) if masks else np.zeros((0, 1, 1), bool)) if masked else None,
        )


def _matched(example: BoxExample, found: _Found, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of one label's predictions on one image, and which match an annotated object of that label."""
    mine = found.labels == label
    truth = example.labels == label
    scores = found.scores[mine]
    if example.masks is not None and found.masks is not None:
        iou = _mask_iou(found.masks[mine], example.masks[truth])
    else:
        iou = box_iou(found.boxes[mine], example.boxes[truth])
    return scores, greedy_matches(scores, iou)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of masks on the same comparison grid (``MASK_GRID``)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if a.shape[1:] != b.shape[1:]:  # grids of one image always agree; guard against a stale cache entry
        raise FitFailed(f"mask grids differ ({a.shape[1:]} vs {b.shape[1:]}, expected {MASK_GRID} on the long side)")
    flat_a = a.reshape(len(a), -1).astype(np.float64)
    flat_b = b.reshape(len(b), -1).astype(np.float64)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(axis=1)[:, None] + flat_b.sum(axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _number(path: Path) -> int:
    """N of ``fit<N>.npz`` (0 for anything else)."""
    found = re.fullmatch(r"fit(\d+)\.npz", path.name)
    return int(found.group(1)) if found else 0


def _no_label_thresholds(target: TargetPlan) -> Any:
    post = target.post
    return replace(post, label_thresholds={}) if hasattr(post, "label_thresholds") else post
