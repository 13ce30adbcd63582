"""Flask app speaking Label Studio's ML-backend protocol, plus a status page for people.

Routes: ``/health``, ``/setup``, ``/predict``, ``/preview``, ``/webhook``, ``/versions``, ``/label-next``,
``/report`` (JSON) and ``/report.html``, ``/jobs`` (bulk jobs: ``POST /jobs``, ``GET /jobs/<id>``,
``DELETE /jobs/<id>``), ``/metrics``, and ``/``
(an HTML page saying what Label Studio does not show: refused settings, tasks not predicted and why, model states).
Each route parses the body, calls ``PrelabelService`` and renders JSON. Errors are JSON too: 400 for a request that breaks the
protocol or carries bad settings, 401 for missing credentials, 413 for a body over ``PRELABEL_MAX_BODY_MB``, 503 when
a model cannot be served, 500 (logged with its traceback) for anything unexpected.

Run with gunicorn through ``prelabel serve``, or ``flask --app backend.app run`` for development.
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from PIL import Image
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from backend import metrics, outbound
from backend.errors import BadRequest
from backend.log_redaction import install_log_redaction
from backend.models import ModelUnavailable
from backend.preview import MAX_TASKS as MAX_PREVIEW_TASKS
from backend.request_body import parse_json_object
from backend.review.render import report_html
from backend.service import PrelabelService
from backend.settings import ServerSettings
from backend.status_page import render_status_page
from backend.store import project_id

__all__ = ["create_app"]

log = logging.getLogger(__name__)
MODEL_CLASS = "prelabel"
_OPEN_ROUTES = frozenset({"/health"})
_WEBHOOK_SECRET_HEADER = "X-Prelabel-Webhook-Secret"


def create_app(settings: ServerSettings | None = None) -> Flask:
    """Build the app; settings default to the environment (see the README's settings table)."""
    settings = settings or ServerSettings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    Image.MAX_IMAGE_PIXELS = settings.media_max_pixels
    service = PrelabelService(settings)
    if settings.preload_projects:
        service.preload_recent_projects()
    service.learner.start()
    service.jobs.start()
    service.reviews.start()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["prelabel"] = service

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        denied = _cross_site() or _authorize(settings)
        if denied is not None and request.path == "/webhook":  # Label Studio drops webhook answers: say it here
            service.store.record_event("webhook", f"POST /webhook refused: {denied.json['error']}")
        return denied

    @app.after_request
    def _record(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        metrics.ERRORS.labels("request").inc()
        log.warning("%s %s: %s (status page: %s)", request.method, request.path, exc, request.host_url)
        return jsonify(error=str(exc), status_page=request.host_url), 400

    @app.errorhandler(ModelUnavailable)
    def _unavailable(exc: ModelUnavailable) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 503

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description), exc.code or 500

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> tuple[Response, int]:
        metrics.ERRORS.labels("internal").inc()
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}; see the prelabel log"), 500

    @app.get("/health")
    def health() -> Response:
        # open even with basic auth: states only; why a load failed is on the (protected) status page
        return jsonify(status="UP", model_class=MODEL_CLASS, models=service.pool.status(reasons=False))

    @app.get("/")
    def status_page() -> Response:
        return Response(render_status_page(service), content_type="text/html; charset=utf-8")

    @app.post("/setup")
    def setup() -> Response:
        body = _json_object()
        schema = _config(body, "schema", settings.max_config_bytes)
        if schema is None:
            raise BadRequest("setup needs 'schema': the project's label config")
        hostname = _optional_str(body, "hostname")
        if hostname is not None:
            try:
                outbound.check_url(hostname)
            except ValueError as exc:
                raise BadRequest(f"'hostname' must be Label Studio's http(s) URL: {exc}") from None
        version = service.setup(
            project=_project(body) or "",
            label_config=schema,
            extra_params=body.get("extra_params"),
            hostname=hostname,
            access_token=_optional_str(body, "access_token"),
        )
        return jsonify(model_version=version)

    @app.post("/predict")
    def predict() -> Response:
        body = _json_object()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("predict needs 'tasks': a list of tasks")
        if len(tasks) > settings.max_tasks:
            raise BadRequest(
                f"'tasks' holds {len(tasks)} tasks, over PRELABEL_MAX_TASKS={settings.max_tasks}; select fewer"
            )
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("'params' must be an object")
        results = service.predict(
            tasks,
            project=_project(body),
            label_config=_config(body, "label_config", settings.max_config_bytes),
            context=params.get("context"),
            client_gone=_client_gone(request.environ),
        )
        return jsonify(results=results)

    @app.route("/preview", methods=["GET", "POST"])
    def preview() -> Response:
        # GET ?project=N&tasks=5 with the project's settings; POST {"project", "tasks", "extra_params"} tries others
        body = _json_object() if request.method == "POST" else dict(request.args)
        unknown = sorted(set(body) - {"project", "tasks", "extra_params"})
        if unknown:
            raise BadRequest(f"unknown key {unknown[0]!r}; preview takes project, tasks and (POST) extra_params")
        project = project_id(body.get("project"))
        if project is None:
            raise BadRequest("preview needs 'project': Label Studio's project id, like ?project=3")
        count = body.get("tasks", 5)
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PREVIEW_TASKS:
            raise BadRequest(f"'tasks' must be a number of tasks from 1 to {MAX_PREVIEW_TASKS}, got {count!r}")
        extra = body.get("extra_params") if request.method == "POST" else None
        return jsonify(service.preview(project, count, extra, client_gone=_client_gone(request.environ)))

    @app.post("/webhook")
    def webhook() -> Response:
        return jsonify(service.webhook(_json_object()))

    @app.get("/versions")
    def versions() -> Response:
        # Label Studio 1.23 asks without naming the project (no query, no body): a 404 makes it list the backend's
        # current version for that project itself, instead of every project's versions.
        project = request.args.get("project")
        if project is None and request.content_length:
            project = _project(_json_object())
        if project is not None and not re.fullmatch(r"\d{1,18}(\.\d{1,18})?", project):
            raise BadRequest(
                f"'project' must be Label Studio's project id (like 3 or 3.1700000000), got {project[:40]!r}"
            )
        if project is None:
            return Response(
                '{"error": "name the project: /versions?project=<id>"}', 404, content_type="application/json"
            )
        return jsonify(versions=service.versions(project))

    @app.post("/jobs")
    def submit_job() -> tuple[Response, int]:
        job, new = service.submit_job(_json_object())
        return jsonify(job), 201 if new else 200

    @app.get("/jobs")
    def jobs() -> Response:
        return jsonify(jobs=service.recent_jobs())

    @app.get("/jobs/<int:job_id>")
    def job(job_id: int) -> tuple[Response, int]:
        found = service.job(job_id)
        return (jsonify(found), 200) if found else (jsonify(error=f"no job {job_id}"), 404)

    @app.delete("/jobs/<int:job_id>")
    def cancel_job(job_id: int) -> tuple[Response, int]:
        found = service.cancel_job(job_id)
        return (jsonify(found), 200) if found else (jsonify(error=f"no job {job_id}"), 404)

    @app.post("/label-next")
    def label_next() -> Response:
        # ?project=N: create or update the project's "Label next" Data Manager tab (idempotent);
        # &disagreements=1: its "Model disagrees" tab instead (the review report's most disagreeing tasks)
        pid = _project_arg()
        return jsonify(service.disagreements_tab(pid) if _flag("disagreements") else service.label_next(pid))

    @app.get("/report")
    def review_report() -> Response:
        # ?project=N[&version=V]: the project's annotations against the model's predictions (backend.review)
        return jsonify(service.review(_project_arg(), _version_arg()))

    @app.get("/report.html")
    def review_page() -> Response:
        page = report_html(service.review(_project_arg(), _version_arg()))
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/metrics")
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    return app


