from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from backend.app import create_app
from backend.settings import ServerSettings

HEADER = "X-Prelabel-Webhook-Secret"
EVENT = {"action": "PROJECT_UPDATED", "project": {"id": 3}}


def make_client(tmp_path: Path, **settings: object) -> FlaskClient:
    return create_app(
        ServerSettings(model_dir=tmp_path, preload_projects=0, webhook_secret="s3", **settings)
    ).test_client()


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({HEADER: "s3"}, "", 200),
        ({HEADER.lower(): "s3"}, "", 200),
        ({HEADER: "wrong"}, "", 401),
        ({HEADER: ""}, "?secret=s3", 200),  # an empty header falls back to the query
        ({HEADER: "wrong"}, "?secret=s3", 401),  # a header that is sent is the one checked
        ({}, "?secret=s3", 200),
        ({}, "", 401),
    ],
)
def test_the_webhook_secret_comes_in_a_header_or_the_query(
    tmp_path: Path, headers: dict[str, str], query: str, status: int
) -> None:
    response = make_client(tmp_path).post(f"/webhook{query}", json=EVENT, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert HEADER in response.json["error"]


def test_the_header_secret_replaces_basic_auth_on_the_webhook_only(tmp_path: Path) -> None:
    client = make_client(tmp_path, basic_auth_user="ls", basic_auth_pass="pw")
    assert client.post("/webhook", json=EVENT, headers={HEADER: "s3"}).status_code == 200
    assert client.get("/versions", headers={HEADER: "s3"}).status_code == 401


def test_refused_webhooks_show_on_the_status_page(tmp_path) -> None:
    from backend.app import create_app
    from backend.settings import ServerSettings

    app = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, basic_auth_user="u", basic_auth_pass="p"))
    client = app.test_client()
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).status_code == 401
    page = client.get("/", headers={"Authorization": "Basic dTpw"}).text
    assert "1 webhook calls were refused in the last hour" in page and "basic auth required" in page
