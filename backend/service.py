"""The ML backend's behaviour, without HTTP: setup, predict, webhook, versions.

The familiar shape for people who know Label Studio's ML backends (``setup``, ``predict(tasks, context)``,
``fit(event, data)``); the Flask layer in ``backend.app`` only parses requests and renders answers.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from backend.errors import BadRequest
from backend.ls_client import LabelStudioClient
from backend.media import MediaFetcher
from backend.models import ModelPool
from backend.plan import Plan, build_plan, check_server_defaults, parse_extra_params
from backend.runner import Runner
from backend.settings import ServerSettings
from backend.store import ProjectRecord, ProjectStore
from model_adapters.base import ModelSpec

__all__ = ["PrelabelService"]

log = logging.getLogger(__name__)


class PrelabelService:
    """One per process: owns the project store, the model pool and the media fetcher."""

    def __init__(self, settings: ServerSettings) -> None:
        check_server_defaults(settings.defaults)
        self.settings = settings
        self.store = ProjectStore(settings.model_dir)
        self.pool = ModelPool(settings.embedding_cache_items, settings.embedding_cache_mb << 20)
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_maxsize=settings.media_workers))
        session.mount("https://", HTTPAdapter(pool_maxsize=settings.media_workers))
        session.headers["User-Agent"] = "prelabel"
        self.session = session
        self.fetcher = MediaFetcher(settings, session)
        self.executor = ThreadPoolExecutor(settings.media_workers, thread_name_prefix="media")
        self.runner = Runner(self.pool, self.fetcher, self.executor, settings.model_wait)

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
        params = parse_extra_params(extra_params)
        plan = self.plan(label_config, params)
        self.store.save(ProjectRecord(project, label_config, params, hostname, access_token, plan.model_version))
        self.pool.retain(self._specs_in_use())
        self.preload(plan)
        return plan.model_version

    def _specs_in_use(self) -> set[ModelSpec]:
        """The models of every stored project's current settings (plans are cached, so this is cheap)."""
        specs: set[ModelSpec] = set()
        for record in self.store.all():
            try:
                specs.update(self.plan(record.label_config, record.extra_params).specs())
            except BadRequest:
                continue
        return specs

    def preload(self, plan: Plan) -> None:
        """Start loading every model of a plan (returns at once)."""
        for spec in plan.specs():
            self.pool.preload(spec)

    def preload_known_projects(self) -> None:
        """At worker start: load the models of projects already set up, so the first predict is fast."""

        def run() -> None:
            for record in self.store.all():
                try:
                    self.preload(self.plan(record.label_config, record.extra_params))
                except BadRequest as exc:
                    log.warning("project %s: stored settings no longer valid: %s", record.project, exc)

        threading.Thread(target=run, name="preload", daemon=True).start()

    def predict(
        self, tasks: list[Any], project: str | None, label_config: str | None, context: Any
    ) -> list[dict[str, Any]]:
        """Predict tasks with the project's plan; one entry per task, in order.

        Raises:
            BadRequest: No label config in the request nor stored for the project, or malformed tasks.
            ModelUnavailable: A needed model failed to load or is still loading.
        """
        record = self.store.get(project) if project else None
        config = label_config or (record.label_config if record else None)
        if not config:
            raise BadRequest("predict needs a label_config (or a project set up through /setup first)")
        plan = self.plan(config, record.extra_params if record else {})
        if isinstance(context, dict) and context.get("result"):
            return self.runner.interactive(tasks, context, plan, self.label_studio(record))
        return self.runner.predict(tasks, plan, self.label_studio(record))

    def label_studio(self, record: ProjectRecord | None) -> LabelStudioClient | None:
        """Client for the project's Label Studio: the env URL, else the ``hostname`` ``/setup`` was told.

        The env key goes only to the env URL (settings require the URL with the key); otherwise the token the
        project's ``/setup`` supplied is used, for whichever of the two URLs applies.
        """
        url = self.settings.label_studio_url or (record.hostname if record else None)
        if not url:
            return None
        token = self.settings.label_studio_api_key or (record.access_token if record else None)
        return LabelStudioClient(url, token, self.session, timeout=self.settings.media_timeout)

    def webhook(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Acknowledge a Label Studio event. prelabel does not train yet, and says so."""
        action = payload.get("action")
        if not isinstance(action, str):
            raise BadRequest("webhook body must have an 'action' string")
        project = payload.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        log.info("webhook %s for project %s: not trained (training is not implemented yet)", action, project_id)
        return {
            "action": action,
            "project": project_id,
            "status": "not_trained",
            "detail": "prelabel does not train on annotations yet; predictions come from the zero-shot models",
        }

    def versions(self, project: str | None) -> list[str]:
        """Model versions this backend has produced for a project (all projects when ``None``)."""
        return self.store.versions(project)
