"""``prelabel`` command: ``serve``, ``adapters``, ``preview``, ``label-next``, ``report``.

``serve`` runs the backend under gunicorn; ``adapters`` lists the models; ``preview`` predicts a project's first tasks
on a running server (nothing written) and prints each label's score distribution, to tune thresholds before a bulk run;
``label-next`` makes a project's "Label next" tab (with ``--disagreements``: its "Model disagrees" tab) in Label Studio
with the server's settings (``MODEL_DIR``, ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``); ``report`` prints how a project's annotations compare with the
model's predictions (or writes the HTML page with ``-o``), with the same settings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

_NO_PROGRESS_BARS = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prelabel`` console script."""
    parser = argparse.ArgumentParser(prog="prelabel", description="Label Studio ML backend for zero-shot prelabels.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the ML backend with gunicorn")
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="bind address (env HOST)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9090")), help="port (env PORT)")
    serve.add_argument(
        "--workers", type=int, default=int(os.environ.get("WORKERS", "1")), help="processes; each loads its own models"
    )
    serve.add_argument(
        "--threads", type=int, default=int(os.environ.get("THREADS", "8")), help="request threads per process"
    )
    serve.add_argument("--timeout", type=int, default=int(os.environ.get("GUNICORN_TIMEOUT", "300")))
    commands.add_parser("adapters", help="list the model names usable in extra_params")
    preview = commands.add_parser("preview", help="predict a project's first tasks on a running server, write nothing")
    preview.add_argument("--project", type=int, required=True, help="Label Studio project id")
    preview.add_argument("--tasks", type=int, default=5, help="how many of its first tasks (1-50)")
    preview.add_argument(
        "--server",
        default=os.environ.get("PRELABEL_URL", "http://127.0.0.1:9090"),
        help="prelabel's URL (PRELABEL_URL)",
    )
    preview.add_argument("--extra-params", help="trial settings instead of the project's: JSON, or @file.json")
    preview.add_argument("--json", action="store_true", help="print the server's whole answer (regions included)")
    label_next = commands.add_parser(
        "label-next", help="create or update a project's 'Label next' Data Manager tab (most uncertain first)"
    )
    label_next.add_argument("--project", type=int, required=True, help="Label Studio's project id")
    label_next.add_argument(
        "--disagreements",
        action="store_true",
        help="make the 'Model disagrees' tab instead: the tasks where the model and the annotators disagree most",
    )
    report = commands.add_parser("report", help="how a project's annotations compare with the model's predictions")
    report.add_argument("--project", type=int, required=True, help="Label Studio's project id")
    report.add_argument("--version", help="model version to review (default: the one the project's backend serves)")
    report.add_argument("-o", "--output", help="write the HTML report to this file instead of printing a table")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(args)
    if args.command == "preview":
        return _preview(args)
    if args.command == "label-next":
        return _label_next(args.project, disagreements=args.disagreements)
    if args.command == "adapters":
        from model_adapters.registry import available_adapters

        print("\n".join(available_adapters()))
        return 0
    return _serve(args)


