"""B1: bulk jobs. A Label Studio stand-in (task pages after a cursor, prediction imports) serves N tasks with small
JPEGs; a Choices project is predicted by CLIP.

- B1: the same 64 tasks through one in-process ``/predict`` call ÷ through a bulk job (pages of 16 read from and
  written to the stand-in over HTTP), real-size CLIP B/32: what paging, reads and writes add. Target <= 1.1.
- B1b: a bulk job of 128 tasks on a local Ray (2 actors, one CPU each) ÷ in process, real-size CLIP B/32: Ray's
  overhead on one machine, throughput ratio. Target >= 0.8.
- B1c: peak RSS of ``prelabel bulk`` (a fresh process each) over 10,000 tasks ÷ over 1,000, tiny CLIP: memory is
  flat when the job streams. Target <= 1.1.

As in P1, OpenMP threads wait passively: on a shared 2-core machine, spinning threads of one side would slow the
other's image decoding and skew the ratios.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (Ray actors inherit it)

import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from flask import request
from PIL import Image

from benchmarks.common import Row, cache_dir, real_size_clip
from tests.helpers import LocalServer

CONFIG = """<View><Image name="image" value="$image"/><Choices name="kind" toName="image">
<Choice value="Cat"/><Choice value="Dog"/><Choice value="Car"/></Choices></View>"""
PROJECT = 5
ROOT = Path(__file__).resolve().parents[1]


class StandIn(LocalServer):
    """Tasks 1..n, images served from memory (8 distinct JPEGs), predictions counted but not kept."""

    def __init__(self, n: int, extra: dict[str, Any]) -> None:
        super().__init__()
        self.n, self.written = n, 0
        jpegs = []
        for seed in range(8):
            buffer = io.BytesIO()
            pixels = np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
            jpegs.append(buffer.getvalue())
        app = self.app

        @app.get("/data/upload/<int:task>.jpg")
        def image(task: int) -> Any:
            return jpegs[task % 8], 200, {"Content-Type": "image/jpeg"}

        @app.get("/api/projects/<int:project>")
        def project(project: int) -> Any:
            return {"id": project, "label_config": CONFIG}

        @app.get("/api/ml")
        def ml() -> Any:
            return [{"extra_params": json.dumps(extra)}]

        @app.get("/api/tasks")
        def tasks() -> Any:
            query = json.loads(request.args["query"])
            after = query["filters"]["items"][-1]["value"]
            size = int(request.args["page_size"])
            ids = range(after + 1, min(after + size, self.n) + 1)
            page = [{"id": i, "data": {"image": f"/data/upload/{i}.jpg"}, "annotations": [], "predictions": []}
                    for i in ids]  # fmt: skip
            return {"tasks": page, "total": self.n - after}

        @app.post("/api/projects/<int:project>/import/predictions")
        def write(project: int) -> Any:
            self.written += len(request.get_json())
            return {"created": 0}, 201


def _service(ls: StandIn, work: Path, page: int) -> Any:
    from backend.service import PrelabelService
    from backend.settings import ServerSettings

    settings = ServerSettings(model_dir=work, label_studio_url=ls.url, label_studio_api_key="t", preload_projects=0,
                              job_page_size=page, device="cpu")  # fmt: skip
    return PrelabelService(settings)


def _bulk_seconds(service: Any, engine: Any = None) -> float:
    from backend.jobs.pages import JobFilter

    if engine is not None:
        service.jobs.runner.engine = engine
    job = service.jobs.store.create(PROJECT, JobFilter(), "cli")
    claimed = service.jobs.store.claim(service.jobs.worker, 30.0, job_id=job.id)
    started = time.perf_counter()
    final = service.jobs.runner.run(claimed, service.jobs.worker)
    seconds = time.perf_counter() - started
    assert final.state == "done" and final.failed == 0, final
    return seconds


def _predict_vs_bulk(model: Path) -> Row:
    extra = {"classification": {"model": "clip", "model_id": str(model)}}
    with StandIn(64, extra) as ls, tempfile.TemporaryDirectory() as work:
        service = _service(ls, Path(work), 16)
        target = service.job_target(PROJECT)
        tasks = [{"id": i, "data": {"image": f"/data/upload/{i}.jpg"}} for i in range(1, 65)]
        service.runner.predict(tasks[:4], target.plan, target.ls)  # warm: model loaded, caches filled
        started = time.perf_counter()
        outcome = service.runner.predict(tasks, target.plan, target.ls)
        predict = time.perf_counter() - started
        assert not outcome.failed
        bulk = _bulk_seconds(service)
    return Row("B1", "64 tasks, CLIP B/32: one /predict call vs a bulk job (pages of 16)", predict, bulk,
               bulk / predict, "<= 1.1")  # fmt: skip


def _ray_vs_process(model: Path) -> Row:
    import ray

    from backend.jobs.ray_engine import RayEngine

    extra = {"classification": {"model": "clip", "model_id": str(model)}}
    with StandIn(128, extra) as ls, tempfile.TemporaryDirectory() as work:
        service = _service(ls, Path(work), 16)
        target = service.job_target(PROJECT)
        service.runner.predict([{"id": 1, "data": {"image": "/data/upload/1.jpg"}}], target.plan, target.ls)
        local = _bulk_seconds(service)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            engine = RayEngine(service.settings, actors=2)
            warm = [{"id": i, "data": {"image": f"/data/upload/{i}.jpg"}} for i in (1, 2)]
            for actor in engine.actors:  # models loaded before timing, as in the process above
                ray.get(actor.predict.remote(warm, target.plan, ls.url, "t"))
            on_ray = _bulk_seconds(service, engine)
        finally:
            ray.shutdown()
    return Row("B1b", "128 tasks, CLIP B/32: throughput on local Ray (2 actors) ÷ in process", local, on_ray,
               local / on_ray, ">= 0.8")  # fmt: skip


def _peak_rss_mb(count: int, model: Path) -> float:
    extra = {"classification": {"model": "clip", "model_id": str(model)}}
    with StandIn(count, extra) as ls, tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "MODEL_DIR": work, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": "t",
               "PRELABEL_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}  # fmt: skip
        command = [sys.executable, "-m", "backend.cli", "bulk", "--project", str(PROJECT)]
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        assert status == 0 and ls.written == count, (status, ls.written)
    return usage.ru_maxrss / 1024


def run() -> list[Row]:
    """B1, B1b, B1c."""
    from tests.tiny_models import TINY_BUILDERS

    clip = real_size_clip(cache_dir() / "clip-b32")
    rows = [_predict_vs_bulk(clip), _ray_vs_process(clip)]
    tiny = cache_dir() / "tiny-clip"
    if not (tiny / "config.json").exists():
        TINY_BUILDERS["clip"](tiny)
    small, large = _peak_rss_mb(1_000, tiny), _peak_rss_mb(10_000, tiny)
    rows.append(Row("B1c", "prelabel bulk, tiny CLIP: peak RSS over 10k tasks ÷ over 1k", small, large,
                    large / small, "<= 1.1", unit="MB"))  # fmt: skip
    return rows
