"""``prelabel`` command: ``serve``, ``adapters``, ``preview``, ``label-next``, ``report``, ``bulk``, ``predict``.

``serve`` runs the backend under gunicorn; ``adapters`` lists the models; ``preview`` predicts a project's first tasks
on a running server (nothing written) and prints each label's score distribution, to tune thresholds before a bulk run;
``label-next`` makes a project's "Label next" tab (with ``--disagreements``: its "Model disagrees" tab) in Label Studio
with the server's settings (``MODEL_DIR``, ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``); ``report`` prints how a
project's annotations compare with the model's predictions (or writes the HTML page with ``-o``), with the same
settings; ``bulk`` prelabels a project in the foreground as a bulk job (see ``backend.jobs``) with a progress bar;
``predict`` prelabels image files into Label Studio import JSON, before importing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
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
    bulk = commands.add_parser(
        "bulk",
        help="prelabel a project's tasks through Label Studio's API (resumable: run it again to continue)",
        description="Predict every task of a project that has no prediction of the current model version yet (and "
        "no annotation, unless --include-annotated) and write the predictions through Label Studio's API. Uses "
        "the same settings as `prelabel serve` (MODEL_DIR, LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, ...). Stopped "
        "at any point, the same command continues where it stopped.",
    )
    bulk.add_argument("--project", type=int, required=True, help="Label Studio project id")
    bulk.add_argument("--view", type=int, help="only the tasks of this Data Manager tab (its id)")
    bulk.add_argument("--tasks", type=_task_ids, help="only these task ids, like 4,5,10-20")
    bulk.add_argument("--include-annotated", action="store_true", help="also predict tasks that hold annotations")
    bulk.add_argument("--without-predictions", action="store_true", help="only tasks with no prediction at all")
    bulk.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: predict in this process; ray: on Ray actors (local Ray, or RAY_ADDRESS), prelabel[ray]",
    )  # fmt: skip
    bulk.add_argument("--ray-actors", type=int, help="Ray actors (default: one per GPU, else one per CPU)")
    offline = commands.add_parser(
        "predict",
        help="prelabel image files into Label Studio import JSON (tasks with predictions), before importing",
        description="Predict image files with a label config and write Label Studio import JSON: one task per "
        "image with its prediction. Images are named by their path below the folder common to all of them: by "
        "default as Label Studio's local-files URL (/data/local-files/?d=<path>), or below --image-root-url.",
    )
    offline.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    offline.add_argument("--config", required=True, type=Path, help="the project's label config (XML file)")
    offline.add_argument("--extra-params", default=None, help="the project's extra params: JSON, or @file.json")
    offline.add_argument("-o", "--output", required=True, type=Path, help="where to write the tasks (JSON)")
    offline.add_argument("--image-root-url", help="URL Label Studio will serve the images' common folder from")

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
    if args.command == "predict":
        return _predict_offline(args)
    if args.command == "bulk":
        return _bulk(args)
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


def _task_ids(text: str) -> tuple[int, ...]:
    from backend.jobs.pages import MAX_TASK_IDS

    ids: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            span = range(int(first), int(last or first) + 1)
            if len(ids) + len(span) > MAX_TASK_IDS:  # checked before the range is built
                raise argparse.ArgumentTypeError(
                    f"--tasks names over {MAX_TASK_IDS} tasks: select them with a Data Manager tab (--view) instead"
                )
            ids.update(span)
    except ValueError:
        raise argparse.ArgumentTypeError(f"task ids must look like 4,5,10-20, got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("no task ids given")
    return tuple(sorted(ids))


def _bulk(args: argparse.Namespace) -> int:
    """Run (or resume) the bulk job of these arguments in this process, with a progress bar on stderr."""
    import logging
    import time

    from backend.jobs.pages import JobFilter
    from backend.jobs.report import ProgressBar, summary
    from backend.jobs.runner import LEASE_S
    from backend.jobs.store import worker_name
    from backend.log_redaction import install_log_redaction
    from backend.service import PrelabelService
    from backend.settings import ServerSettings, SettingsError

    try:
        settings = ServerSettings.from_env()
    except SettingsError as exc:
        print(f"prelabel: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    os.environ.update(_NO_PROGRESS_BARS)
    service = PrelabelService(settings)
    job_filter = JobFilter(view=args.view, task_ids=args.tasks, without_annotations=not args.include_annotated,
                           without_predictions=args.without_predictions)  # fmt: skip
    store, worker = service.jobs.store, worker_name()
    job = store.matching(args.project, job_filter, "cli")
    if job is None:
        job = store.create(args.project, job_filter, "cli")
        print(f"job {job.id}: project {args.project}", file=sys.stderr)
    else:
        print(f"job {job.id}: resuming after task {job.cursor} ({job.finished_tasks} tasks done)", file=sys.stderr)
    deadline = time.monotonic() + LEASE_S + 5
    claimed = store.claim(worker, LEASE_S, job_id=job.id)
    while claimed is None and time.monotonic() < deadline:
        holder, _ = store.holder(job.id)
        print(f"job {job.id} is held by {holder}; waiting for its lease to run out", file=sys.stderr)
        time.sleep(5)
        claimed = store.claim(worker, LEASE_S, job_id=job.id)
    if claimed is None:
        print(f"prelabel: job {job.id} is still running elsewhere; stop that one first", file=sys.stderr)
        return 1
    engine = None
    if args.engine == "ray":
        try:
            from backend.jobs.ray_engine import RayEngine
        except ImportError as exc:
            store.release(job.id, worker)
            print(f"prelabel: --engine ray needs Ray: pip install 'prelabel[ray]' ({exc})", file=sys.stderr)
            return 2
        engine = service.jobs.runner.engine = RayEngine(settings, args.ray_actors)
    bar = ProgressBar(sys.stderr)
    try:
        final = service.jobs.runner.run(claimed, worker, progress=bar.update)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: run the same command again to continue job {job.id}", file=sys.stderr)
        return 130
    finally:
        if engine is not None:
            engine.close()
    bar.close()
    print(summary(final, store.failures(final.id)))
    return 0 if final.state == "done" else 1


def _predict_offline(args: argparse.Namespace) -> int:
    """Predict image files into import JSON, with a progress bar on stderr and a summary."""
    import dataclasses
    import json
    import logging

    from backend.errors import BadRequest
    from backend.jobs.offline import common_root, image_files, write_import_json
    from backend.plan import parse_extra_params
    from backend.service import PrelabelService
    from backend.settings import ServerSettings, SettingsError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.update(_NO_PROGRESS_BARS)
    try:
        files = image_files(args.images)
        root = common_root(files)
        settings = dataclasses.replace(ServerSettings.from_env(), local_files_document_root=root, preload_projects=0)
        raw = args.extra_params
        if raw and raw.startswith("@"):
            raw = Path(raw[1:]).read_text()
        service = PrelabelService(settings)
        plan = service.plan(args.config.read_text(), parse_extra_params(json.loads(raw) if raw else None))
        with args.output.open("w") as out:
            total = len(files)
            summary = write_import_json(files, root, plan, service.runner, out, args.image_root_url,
                                        lambda done: print(f"\r{done}/{total} images", end="", file=sys.stderr))  # fmt: skip
    except (BadRequest, SettingsError, OSError, json.JSONDecodeError) as exc:
        print(f"prelabel: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    print(f"{summary.tasks} tasks written to {args.output} ({plan.model_version}): {summary.predicted} predicted, "
          f"{len(summary.failed)} without a prediction")  # fmt: skip
    for path, reason in list(summary.failed.items())[:5]:
        print(f"  {path}: {reason}")
    return 0 if not summary.failed else 1


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
