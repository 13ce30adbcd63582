"""The ML backend's behaviour, without HTTP: setup, predict, webhook, versions.

The familiar shape for people who know Label Studio's ML backends (``setup``, ``predict(tasks, context)``,
``fit(event, data)``); the Flask layer in ``backend.app`` only parses requests and renders answers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backend.errors import BadRequest
from backend.jobs.loop import JobLoop
from backend.jobs.pages import JobFilter
from backend.jobs.report import describe
from backend.jobs.runner import JobError, JobRunner, LocalEngine, Target
from backend.jobs.store import Job, JobStore
from backend.learning.examples import teaching
from backend.learning.learner import Learner, Services
from backend.learning.settings import learning_settings
from backend.ls_client import LabelStudioAPIError, LabelStudioClient
from backend.media import MediaFetcher
from backend.models import ModelPool
from backend.plan import Plan, build_plan, check_server_defaults, parse_extra_params
from backend.preview import first_tasks, report
from backend.ranking.closing_loop import ORIGIN as CLOSING_LOOP
from backend.ranking.closing_loop import most_uncertain, show_version
from backend.ranking.settings import ranking_settings
from backend.ranking.strategies import agreement, boosted, label_counts
from backend.ranking.tabs import disagreements_tab, ensure_tab, label_next_tab, score_source
from backend.review import gauges
from backend.review.fetch import Skipped, backend_version, pairs
from backend.review.history import summary, versions
from backend.review.metrics import review_report
from backend.review.refresh import ANNOTATION_ACTIONS, ReviewRefresher
from backend.review.thresholds import project_thresholds
from backend.runner import Outcome, RequestBudget, Runner
from backend.settings import ServerSettings
from backend.store import ProjectRecord, ProjectStore, project_id
from model_adapters.base import ModelSpec

__all__ = ["PrelabelService"]

log = logging.getLogger(__name__)
_PROBE_EVERY_S = 600.0


class PrelabelService:
    """One per process: owns the project store, the model pool and the media fetcher."""

    def __init__(self, settings: ServerSettings) -> None:
        check_server_defaults(settings.defaults)
        self.settings = settings
        self.store = ProjectStore(settings.model_dir)
        self.pool = ModelPool(
            settings.embedding_cache_items, settings.embedding_cache_mb << 20, load_workers=settings.load_workers
        )
        self.fetcher = MediaFetcher(settings)
        self.session = self.fetcher.session
        self.executor = ThreadPoolExecutor(settings.media_workers, thread_name_prefix="media")
        self._probed: dict[tuple[Any, str], float] = {}
        self._probe_lock = threading.Lock()
        self.runner = Runner(self.pool, self.fetcher, self.executor, settings.model_wait)
        services = Services(
            pool=self.pool,
            fetcher=self.fetcher,
            plan=lambda record: self.plan(record.label_config, record.extra_params),
            label_studio=self.label_studio,
            predict=lambda tasks, plan, ls: self.runner.predict(tasks, plan, ls).entries,
            model_wait=settings.model_wait,
            fitted=self._repredict_after_fit,
        )
        self.learner = Learner(settings.model_dir, self.store, services, debounce=settings.fit_debounce)
        engine = LocalEngine(self.runner.predict)
        runner = JobRunner(JobStore(settings.model_dir), self.job_target, engine, settings.job_page_size)
        self.jobs = JobLoop(runner, finished=self._after_job)
        self.reviews = ReviewRefresher(self.review, self._review_failed, debounce=settings.fit_debounce)

    def plan(self, label_config: str, extra_params: dict[str, Any]) -> Plan:
        """The plan for a config and a project's settings, with the server's defaults underneath."""
        return build_plan(
            label_config, extra_params, self.settings.defaults, device=self.settings.device, dtype=self.settings.dtype
        )

    def setup(
        self, project: str, label_config: str, extra_params: Any, hostname: str | None, access_token: str | None
    ) -> str:
        """Remember a project, start loading its models in the background, and return its model version.

        Raises:
            LabelConfigError: The config cannot be parsed.
            ProjectSettingsError: ``extra_params`` is invalid; the message names the key.
        """
        try:
            params = parse_extra_params(extra_params)
            learning_settings(params)
            ranking_settings(params)
            plan = self.plan(label_config, params)
            record = ProjectRecord(project, label_config, params, hostname, access_token, plan.model_version)
            served = self.learner.serve(record, plan)
        except BadRequest as exc:
            self.store.record_event("setup", f"/setup refused: {exc}", project=project)
            raise
        previous = self.store.get(project)
        self.store.save(record)
        if previous is None or previous.model_version != record.model_version:
            self.pool.retain(self._specs_in_use())  # only when models may have changed: it plans every project
        self.preload(served, urgent=True)
        self._probe_credentials(record)
        return served.model_version

    def _probe_credentials(self, record: ProjectRecord) -> None:
        """In the background, ask Label Studio whether the token prelabel will use works (once per token per 10 min).

        ``/setup`` comes before every batch and must answer in 3 s, so it never waits for this.
        """
        ls = self.label_studio(record)
        if ls is None or not ls.token:
            return
        key = (ls.origin, hashlib.sha256(ls.token.encode()).hexdigest())
        now = time.monotonic()
        with self._probe_lock:
            if now - self._probed.get(key, -_PROBE_EVERY_S) < _PROBE_EVERY_S:
                return
            self._probed[key] = now

        def probe() -> None:
            if ls.check_credentials() is False:
                source = "LABEL_STUDIO_API_KEY" if self.settings.label_studio_api_key else "the token /setup sent"
                message = (
                    f"Label Studio at {ls.base_url} refused {source} (HTTP 401): uploaded and cloud images cannot be "
                    "fetched. Label Studio 1.23 turns legacy tokens off by default, and /setup sends the project "
                    "owner's legacy token: create a Personal Access Token (Account & Settings) and start prelabel with "
                    "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY set to it"
                )
                log.warning("project %s: %s", record.project, message)
                self.store.record_event("auth", message, project=record.project)

        threading.Thread(target=probe, name="credentials-probe", daemon=True).start()

    def _specs_in_use(self) -> set[ModelSpec]:
        """The models of every stored project's current settings (plans are cached, so this is cheap)."""
        specs: set[ModelSpec] = set()
        for record in self.store.all():
            try:
                specs.update(self.plan(record.label_config, record.extra_params).specs())
            except BadRequest:
                continue
        return specs

    def preload(self, plan: Plan, *, urgent: bool = False) -> None:
        """Queue every model of a plan for loading (returns at once); ``urgent`` goes ahead of background preloads."""
        for spec in plan.specs():
            self.pool.preload(spec, urgent=urgent)

    def preload_recent_projects(self) -> None:
        """At worker start: queue the models of the most recently set-up projects (``PRELABEL_PRELOAD`` of them).

        They load behind anything a request waits for, so a retrieve on another project is not held up.
        """

        def run() -> None:
            for record in self.store.all()[: self.settings.preload_projects]:
                try:
                    self.preload(self.plan(record.label_config, record.extra_params))
                except BadRequest as exc:
                    log.warning("project %s: stored settings no longer valid: %s", record.project, exc)

        threading.Thread(target=run, name="preload", daemon=True).start()

    def predict(
        self,
        tasks: list[Any],
        project: str | None,
        label_config: str | None,
        context: Any,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> list[Any]:
        """Predict tasks with the project's plan; one entry per task, in order (``[]`` for a task not predicted).

        Raises:
            BadRequest: No label config in the request nor stored for the project, or malformed tasks.
            ModelUnavailable: A needed model failed to load or is still loading.
        """
        record = self.store.get(project) if project else None
        config = label_config or (record.label_config if record else None)
        if not config:
            raise BadRequest("predict needs a label_config (or a project set up through /setup first)")
        base = plan = self.plan(config, record.extra_params if record else {})
        if record is not None and config == record.label_config:
            plan = self.learner.serve(record, plan)
        ls = self.label_studio(record)
        if isinstance(context, dict) and context.get("result"):
            return self.runner.interactive(tasks, context, plan, ls)
        pid = project_id(project) if record is not None else None
        held = self.jobs.store.pending_tasks(pid) if pid is not None and self.settings.handoff else set()
        todo = [t for t in tasks if not _held(t, held)]  # a job writes those
        budget = RequestBudget(self.settings.predict_budget, client_gone)
        outcome = self.runner.predict(todo, plan, ls, budget)
        self._rerank(todo, outcome.entries, plan, base, record, budget)
        job = None
        if outcome.unreached and pid is not None and ls is not None and self.settings.handoff:
            # Label Studio stores nothing of an answer its caller no longer waits for: then the job does every task
            left = todo if client_gone() else [t for t in todo if t.get("id") in set(outcome.unreached)]
            ids = tuple(sorted({t["id"] for t in left if isinstance(t.get("id"), int)}))
            job, _ = self.jobs.submit(pid, JobFilter(task_ids=ids, without_annotations=False), origin="retrieve")
        self._report(outcome, project, job)
        if len(todo) == len(tasks):
            return outcome.entries
        answers = iter(outcome.entries)
        return [[] if _held(t, held) else next(answers) for t in tasks]

    def submit_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Queue a bulk job (``POST /jobs``), or answer the unfinished one with the same filter; and whether it is new.

        Raises:
            BadRequest: An unknown key or bad value, or a project not set up here.
        """
        unknown = sorted(set(body) - {"project", "view", "task_ids", "without_annotations", "without_predictions"})
        if unknown:
            raise BadRequest(
                f"unknown key {unknown[0]!r}; a job takes project, view, task_ids, without_annotations and "
                "without_predictions"
            )
        pid = project_id(body.get("project")) if not isinstance(body.get("project"), bool) else None
        if pid is None:
            raise BadRequest("a job needs 'project': Label Studio's project id, like 3")
        job_filter = JobFilter.from_json(body)
        if self.store.find(pid) is None:
            raise BadRequest(
                f"project {pid} is not connected to this backend: add it in the project's Settings > Model"
            )
        job, new = self.jobs.submit(pid, job_filter)
        return self.job(job.id) or {}, new

    def job(self, job_id: int) -> dict[str, Any] | None:
        """A job's state, counts, rate, ETA and first failures (``GET /jobs/<id>``), or ``None``."""
        job = self.jobs.store.get(job_id)
        return None if job is None else describe(job, self.jobs.store.failures(job_id))

    def recent_jobs(self) -> list[dict[str, Any]]:
        """The newest jobs (``GET /jobs``), without their failures."""
        return [describe(job, []) for job in self.jobs.store.recent()]

    def cancel_job(self, job_id: int) -> dict[str, Any] | None:
        """Ask a job to stop (``DELETE /jobs/<id>``): at once when queued, after its current batch when running."""
        return None if self.jobs.store.request_cancel(job_id) is None else self.job(job_id)

    def _repredict_after_fit(self, record: ProjectRecord, version: str) -> None:
        """The closing loop (``backend.ranking.closing_loop``), beside the fit thread: ranking reads the project."""
        if ranking_settings(record.extra_params).repredict:
            threading.Thread(target=self._repredict, args=(record, version), name="repredict", daemon=True).start()

    def _repredict(self, record: ProjectRecord, version: str) -> None:
        """A new version re-predicts the project's most uncertain unlabelled tasks, as a bulk job."""
        count = ranking_settings(record.extra_params).repredict
        pid = project_id(record.project)
        ls = self.label_studio(record)
        if count == 0 or pid is None:
            return
        if ls is None:
            message = (
                "active_learning.repredict needs Label Studio's API: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
            )
            self.store.record_event("active_learning", message, project=record.project)
            return
        try:
            ids = most_uncertain(ls, pid, count, self.store.versions(str(pid)))
        except LabelStudioAPIError as exc:
            self.store.record_event(
                "active_learning", f"could not rank the tasks to re-predict: {exc}", project=record.project
            )
            return
        if ids:
            job, _ = self.jobs.submit(pid, JobFilter(task_ids=tuple(sorted(ids))), origin=CLOSING_LOOP)
            log.info("project %s: %s re-predicts %d tasks as job %s", record.project, version, len(ids), job.id)

    def _after_job(self, job: Job) -> None:
        """A closing-loop job that is done points the project's scores at the version it wrote, so the tab re-orders."""
        if job.origin != CLOSING_LOOP or job.state != "done" or not job.model_version:
            return
        ls = self.label_studio(self.store.find(job.project_id))
        if ls is not None:
            show_version(ls, job.project_id, job.model_version)

    def job_target(self, pid: int) -> Target:
        """What a bulk job of a project predicts with: its served plan (as ``/predict``) and its Label Studio.

        Raises:
            JobError: The project is not set up here, or Label Studio's URL is unknown.
            BadRequest: The project's stored settings are no longer valid.
        """
        record = self.store.find(pid) or self._record_from_label_studio(pid)
        ls = self.label_studio(record)
        if ls is None:
            raise JobError("bulk jobs read and write through Label Studio's API: set LABEL_STUDIO_URL")
        base = self.plan(record.label_config, record.extra_params)
        plan = self.learner.serve(record, base)

        def rescore(tasks: list[Any], entries: list[Any]) -> None:
            self._rerank(tasks, entries, plan, base, record, RequestBudget())

        return Target(plan, ls, rescore)

    def _rerank(
        self, tasks: list[Any], entries: list[Any], plan: Plan, base: Plan, record: ProjectRecord | None,
        budget: RequestBudget,
    ) -> None:  # fmt: skip
        """Scores the runner cannot make alone (``backend.ranking``).

        A learned version's disagreement with the zero-shot one (the tasks it predicted, predicted again with the base
        plan within the request's budget), and the rare-label boost (from the project's annotations).
        """
        ranking = plan.ranking
        done = [i for i, entry in enumerate(entries) if isinstance(entry, dict)]
        ensemble = any(t.members or (t.detector is not None and t.detector.members) for t in plan.targets)
        if ranking.strategy == "disagreement" and plan.model_version != base.model_version and not ensemble and done:
            second = self.runner.predict([tasks[i] for i in done], base, self.label_studio(record), budget).entries
            for i, other in zip(done, second, strict=True):
                if isinstance(other, dict):
                    entries[i]["score"] = agreement(entries[i]["result"], other["result"])
        pid = project_id(record.project) if record else None
        if ranking.rare_boost > 0 and pid is not None and done:
            counts = label_counts(a.result for a in teaching(self.learner.store.annotations(pid)))
            labels = {t.target.control: t.target.labels for t in plan.targets}
            for i in done:
                entries[i]["score"] = boosted(
                    entries[i]["score"], entries[i]["result"], counts, labels, ranking.rare_boost
                )

    def label_next(self, pid: int) -> dict[str, Any]:
        """Create or update the project's "Label next" Data Manager tab (``backend.ranking.tabs``); idempotent.

        The project's prediction scores are pointed at the backend's current version (``score_source``), so the tab's
        ordering has scores to sort by.

        Raises:
            BadRequest: The project is not set up here, Label Studio's URL is unknown, or its API refused.
        """
        ls = self._project_api(pid)
        try:
            made = ensure_tab(ls, pid, label_next_tab())
            return {**made, "scores_from": score_source(ls, pid, self.store.versions(str(pid)))}
        except LabelStudioAPIError as exc:
            raise BadRequest(f"could not create the Label next tab of project {pid}: {exc}") from None

    def disagreements_tab(self, pid: int) -> dict[str, Any]:
        """Create or update the project's "Model disagrees" tab: the review report's most disagreeing tasks; idempotent.

        Raises:
            BadRequest: The project is not set up here, Label Studio's URL is unknown, or its API refused.
        """
        report = self.review(pid)
        ls = self._project_api(pid)
        try:
            made = ensure_tab(ls, pid, disagreements_tab(report["disagreeing_tasks"]))
            scores = score_source(ls, pid, self.store.versions(str(pid)))
        except LabelStudioAPIError as exc:
            raise BadRequest(f"could not create the Model disagrees tab of project {pid}: {exc}") from None
        return {**made, "scores_from": scores, "tasks": report["disagreeing_tasks"]}

    def review(self, pid: int, version: str | None = None) -> dict[str, Any]:
        """The project's review report (``backend.review``): its annotations against the model's predictions.

        Predictions of ``version``, by default the project's ML backend's current version; the report also sets the
        review gauges at ``/metrics``, and its summary is kept per version (``backend.review.history``): ``history``
        holds every version reviewed so far.

        Raises:
            BadRequest: The project is not set up here, Label Studio's URL is unknown, or its API refused.
        """
        ls = self._project_api(pid)
        skipped = Skipped()
        try:
            version = version or backend_version(ls, pid, self.store.versions(str(pid)))
            report = review_report(
                pairs(ls, pid, version, skipped), skipped, project=pid, version=version,
                link=lambda task: ls.url(f"/projects/{pid}/data?task={task}"), thresholds=self._thresholds(pid),
            )  # fmt: skip
        except LabelStudioAPIError as exc:
            raise BadRequest(f"could not read project {pid}'s annotations: {exc}") from None
        if version in self.store.versions(str(pid)) and report["annotations"]:  # not one series per caller's guess
            gauges.publish(report)
        if version is not None and report["annotations"]:  # a report of one version that compared something
            self.store.add_review(pid, version, summary(report))
        report["history"] = versions(self.store.reviews(pid))
        return report

    def _thresholds(self, pid: int) -> dict[tuple[str, str], dict[str, Any]]:
        """The score thresholds the project is served with now (calibrated by its learned version, else configured)."""
        record = self.store.find(pid)
        if record is None:
            return {}
        try:
            base = self.plan(record.label_config, record.extra_params)
            return project_thresholds(base, self.learner.serve(record, base))
        except BadRequest as exc:  # settings no longer valid: the report still stands, without the marks
            log.warning("project %s: no thresholds to mark on the report: %s", pid, exc)
            return {}

    def _project_api(self, pid: int) -> LabelStudioClient:
        """Label Studio's API for a project (``LABEL_STUDIO_URL``, else what its ``/setup`` said), or why not."""
        record = self.store.find(pid)
        ls = self.label_studio(record)
        if ls is None and record is None:
            raise BadRequest(
                f"project {pid} is not connected to this backend yet (add the backend in the project's Settings > "
                "Model), and LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set"
            )
        if ls is None:
            raise BadRequest("this needs Label Studio's API: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        return ls

    def preview(
        self, project_id: int, count: int, extra_params: Any = None, client_gone: Callable[[], bool] = lambda: False
    ) -> dict[str, Any]:
        """Predict a project's first ``count`` tasks without writing anything (see ``backend.preview``).

        With ``extra_params``, those settings are tried instead of the project's (and are not saved); without, the
        project's served version (its learned one, if any) answers, as Label Studio would get it.

        Raises:
            BadRequest: The project was never set up here, settings are invalid, or Label Studio cannot be read.
        """
        record = self.store.find(project_id)
        if record is None:
            raise BadRequest(
                f"project {project_id} is not connected to this backend yet: add the backend in the project's "
                "Settings > Model first"
            )
        ls = self.label_studio(record)
        if ls is None:
            raise BadRequest(
                "preview reads the project's tasks from Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
            )
        trial = extra_params is not None
        plan = self.plan(record.label_config, parse_extra_params(extra_params) if trial else record.extra_params)
        if not trial:
            plan = self.learner.serve(record, plan)
        self.preload(plan, urgent=True)
        try:
            tasks = first_tasks(ls, project_id, count)
        except LabelStudioAPIError as exc:
            raise BadRequest(f"could not read project {project_id}'s tasks: {exc}") from None
        try:
            outcome = self.runner.predict(tasks, plan, ls, RequestBudget(self.settings.predict_budget, client_gone))
        finally:
            if trial:  # models only the trial asked for do not stay loaded
                self.pool.retain(self._specs_in_use())
        return report(tasks, outcome, plan.model_version)

    def _record_from_label_studio(self, pid: int) -> ProjectRecord:
        """A project never set up here (``prelabel bulk`` on another machine), as Label Studio holds it.

        Its label config and its ML backend's extra params, read through the API of ``LABEL_STUDIO_URL``; not saved.

        Raises:
            JobError: No Label Studio URL, or it cannot be read.
        """
        ls = self.label_studio(None)
        if ls is None:
            raise JobError(
                f"project {pid} is not connected to this backend; set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to "
                "read its settings from Label Studio, or add the backend in the project's Settings > Model"
            )
        try:
            project = ls.get_json(f"/api/projects/{pid}")
            backends = ls.get_json("/api/ml", {"project": pid}) or []
        except LabelStudioAPIError as exc:
            raise JobError(f"could not read project {pid}'s settings from Label Studio: {exc}") from None
        extra = next((b.get("extra_params") for b in backends if isinstance(b, dict) and b.get("extra_params")), None)
        config = project.get("label_config") if isinstance(project, dict) else None
        if not config:
            raise JobError(f"project {pid} has no label config in Label Studio")
        plan = self.plan(config, parse_extra_params(extra))
        return ProjectRecord(str(pid), config, parse_extra_params(extra), None, None, plan.model_version)

    def _report(self, outcome: Outcome, project: str | None, job: Any = None) -> None:
        """Log and record (for the status page) the tasks a request could not predict, and why."""
        if outcome.failed:
            lines = [f"task {task}: {'; '.join(reasons)}" for task, reasons in outcome.failed.items()]
            for line in lines:
                log.warning("%s (no prediction: the next retrieve sends it again; see the status page at /)", line)
            self.store.record_event("task", "\n".join(lines[:20]), project=project, count=len(lines))
        if outcome.credentials_refused:
            self.store.record_event(
                "auth",
                "Label Studio refused prelabel's credentials when fetching images: set LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY (a Personal Access Token from Account & Settings)",
                project=project,
                count=outcome.credentials_refused,
            )
        if outcome.waiting:
            log.info(
                "project %s: control(s) %s got no region: their model has no text tower and answers only once the "
                "project has annotated examples and a fit has run (see extra_params.learning)",
                project,
                ", ".join(outcome.waiting),
            )
        if outcome.unreached:
            then = (
                f"bulk job {job.id} predicts them and writes their predictions through Label Studio's API (GET "
                f"/jobs/{job.id})"
                if job is not None
                else "they get no prediction now and are sent again by the next retrieve"
            )
            message = (
                f"{len(outcome.unreached)} of {len(outcome.entries)} tasks not started: {outcome.stop_reason}; {then}"
            )
            log.warning("project %s: %s", project, message)
            self.store.record_event("stopped", message, project=project, count=len(outcome.unreached))

    def label_studio(self, record: ProjectRecord | None) -> LabelStudioClient | None:
        """Client for the project's Label Studio: the env URL, else the ``hostname`` ``/setup`` was told.

        The env key goes only to the env URL (settings require the URL with the key); otherwise the token the
        project's ``/setup`` supplied is used, for whichever of the two URLs applies.
        """
        url = self.settings.label_studio_url or (record.hostname if record else None)
        if not url:
            return None
        token = self.settings.label_studio_api_key or (record.access_token if record else None)
        try:
            return LabelStudioClient(url, token, self.session, timeout=self.settings.media_timeout)
        except ValueError as exc:  # a stored hostname from before /setup checked them
            log.warning("Label Studio URL %r is unusable: %s", url, exc)
            return None

    def webhook(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Record a Label Studio event for learning (see ``backend.learning``); answers at once."""
        if not isinstance(payload.get("action"), str):
            raise BadRequest("webhook body must have an 'action' string")
        answer = self.learner.handle(payload)
        pid = answer.get("project")
        reviewable = isinstance(pid, int) and self.label_studio(self.store.find(pid)) is not None  # reads them back
        if payload["action"] in ANNOTATION_ACTIONS and reviewable:
            self.reviews.touched(pid)
        return answer

    def _review_failed(self, pid: int, why: str) -> None:
        record = self.store.find(pid)
        self.store.record_event("review", why, project=record.project if record else str(pid))

    def versions(self, project: str | None) -> list[str]:
        """Model versions this backend has produced for a project (all projects when ``None``)."""
        return self.store.versions(project)


def _held(task: Any, held: set[int]) -> bool:
    """Whether a bulk job holds this task (its predictions come through the API)."""
    return isinstance(task, dict) and isinstance(task.get("id"), int) and task["id"] in held