def _preview(args: argparse.Namespace) -> int:
    import json

    import requests

    from backend.preview_table import preview_table

    body: dict[str, Any] = {"project": args.project, "tasks": args.tasks}
    if args.extra_params is not None:
        text = args.extra_params
        try:
            if text.startswith("@"):
                with open(text[1:], encoding="utf-8") as f:
                    text = f.read()
            body["extra_params"] = json.loads(text)
        except (OSError, ValueError) as exc:
            print(f"prelabel preview: --extra-params: {exc}", file=sys.stderr)
            return 2
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    try:
        response = requests.post(
            f"{args.server.rstrip('/')}/preview", json=body, auth=(user, password or "") if user else None, timeout=600
        )
        answer = response.json()
    except (requests.RequestException, ValueError) as exc:
        print(f"prelabel preview: no answer from {args.server}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        why = answer.get("error", answer) if isinstance(answer, dict) else answer
        print(f"prelabel preview: {response.status_code}: {why}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else preview_table(answer))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from backend.log_redaction import install_log_redaction
    from backend.settings import ServerSettings, SettingsError

    try:
        settings = ServerSettings.from_env()
    except SettingsError as exc:
        print(f"prelabel: {exc}", file=sys.stderr)
        return 2
    problem = _device_problem(settings)
    if problem:
        print(f"prelabel: {problem}", file=sys.stderr)
        return 2
    install_log_redaction()
    # Progress bars (weights loading, downloads) would put carriage returns and bar glyphs into the log. The model
    # libraries read these when they are imported, which happens later, in the workers.
    os.environ.update(_NO_PROGRESS_BARS)
    # Workers share metrics through files; this must be set before prometheus_client is imported.
    metrics_dir = settings.model_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))

    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"{args.host}:{args.port}",
                "workers": args.workers,
                "threads": args.threads,
                "worker_class": "backend.gunicorn_errors.JsonErrorWorker",
                "timeout": args.timeout,
                "accesslog": "-",
                # gunicorn's default control socket path is shared by every gunicorn of the user (see README)
                "control_socket_disable": True,
                "child_exit": _child_exit,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from backend.app import create_app
            from backend.gunicorn_errors import answer_body_errors, close_after_refused_body

            app = create_app()
            answer_body_errors(app)
            close_after_refused_body(app)
            return app

    _Gunicorn().run()
    return 0


def _label_next(pid: int, *, disagreements: bool) -> int:
    import json

    from backend.errors import BadRequest
    from backend.service import PrelabelService
    from backend.settings import ServerSettings, SettingsError

    try:
        service = PrelabelService(ServerSettings.from_env())
        print(json.dumps(service.disagreements_tab(pid) if disagreements else service.label_next(pid)))
    except (SettingsError, BadRequest) as exc:
        print(f"prelabel: {exc}", file=sys.stderr)
        return 2
    return 0


def _report(args: argparse.Namespace) -> int:
    import json

    from backend.errors import BadRequest
    from backend.review.render import report_html, report_table
    from backend.service import PrelabelService
    from backend.settings import ServerSettings, SettingsError

    try:
        report = PrelabelService(ServerSettings.from_env()).review(args.project, args.version)
    except (SettingsError, BadRequest) as exc:
        print(f"prelabel: {exc}", file=sys.stderr)
        return 2
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(report_html(report))
        except OSError as exc:
            print(f"prelabel report: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}: {report['annotations']} annotations compared")
        return 0
    print(json.dumps(report, indent=2) if args.json else report_table(report))
    return 0


def _device_problem(settings: Any) -> str | None:
    """Why a GPU the settings ask for explicitly cannot be used, checked before serving (else every request 503s).

    The check imports torch in a short-lived subprocess: the gunicorn master must not initialise CUDA before it
    forks its workers.
    """
    sections = [v for v in settings.defaults.values() if isinstance(v, dict)]
    asked = {settings.device} | {str(s["device"]) for s in sections if "device" in s}
    gpus = sorted(d for d in asked if d.startswith("cuda"))
    if not gpus:
        return None
    code = (
        "import sys\n"
        "from model_adapters.base import AdapterLoadError\n"
        "from model_adapters.torch_utils import check_device\n"
        "try:\n"
        f"    [check_device(d) for d in {gpus!r}]\n"
        "except AdapterLoadError as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"checking the GPU ({', '.join(gpus)}) took over 120 s; is the NVIDIA driver healthy?"
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    if any("No module named 'torch'" in line for line in lines):
        return f"{', '.join(gpus)} asked for (PRELABEL_DEVICE or PRELABEL_DEFAULTS) but torch is not installed"
    return lines[-1] if lines else f"cannot use {', '.join(gpus)}"


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


if __name__ == "__main__":
    sys.exit(main())
