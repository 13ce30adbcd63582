"""Service state -> the HTML status page at ``/``: what Label Studio does not show its users.

Label Studio drops the body of a refused ``/setup`` and reports "Retrieved N predictions" whatever happened, so
this page is where a user reads why: refused settings, tasks not predicted and why, refused credentials, the
models each project uses and whether they loaded. It shows no secrets (tokens are only said to be set or not).
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import TYPE_CHECKING

from backend.log_redaction import redact
from backend.store import Event, project_id

if TYPE_CHECKING:
    from backend.service import PrelabelService

__all__ = ["render_status_page"]

_RECENT_S = 3600.0
_PROJECTS_SHOWN = 50  # the most recently set-up ones
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1b1b1b;max-width:80em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}pre{margin:0;white-space:pre-wrap;font:12px/1.4 ui-monospace,monospace}
.alert{background:#fdecea;border:2px solid #c62828;padding:.8em 1em;margin:1em 0}.ok{color:#2e7d32}
.failed{color:#c62828;font-weight:600}.loading{color:#ef6c00}.muted{color:#777}
"""


def render_status_page(service: PrelabelService) -> str:
    """The whole page, from the store (shared by all workers) and this worker's model pool."""
    settings = service.settings
    events = service.store.events(limit=100)
    now = time.time()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>prelabel status</title><style>{_STYLE}</style>",
        "</head><body><h1>prelabel status</h1>",
        *_alerts(service, events, now),
        "<h2>Projects</h2>",
        _projects(service),
        "<h2>Bulk jobs</h2>",
        _jobs(service),
        "<h2>Models (this worker)</h2>",
        _models(service),
        "<h2>Recent problems</h2>",
        _events(events, now),
        "<h2>Connection to Label Studio</h2>",
        "<table>",
        _row("LABEL_STUDIO_URL", escape(settings.label_studio_url or "not set (the hostname from /setup is used)")),
        _row("LABEL_STUDIO_API_KEY", "set" if settings.label_studio_api_key else "not set (the token from /setup)"),
        _row("LOCAL_FILES_DOCUMENT_ROOT", escape(str(settings.local_files_document_root or "not set"))),
        "</table></body></html>",
    ]
    return "".join(parts)


def _alerts(service: PrelabelService, events: list[Event], now: float) -> list[str]:
    alerts = []
    refused = sum(e.count for e in events if e.kind == "auth" and now - e.at < _RECENT_S)
    if refused:
        alerts.append(
            f"<div class='alert'><b>Label Studio refused prelabel's credentials {refused} times in the last hour</b>"
            ": tasks with uploaded or cloud images get no predictions. Create a Personal Access Token in Label "
            "Studio (Account &amp; Settings), then start prelabel with <code>LABEL_STUDIO_URL</code> and "
            "<code>LABEL_STUDIO_API_KEY</code> set to it.</div>"
        )
    webhooks = sum(e.count for e in events if e.kind == "webhook" and now - e.at < _RECENT_S)
    if webhooks:
        alerts.append(
            f"<div class='alert'><b>{webhooks} webhook calls were refused in the last hour</b>: in Label Studio "
            "(Settings → Webhooks), give prelabel's webhook the header <code>X-Prelabel-Webhook-Secret</code> with "
            "the value of <code>PRELABEL_WEBHOOK_SECRET</code> (or add <code>?secret=…</code> to its URL).</div>"
        )
    return alerts


def _projects(service: PrelabelService) -> str:
    records = service.store.all()[:_PROJECTS_SHOWN]
    if not records:
        return "<p class='muted'>No project has connected yet: add this backend in a project's Settings → Model.</p>"
    states = {(m["adapter"], m["model_id"]): m["state"] for m in service.pool.status()}
    rows = ["<table><tr><th>project</th><th>serving</th><th>models</th><th>learning</th><th>extra params</th></tr>"]
    for record in records:
        version = record.model_version
        try:
            plan = service.learner.serve(record, service.plan(record.label_config, record.extra_params))
            version = plan.model_version
            models = "<br>".join(
                f"{escape(s.adapter)} <span class='muted'>{escape(s.model_id)}</span> "
                f"{_state(states.get((s.adapter, s.model_id), 'not loaded here'))}"
                for s in plan.specs()
            )
        except ValueError as exc:
            models = f"<span class='failed'>settings no longer valid: {escape(str(exc))}</span>"
        params = (
            escape(redact(json.dumps(record.extra_params, indent=1)))  # per-project API keys
            if record.extra_params
            else "<span class='muted'>none</span>"
        )
        rows.append(
            f"<tr><td>{project_id(record.project) or escape(record.project)}</td><td><code>{escape(version)}</code>"
            f"</td><td>{models}</td><td>{_learning(service, record.project)}</td><td><pre>{params}</pre></td></tr>"
        )
    return "".join([*rows, "</table>"])


