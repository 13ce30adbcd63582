"""Bulk jobs against a real Label Studio 1.23: killed half-way and started again, every task ends with exactly one
prediction of the version, and annotated tasks are left alone (``prelabel bulk`` and ``POST /jobs`` alike)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from PIL import Image

from backend.jobs.store import JobStore
from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import RECT_CONFIG, image_array

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ANNOTATED = 10  # every tenth task holds an annotation


def project_with_images(ls: LabelStudio, name: str, count: int) -> tuple[int, list[int], set[int]]:
    """A project of ``count`` local-file tasks; every tenth is annotated. Its id, task ids, annotated ids."""
    project = ls.create_project(name, RECT_CONFIG)["id"]
    folder = ls.document_root / name
    folder.mkdir(parents=True)
    urls = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        Image.fromarray(image_array(40 + i % 7, 32 + i % 5, seed=i)).save(path, "JPEG")
        urls.append(ls.local_file_url(path))
    ls.add_local_storage(project, name)
    task_ids = ls.import_tasks(project, [{"data": {"image": url}} for url in urls])
    box = {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, "rectanglelabels": ["Cat"]}
    annotated = set(task_ids[::ANNOTATED])
    for task_id in annotated:
        ls.create_annotation(task_id, [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                                        "value": box}])  # fmt: skip
    return project, task_ids, annotated


def versions_per_task(ls: LabelStudio, project: int) -> dict[int, list[str]]:
    return {t["id"]: [p["model_version"] for p in t["predictions"]] for t in ls.tasks(project)}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout:.0f} s:\n{log()}")
        time.sleep(0.2)


def finished(model_dir: Path, job_id: int = 1) -> int:
    if not (model_dir / "jobs.sqlite3").exists():
        return 0
    job = JobStore(model_dir).get(job_id)
    return job.finished_tasks if job else 0


@pytest.mark.parametrize(
    ("engine", "count", "page"),
    [("local", 200, "10"), pytest.param("ray", 60, "5", id="ray-local-2-cpus")],
)
def test_bulk_command_killed_half_way_resumes_to_one_prediction_per_task(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path, engine: str, count: int, page: str
) -> None:
    if engine == "ray":
        pytest.importorskip("ray")
    ls = label_studio
    project, task_ids, annotated = project_with_images(ls, f"bulk-cli-{engine}", count)
    model_dir = tmp_path / "model_dir"
    env = {**os.environ, "MODEL_DIR": str(model_dir), "LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.token,
           "PRELABEL_JOB_PAGE_SIZE": page, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "",
           "PRELABEL_DEFAULTS": json.dumps({"detection": {"model_id": str(tiny("grounding_dino")),
                                                          "score_threshold": 0.0}})}  # fmt: skip
    command = [sys.executable, "-m", "backend.cli", "bulk", "--project", str(project), "--engine", engine]
    if engine == "ray":
        command += ["--ray-actors", "2"]  # a local Ray of this machine's CPUs (2 in CI), started by the command
    log = tmp_path / "bulk.log"
    with log.open("wb") as out:
        first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
        try:
            wait_for(lambda: finished(model_dir) >= count // 2 or first.poll() is not None, 300, "half the job",
                     log.read_text)  # fmt: skip
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # kill -9 half-way: no chance to tidy up
            first.wait(10)
    assert first.returncode == -signal.SIGKILL, log.read_text()
    halfway = versions_per_task(ls, project)
    assert 0 < sum(map(bool, halfway.values())) < count - len(annotated)

    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "job 1: resuming after task" in second.stderr
    assert "job 1 (project" in second.stdout and "done" in second.stdout

    final = versions_per_task(ls, project)
    (version,) = {v for versions in final.values() for v in versions}
    for task_id in task_ids:
        assert final[task_id] == ([] if task_id in annotated else [version]), task_id
    job = JobStore(model_dir).get(1)
    assert job is not None and (job.total, job.predicted + job.skipped, job.failed) == (count, count, 0)


def test_a_server_job_survives_kill_9_and_a_later_retrieve_adds_nothing(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    project, task_ids, annotated = project_with_images(ls, "bulk-server", 60)
    env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.token, "PRELABEL_JOB_PAGE_SIZE": "5"}
    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.0}}
    model_dir = tmp_path / "server" / "model_dir"
    with PrelabelServer(tmp_path / "server", env, workers=1) as server:
        backend = ls.add_ml_backend(project, server.url, title="prelabel", extra_params=extra)
        answer = requests.post(f"{server.url}/jobs", json={"project": project}, timeout=10)
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
        wait_for(lambda: finished(model_dir, job_id) >= 20, 300, "a third of the job", server.log_tail)
        server.kill()
    with PrelabelServer(tmp_path / "server", env, workers=1) as server:  # same MODEL_DIR: the job goes on
        state = lambda: requests.get(f"{server.url}/jobs/{job_id}", timeout=10).json()  # noqa: E731
        wait_for(lambda: state()["state"] == "done", 300, "the job's end", server.log_tail)
        body = state()
        assert (body["total"], body["finished"], body["failed"]) == (60, 60, 0)
        versions = versions_per_task(ls, project)
        (version,) = {v for found in versions.values() for v in found}
        assert body["model_version"] == version
        for task_id in task_ids:
            assert versions[task_id] == ([] if task_id in annotated else [version]), task_id

        # The version the job wrote is the one /setup answers: a retrieve asks only for the tasks without it (the
        # annotated ones, which a retrieve does predict), and nothing is duplicated.
        ls.update_ml_backend(backend["id"], url=server.url)  # the restarted server listens on another port
        ls.retrieve_predictions(project)
        after = versions_per_task(ls, project)
        assert all(after[task_id] == [version] for task_id in task_ids), after
        assert "prelabel_job_tasks_total" in requests.get(f"{server.url}/metrics", timeout=10).text


def test_a_retrieve_over_its_budget_hands_the_rest_to_a_job_and_nothing_is_lost_or_duplicated(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    project, task_ids, _ = project_with_images(ls, "bulk-handoff", 12)
    # A budget no request can meet: the retrieve predicts nothing in time and hands every task to a job.
    env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.token, "PRELABEL_PREDICT_BUDGET": "0.001"}
    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.0}}
    with PrelabelServer(tmp_path / "server", env, workers=2) as server:
        ls.add_ml_backend(project, server.url, title="prelabel", extra_params=extra)
        ls.retrieve_predictions(project)
        (job,) = requests.get(f"{server.url}/jobs", timeout=10).json()["jobs"]
        assert job["origin"] == "retrieve" and job["filter"]["task_ids"] == sorted(task_ids), job
        ls.retrieve_predictions(project)  # while the job runs, or after: Label Studio stores no second prediction
        state = lambda: requests.get(f"{server.url}/jobs/{job['id']}", timeout=10).json()  # noqa: E731
        wait_for(lambda: state()["state"] == "done", 300, "the handed-off job's end", server.log_tail)
        ls.retrieve_predictions(project)
        versions = versions_per_task(ls, project)
        (version,) = {v for found in versions.values() for v in found}
        assert all(versions[t] == [version] for t in task_ids), versions  # annotated ones too: a retrieve's tasks
        assert f"bulk job {job['id']} predicts them" in requests.get(f"{server.url}/", timeout=10).text
