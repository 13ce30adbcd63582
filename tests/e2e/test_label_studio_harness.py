"""Smoke test of the Label Studio harness: a real LS starts, serves uploads, and honours tokens and PATs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.e2e.label_studio import LabelStudio

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Cat"/></RectangleLabels></View>'
)


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path.read_bytes()


def _claims(jwt: str) -> dict[str, object]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_upload_is_served_to_token_and_pat_access(label_studio: LabelStudio, tmp_path: Path) -> None:
    ls = label_studio
    project = ls.create_project("harness smoke", CONFIG)
    image_bytes = _png(tmp_path / "cat.png", (32, 24), (200, 30, 30))

    task_ids = ls.import_files(project["id"], [tmp_path / "cat.png"])
    assert len(task_ids) == 1
    (task,) = ls.tasks(project["id"])
    assert task["id"] == task_ids[0]
    url = task["data"]["image"]
    assert url.startswith(f"/data/upload/{project['id']}/"), url

    assert requests.get(ls.url(url), timeout=30).status_code == 401
    by_token = ls.api("GET", url)
    assert by_token.status_code == 200
    assert by_token.content == image_bytes

    pat = ls.create_personal_access_token()
    assert _claims(pat)["token_type"] == "refresh"
    access = ls.access_token(pat)
    assert _claims(access)["token_type"] == "access"
    by_access = requests.get(ls.url(url), headers={"Authorization": f"Bearer {access}"}, timeout=30)
    assert by_access.status_code == 200
    assert by_access.content == image_bytes
    # The PAT itself is not a credential for file downloads: it must be exchanged first.
    for header in (f"Bearer {pat}", f"Token {pat}"):
        assert requests.get(ls.url(url), headers={"Authorization": header}, timeout=30).status_code == 401


def test_local_files_need_a_storage(label_studio: LabelStudio) -> None:
    ls = label_studio
    project = ls.create_project("harness local files", CONFIG)
    local = ls.document_root / "dataset" / "dog 1.png"
    image_bytes = _png(local, (20, 10), (30, 200, 30))
    url = ls.local_file_url(local)
    assert url == "/data/local-files/?d=dataset/dog%201.png"

    (task_id,) = ls.import_tasks(project["id"], [{"data": {"image": url}}])
    assert ls.api("GET", url).status_code == 404  # no storage covers the directory yet
    ls.add_local_storage(project["id"], "dataset")
    served = ls.api("GET", url)
    assert served.status_code == 200
    assert served.content == image_bytes
    assert [t["id"] for t in ls.tasks(project["id"])] == [task_id]