def _learning(service: PrelabelService, project: str) -> str:
    """The project's fits and how the last one ended."""
    pid = project_id(project)
    if pid is None:
        return ""
    fits = service.learner.store.fits(pid)
    outcome = service.learner.store.outcome(pid)
    parts = [f"{len(fits)} fit(s)" if fits else "no fit yet"]
    if service.learner.store.pending(pid):
        parts.append("<span class='loading'>fit pending</span>")
    if outcome is not None:
        css = {"fitted": "ok", "failed": "failed"}.get(outcome["outcome"], "muted")
        parts.append(f"<span class='{css}'>last: {escape(outcome['outcome'])}</span> {escape(outcome['detail'])}")
    return "<br>".join(parts)


def _jobs(service: PrelabelService) -> str:
    """The newest bulk jobs: state, progress, rate, ETA and the first failures (details at ``/jobs/<id>``)."""
    jobs = service.recent_jobs()
    if not jobs:
        return "<p class='muted'>No bulk job yet (POST /jobs, prelabel bulk, or a retrieve too large for its time).</p>"
    rows = ["<table><tr><th>job</th><th>project</th><th>state</th><th>progress</th><th>rate</th><th>details</th></tr>"]
    for job in jobs:
        css = {"done": "ok", "failed": "failed", "running": "loading"}.get(job["state"], "muted")
        total = job["total"] if job["total"] is not None else "?"
        rate = f"{job['tasks_per_second']} tasks/s" if job["tasks_per_second"] else ""
        eta = f", ETA {job['eta_seconds']:.0f} s" if job["eta_seconds"] is not None else ""
        detail = escape(job["error"] or "")
        failures = service.job(job["id"])["failures"][:3] if job["failed"] else []  # type: ignore[index]
        detail += "".join(f"<br>task {f['task']}: {escape(f['reason'])}" for f in failures)
        rows.append(
            f"<tr><td><a href='jobs/{job['id']}'>{job['id']}</a> <span class='muted'>{escape(job['origin'])}</span>"
            f"</td><td>{job['project']}</td><td><span class='{css}'>{escape(job['state'])}</span></td>"
            f"<td>{job['finished']}/{total}: {job['predicted']} predicted, {job['skipped']} skipped, "
            f"{job['failed']} failed</td><td>{rate}{eta}</td><td>{detail}</td></tr>"
        )
    return "".join([*rows, "</table>"])


def _models(service: PrelabelService) -> str:
    models = service.pool.status()
    if not models:
        return "<p class='muted'>No model requested in this worker yet.</p>"
    rows = ["<table><tr><th>model</th><th>weights</th><th>device</th><th>state</th></tr>"]
    rows += [
        f"<tr><td>{escape(m['adapter'])}</td><td>{escape(m['model_id'])}</td><td>{escape(m['device'])}</td>"
        f"<td>{_state(m['state'])}</td></tr>"
        for m in models
    ]
    return "".join([*rows, "</table>"])


def _events(events: list[Event], now: float) -> str:
    if not events:
        return "<p class='ok'>Nothing went wrong recently.</p>"
    rows = ["<table><tr><th>when</th><th>project</th><th>what</th><th>count</th><th>details</th></tr>"]
    for event in events:
        project = project_id(event.project) or escape(event.project or "")
        rows.append(
            f"<tr><td>{_ago(now - event.at)}</td><td>{project}</td><td>{escape(event.kind)}</td>"
            f"<td>{event.count}</td><td><pre>{escape(event.message)}</pre></td></tr>"
        )
    return "".join([*rows, "</table>"])


def _state(state: str) -> str:
    css = {"ready": "ok", "failed": "failed", "loading": "loading"}.get(state, "muted")
    return f"<span class='{css}'>{escape(state)}</span>"


def _row(name: str, value: str) -> str:
    return f"<tr><th>{escape(name)}</th><td>{value}</td></tr>"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
