"""A claimed job -> its project's tasks predicted and written, page after page, until none are left.

Each page: read the tasks after the job's cursor (``pages``), leave alone the ones ``skip_reason`` names, predict the
rest with the project's served plan through the same ``Runner.predict`` as ``/predict`` (models, batching, images,
per-task failures), write the predictions (``writer``), then record the page (cursor, counts, failures) in one
transaction (``JobStore.advance``). The engine predicts pages in this process one at a time, or on Ray actors
several at once; pages are read only as far ahead as the engine has free slots and are written and recorded strictly
in order, so memory stays flat however large the project and the cursor never passes an unwritten task. Label Studio or a model being unavailable is retried with growing pauses, then fails the job with the
reason; a task that fails gets no prediction and its reason is kept, and the job goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from backend import metrics
from backend.errors import BadRequest
from backend.jobs.pages import JobFilter, Page, read_page, skip_reason
from backend.jobs.store import Counts, Job, JobStore
from backend.jobs.writer import write_predictions
from backend.ls_client import LabelStudioAPIError, LabelStudioClient
from backend.models import ModelUnavailable
from backend.plan import Plan
from backend.runner import Outcome, RequestBudget

__all__ = ["Engine", "JobError", "JobRunner", "LocalEngine", "Target"]

log = logging.getLogger(__name__)
LEASE_S = 30.0
RETRY_PAUSES_S = (2.0, 5.0, 10.0, 20.0, 30.0)  # then the job fails


class JobError(Exception):
    """A job cannot go on (the project is not set up here, Label Studio unreachable for good); says why."""


class _Cancelled(Exception):
    """The job was cancelled while it waited to try again."""


class Engine(Protocol):
    """Where pages are predicted: in this process (``LocalEngine``) or on a Ray cluster (``backend.jobs.ray_engine``).

    Attributes:
        slots: Pages predicted at once; the job reads no further ahead, so memory and load stay bounded.
    """

    slots: int

    def submit(
        self, tasks: list[Any], plan: Plan, ls: LabelStudioClient, budget: RequestBudget
    ) -> Callable[[], Outcome]:
        """Start predicting; the callable waits for the ``Outcome`` (and raises what prediction raised)."""
        ...


class LocalEngine:
    """Predicts one page at a time in this process, when its result is asked for."""

    slots = 1

    def __init__(self, predict: Callable[[list[Any], Plan, LabelStudioClient, RequestBudget], Outcome]) -> None:
        self.predict = predict

    def submit(
        self, tasks: list[Any], plan: Plan, ls: LabelStudioClient, budget: RequestBudget
    ) -> Callable[[], Outcome]:
        """``Runner.predict`` of the page, run by the callable."""
        return lambda: self.predict(tasks, plan, ls, budget)


@dataclass(frozen=True)
class Target:
    """What a job predicts with: the project's served plan and its Label Studio.

    ``rescore(tasks, entries)`` adds, in place, the scores ``/predict`` adds after the runner (``backend.ranking``),
    so a job's predictions are ``/predict``'s.
    """

    plan: Plan
    ls: LabelStudioClient
    rescore: Callable[[list[Any], list[Any]], None] = lambda tasks, entries: None


@dataclass(frozen=True)
class _Pending:
    """A page handed to the engine, waiting to be written and recorded."""

    page: Page
    target: Target
    after: int  # the cursor before this page
    todo: list[Any]
    skipped: set[int]
    budget: RequestBudget
    result: Callable[[], Outcome] | None
    started: float


class JobRunner:
    """Runs jobs claimed from the store.

    Args:
        store: The job store.
        resolve: Project id -> its ``Target`` (asked for every page, so a new fit or new settings apply at once);
            raises ``JobError`` or ``BadRequest`` when the project cannot be predicted.
        engine: Predicts pages: ``LocalEngine(Runner.predict)`` (in this process) or a ``RayEngine``.
        page_size: Tasks read, predicted and written together.
        retry_pauses: Seconds between tries when Label Studio or a model is unavailable.
    """

    def __init__(
        self,
        store: JobStore,
        resolve: Callable[[int], Target],
        engine: Engine,
        page_size: int = 100,
        retry_pauses: tuple[float, ...] = RETRY_PAUSES_S,
    ) -> None:
        self.store = store
        self.resolve = resolve
        self.engine = engine
        self.page_size = page_size
        self.retry_pauses = retry_pauses

    def run(self, job: Job, worker: str, progress: Callable[[Job], None] = lambda job: None) -> Job:
        """Run a job this worker has claimed until it is done, fails, is cancelled or is taken over; its last state."""
        self._last_recorded = 0.0
        lost = threading.Event()
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(job.id, worker, stop, lost), daemon=True)
        renewer.start()
        try:
            self._pages(job, worker, lost, progress)
        except _Cancelled:
            self._end(job.id, worker, "cancelled")
        except (JobError, BadRequest) as exc:
            self._end(job.id, worker, "failed", str(exc))
        except Exception as exc:  # a job never dies silently: whatever it was, the job says it
            log.exception("job %s failed", job.id)
            self._end(job.id, worker, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            stop.set()
            self.store.release(job.id, worker)  # a job still running (taken over, or interrupted) waits for a claim
        final = self.store.get(job.id)
        assert final is not None
        progress(final)
        return final

    def _pages(self, job: Job, worker: str, lost: threading.Event, progress: Callable[[Job], None]) -> None:
        """Read pages ahead while the engine has free slots; write and record them strictly in order."""
        queue: deque[_Pending] = deque()
        ahead, exhausted, first = job.cursor, False, True
        while True:
            if self.store.cancelled(job.id):
                self._end(job.id, worker, "cancelled")
                return
            if lost.is_set():
                log.warning("job %s: another worker took it over; stopping here", job.id)
                return
            while not exhausted and len(queue) < self.engine.slots:
                started = time.monotonic()
                target, page = self._retrying(job.id, lambda after=ahead: self._read(job, after))
                if first:  # what is finished plus what is left: the progress bar's length
                    first = False
                    if page.left is not None:
                        current = self.store.get(job.id)
                        assert current is not None
                        self.store.set_total(job.id, current.finished_tasks + page.left)
                if not page.ids:
                    exhausted = True
                    break
                queue.append(self._submit(job, target, page, ahead, started))
                ahead = page.ids[-1]
            if not queue:
                self._end(job.id, worker, "done")
                return
            pending = queue.popleft()
            cursor, counts = self._finish(job, pending)
            seconds = time.monotonic() - max(pending.started, self._last_recorded)
            self._last_recorded = time.monotonic()
            if not self.store.advance(job.id, worker, cursor, counts, model_version=pending.target.plan.model_version,
                                      seconds=seconds):  # fmt: skip
                return  # taken over meanwhile: the new holder reads this page again and skips what was written
            metrics.JOB_TASKS.labels("predicted").inc(counts.predicted)
            metrics.JOB_TASKS.labels("skipped").inc(counts.skipped)
            metrics.JOB_TASKS.labels("failed").inc(len(counts.failures))
            now = self.store.get(job.id)
            assert now is not None
            progress(now)
            if cursor != pending.page.ids[-1]:  # stopped inside the page (cancelled): later pages wait for a rerun
                queue.clear()
                exhausted = False
                ahead = cursor

    def _read(self, job: Job, after: int) -> tuple[Target, Page]:
        target = self.resolve(job.project_id)
        return target, read_page(target.ls, job.project_id, job.filter, after, self.page_size)

    def _submit(self, job: Job, target: Target, page: Page, after: int, started: float) -> _Pending:
        """Leave alone what ``skip_reason`` names and hand the rest of a page to the engine."""
        version = target.plan.model_version
        todo, skipped = [], set()
        for task in page.tasks:
            if skip_reason(task, version, job.filter) is None:
                todo.append(task)
            else:
                skipped.add(task["id"])
        budget = RequestBudget(client_gone=lambda: self.store.cancelled(job.id))  # checked between chunks
        result = self.engine.submit(todo, target.plan, target.ls, budget) if todo else None
        return _Pending(page, target, after, todo, skipped, budget, result, started)

    def _finish(self, job: Job, pending: _Pending) -> tuple[int, Counts]:
        """Wait for a page's predictions and write them; the new cursor and the page's counts.

        The cursor is the page's last id, or the last one before a task the prediction did not start (cancelled).
        """
        target, todo = pending.target, pending.todo
        outcome = Outcome(entries=[])
        if pending.result is not None:
            try:
                outcome = pending.result()
            except (LabelStudioAPIError, ModelUnavailable) as exc:
                log.warning("job %s: %s; trying again", job.id, exc)
                outcome = self._retrying(job.id, lambda: self.engine.submit(todo, target.plan, target.ls,
                                                                            pending.budget)())  # fmt: skip
        target.rescore(todo, outcome.entries)
        unstarted = set(outcome.unreached)
        predicted = [(t["id"], e) for t, e in zip(todo, outcome.entries, strict=True) if isinstance(e, dict)]
        tries = iter(range(len(self.retry_pauses) + 1))
        self._retrying(job.id, lambda: self._write(job.project_id, target, predicted, again=next(tries) > 0))
        ids = pending.page.ids
        stop = next((i for i, task_id in enumerate(ids) if task_id in unstarted), len(ids))
        done = set(ids[:stop])
        cursor = ids[stop - 1] if stop else pending.after
        failures = {t: "; ".join(r) for t, r in outcome.failed.items() if t in done}
        failures.update({t: f"task {t} is not in project {job.project_id}" for t in pending.page.missing if t in done})
        counts = Counts(
            predicted=sum(1 for t, _ in predicted if t in done),
            skipped=sum(1 for t in pending.skipped if t in done),
            failures=failures,
        )
        return cursor, counts

    def _write(self, pid: int, target: Target, predicted: list[tuple[int, dict[str, Any]]], *, again: bool) -> None:
        """Write a page's predictions; after a failed try, only those Label Studio does not hold yet.

        A failed call may have been stored and only its answer lost.
        """
        if again and predicted:
            held = read_page(target.ls, pid, JobFilter(task_ids=tuple(t for t, _ in predicted)), 0, len(predicted))
            version = target.plan.model_version
            written = {
                t["id"]
                for t in held.tasks
                if skip_reason(t, version, JobFilter(without_annotations=False)) == "already predicted"
            }
            predicted = [(t, e) for t, e in predicted if t not in written]
        write_predictions(target.ls, pid, predicted)

    def _retrying(self, job_id: int, call: Callable[[], Any]) -> Any:
        """``call()``, tried again after each pause while Label Studio or a model is unavailable."""
        for pause in (*self.retry_pauses, None):
            try:
                return call()
            except (LabelStudioAPIError, ModelUnavailable) as exc:
                if pause is None:
                    raise JobError(f"gave up after {len(self.retry_pauses) + 1} tries: {exc}") from None
                log.warning("job %s: %s; trying again in %g s", job_id, exc, pause)
                if self._wait_or_cancelled(job_id, pause):
                    raise _Cancelled() from None
        raise AssertionError("unreachable")

    def _wait_or_cancelled(self, job_id: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.store.cancelled(job_id):
                return True
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        return False

    def _renew(self, job_id: int, worker: str, stop: threading.Event, lost: threading.Event) -> None:
        while not stop.wait(LEASE_S / 3):
            if not self.store.renew(job_id, worker, LEASE_S):
                lost.set()
                return

    def _end(self, job_id: int, worker: str, state: str, error: str | None = None) -> None:
        self.store.finish(job_id, worker, state, error)
        metrics.JOBS.labels(state).inc()
        job = self.store.get(job_id)
        if job is not None:
            log.info("job %s (project %s) %s: %s predicted, %s skipped, %s failed%s", job_id, job.project_id, state,
                     job.predicted, job.skipped, job.failed, f": {error}" if error else "")  # fmt: skip
