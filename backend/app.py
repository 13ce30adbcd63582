"""Flask app speaking Label Studio's ML-backend protocol.

Routes: ``/health`` (and ``/``), ``/setup``, ``/predict``, ``/webhook``, ``/versions``, ``/metrics``. Each
route parses the body, calls ``PrelabelService`` and renders JSON. Errors are JSON too: 400 for a request
that breaks the protocol or carries bad settings, 401 for missing credentials, 503 when a model cannot be
served, 500 (logged with its traceback) for anything unexpected.

Run with gunicorn through ``prelabel serve``, or ``flask --app backend.app run`` for development.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from backend import metrics
from backend.errors import BadRequest
from backend.log_redaction import install_log_redaction
from backend.models import ModelUnavailable
from backend.service import PrelabelService
from backend.settings import ServerSettings

__all__ = ["create_app"]

log = logging.getLogger(__name__)
MODEL_CLASS = "prelabel"
_OPEN_ROUTES = frozenset({"/", "/health"})
_WEBHOOK_SECRET_HEADER = "X-Prelabel-Webhook-Secret"


def create_app(settings: ServerSettings | None = None) -> Flask:
    """Build the app; settings default to the environment (see the README's settings table)."""
    settings = settings or ServerSettings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    Image.MAX_IMAGE_PIXELS = settings.media_max_pixels
    service = PrelabelService(settings)
    if settings.preload:
        service.preload_known_projects()

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["prelabel"] = service

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        return _authorize(settings)

    @app.after_request
    def _record(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        metrics.ERRORS.labels("request").inc()
        log.warning("%s %s: %s", request.method, request.path, exc)
        return jsonify(error=str(exc)), 400

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

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(status="UP", model_class=MODEL_CLASS, models=service.pool.status())

    @app.post("/setup")
    def setup() -> Response:
        body = _json_object()
        schema = body.get("schema")
        if not isinstance(schema, str) or not schema.strip():
            raise BadRequest("setup needs 'schema': the project's label config")
        version = service.setup(
            project=str(body.get("project", "")),
            label_config=schema,
            extra_params=body.get("extra_params"),
            hostname=_optional_str(body, "hostname"),
            access_token=_optional_str(body, "access_token"),
        )
        return jsonify(model_version=version)

    @app.post("/predict")
    def predict() -> Response:
        body = _json_object()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("predict needs 'tasks': a list of tasks")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("'params' must be an object")
        project = body.get("project")
        results = service.predict(
            tasks,
            project=str(project) if project is not None else None,
            label_config=_optional_str(body, "label_config"),
            context=params.get("context"),
        )
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook() -> Response:
        return jsonify(service.webhook(_json_object()))

    @app.get("/versions")
    def versions() -> Response:
        project = request.args.get("project")
        if project is None and request.is_json:
            body = request.get_json(silent=True)
            project = str(body["project"]) if isinstance(body, dict) and body.get("project") is not None else None
        return jsonify(versions=service.versions(project))

    @app.get("/metrics")
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    return app


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


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
