"""``RayEngine`` on a local Ray of 2 CPUs: the same predictions as the in-process engine, pages in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.backend.jobs.conftest import PROJECT_ID, FakeLabelStudio, make_client

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def job_predictions(tmp_path: Path, monkeypatch, model: Path, engine: Callable | None) -> dict[int, dict]:
    with FakeLabelStudio(10) as ls:
        ls.annotate(4)
        extra = {"detection": {"model_id": str(model), "score_threshold": 0.0}}
        client = make_client(tmp_path, ls.url, monkeypatch, extra=extra, job_page_size=3)
        runner = client.service.jobs.runner
        if engine is not None:
            runner.engine = engine(client.service.settings)
        client.post("/jobs", json={"project": PROJECT_ID})
        job = client.service.jobs.run_next()
        if engine is not None:
            runner.engine.close()
        assert job.state == "done" and (job.predicted, job.skipped) == (9, 1), job
        stored = ls.per_task()
        assert all(len(entries) == 1 for entries in stored.values())
        return {task: entries[0] for task, entries in stored.items()}


def test_ray_actors_predict_what_the_process_predicts(
    tmp_path: Path, monkeypatch, tiny: Callable[[str], Path], local_ray
) -> None:
    from backend.jobs.ray_engine import RayEngine

    model = tiny("grounding_dino")
    local = job_predictions(tmp_path / "local", monkeypatch, model, None)
    on_ray = job_predictions(tmp_path / "ray", monkeypatch, model, lambda s: RayEngine(s, actors=2))
    assert sorted(on_ray) == sorted(local) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert any(entry["result"] for entry in local.values())
    for task, entry in local.items():
        other = on_ray[task]
        assert other["model_version"] == entry["model_version"]
        assert other["score"] == pytest.approx(entry["score"], abs=1e-4)
        assert len(other["result"]) == len(entry["result"])
        for mine, theirs in zip(entry["result"], other["result"], strict=True):
            assert theirs["value"]["rectanglelabels"] == mine["value"]["rectanglelabels"]
            for key in ("x", "y", "width", "height"):
                assert theirs["value"][key] == pytest.approx(mine["value"][key], abs=1e-3)