def _cross_site() -> Response | None:
    """A browser's request from another site that would change something: refused (no CSRF through a user's browser).

    Browsers name the page's origin on every cross-site POST, PUT, PATCH and DELETE (forms included); Label Studio,
    the CLI and scripts send no ``Origin``. A page could otherwise make a visitor's browser start bulk jobs, change
    tabs or settings with the server's Label Studio key, or reuse basic-auth credentials the browser remembers.
    """
    origin = request.headers.get("Origin")
    if request.method in ("GET", "HEAD", "OPTIONS") or origin is None:
        return None
    if origin.rstrip("/") == request.host_url.rstrip("/"):
        return None
    return _deny_cross_site(origin)


def _deny_cross_site(origin: str) -> Response:
    response = jsonify(error=f"refused a {request.method} from another site's page (Origin {origin[:100]!r})")
    response.status_code = 403
    return response


def _json_object() -> dict[str, Any]:
    try:
        raw = request.get_data(cache=True)
    except ClientDisconnected:  # Content-Length promised more than arrived
        raise BadRequest("unreadable request body: it ended early") from None
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()  # a streamed (chunked) body is cut at the limit without a word: refuse it
    return parse_json_object(raw)


def _project_arg() -> int:
    """Label Studio's numeric project id from ``?project=N``."""
    pid = project_id(request.args.get("project"))
    if pid is None or request.args.get("project", "") != str(pid):
        raise BadRequest(f"name the project by its id, like ?project=3 (got {request.args.get('project')!r})")
    return pid


