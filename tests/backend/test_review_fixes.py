"""Attacks and careless input on the routes that act with Label Studio's key: cross-site requests, odd ids, huge lists."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from backend.app import create_app
from backend.cli import _task_ids
from backend.settings import ServerSettings
from backend.store import project_id


def client(tmp_path: Path) -> Any:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("post", "/jobs", '{"project":"3.="}'), ("post", "/label-next?project=3", ""),
     ("post", "/setup", '{"project":"3.1","schema":"<View/>"}'), ("delete", "/jobs/1", "")],
)  # fmt: skip
def test_a_page_of_another_site_cannot_make_a_browser_change_anything(
    tmp_path: Path, method: str, path: str, body: str
) -> None:
    answer = getattr(client(tmp_path), method)(
        path, data=body, content_type="text/plain", headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403 and "another site's page" in answer.json["error"]


def test_label_studio_the_cli_and_the_status_page_itself_still_get_through(tmp_path: Path) -> None:
    c = client(tmp_path)
    assert c.post("/setup", json={"project": "3.1", "schema": "<View/>"}).status_code == 200  # no Origin, as LS
    same = c.post("/jobs", json={"project": 3}, headers={"Origin": "http://localhost"})
    assert same.status_code != 403  # the server's own origin
    assert c.get("/jobs", headers={"Origin": "https://evil.example"}).status_code == 200  # reading changes nothing


@pytest.mark.parametrize("key", ["²", "3.=", "٣.1", "3.1.2", "3.²"])
def test_project_keys_are_ascii_digits_only(key: str) -> None:
    assert project_id(key) is None


def test_odd_project_ids_and_job_ids_are_400_and_404_not_500(tmp_path: Path) -> None:
    c = client(tmp_path)
    assert c.get("/report?project=²").status_code == 400
    assert c.post("/jobs", json={"project": "²"}).status_code == 400
    assert c.get("/jobs/99999999999999999999").status_code == 404
    assert c.delete("/jobs/99999999999999999999").status_code == 404


def test_named_tasks_are_bounded_before_any_list_is_built(tmp_path: Path) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="over 100000 tasks"):
        _task_ids("1-1000000000")
    assert _task_ids("4,5,10-12") == (4, 5, 10, 11, 12)
    answer = client(tmp_path).post("/jobs", json={"project": 3, "task_ids": list(range(1, 100_002))})
    assert answer.status_code == 400 and "over 100000" in answer.json["error"]