def _flag(name: str) -> bool:
    """A yes/no query argument: ``1``/``true``/``yes`` or ``0``/``false``/``no``/absent."""
    value = request.args.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise BadRequest(f"'{name}' is 1 or 0, got {value[:20]!r}")
    return value in ("1", "true", "yes")


def _version_arg() -> str | None:
    """``?version=``: the model version to review, by default the one the project's backend serves now."""
    version = request.args.get("version") or None
    if version is not None and len(version) > 200:
        raise BadRequest("'version' is a model version from /versions (at most 200 characters)")
    return version


def _project(body: dict[str, Any]) -> str | None:
    """Label Studio's project key (``"<id>.<created epoch>"``), a string or a number."""
    project = body.get("project")
    if project is None or project == "":
        return None
    if isinstance(project, bool) or not isinstance(project, str | int):
        raise BadRequest(f"'project' must be a string like \"3.1700000000\", got {type(project).__name__}")
    return str(project)


def _config(body: dict[str, Any], key: str, max_bytes: int) -> str | None:
    config = _optional_str(body, key)
    if config is not None and len(config.encode()) > max_bytes:
        raise BadRequest(f"'{key}' is over PRELABEL_MAX_CONFIG_KB={max_bytes >> 10}")
    return config if config is None or config.strip() else None


def _client_gone(environ: dict[str, Any]) -> Callable[[], bool]:
    """Whether the caller has hung up: its socket reads as closed (gunicorn only; Label Studio closes at 100 s)."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError, ValueError):  # nothing to read yet; TLS sockets take no flags
            return False
        except OSError:
            return True

    return gone


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _authorize(settings: ServerSettings) -> Response | None:
    """Basic auth on every route but health; ``/webhook`` may instead carry the secret (LS sends no auth).

    The secret comes in the ``X-Prelabel-Webhook-Secret`` header (kept out of access logs) or as ``?secret=``.
    """
    if request.path in _OPEN_ROUTES:
        return None
    if request.path == "/webhook" and settings.webhook_secret:
        given = request.headers.get(_WEBHOOK_SECRET_HEADER) or request.args.get("secret", "")
        if hmac.compare_digest(given.encode(), settings.webhook_secret.encode()):
            return None
        if not settings.basic_auth_user:
            return _deny(f"webhook needs the {_WEBHOOK_SECRET_HEADER} header or ?secret=<PRELABEL_WEBHOOK_SECRET>")
    if not settings.basic_auth_user:
        return None
    auth = request.authorization
    if (
        auth is not None
        and auth.type == "basic"
        and hmac.compare_digest((auth.username or "").encode(), settings.basic_auth_user.encode())
        and hmac.compare_digest((auth.password or "").encode(), (settings.basic_auth_pass or "").encode())
    ):
        return None
    return _deny("basic auth required")


def _deny(message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="prelabel"'
    return response
