"""A project served by Roboflow models through the app: regions for boxes, polygons and choices; the key kept secret."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from label_studio_sdk.label_interface import LabelInterface

from backend.app import create_app
from backend.settings import ServerSettings
from tests.fake_roboflow import FakeModel, FakeRoboflow
from tests.helpers import data_uri, make_task

SECRET = "rf-7c1d9e4a2b-unique-secret"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="Helmet" predicted_values="hard-hat"/><Label value="Head"/>
  </RectangleLabels>
  <PolygonLabels name="outline" toName="image"><Label value="Helmet"/></PolygonLabels>
  <Choices name="scene" toName="image"><Choice value="Site"/><Choice value="Office"/></Choices>
</View>"""
SQUARE = [{"x": 10, "y": 10}, {"x": 30, "y": 10}, {"x": 30, "y": 20}, {"x": 10, "y": 20}]


def section(model_id: str, key: str | None = SECRET) -> dict[str, Any]:
    return {"model": "roboflow", "model_id": model_id, "api": "self_hosted", "retries": 1,
            **({"api_key": key} if key else {})}  # fmt: skip


def extra(key: str | None = SECRET) -> dict[str, Any]:
    return {"detection": section("hard-hats/3", key), "segmentation": section("helmets-seg/1", key),
            "classification": section("scenes/2", key)}  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRoboflow]:
    with FakeRoboflow(SECRET) as server:
        monkeypatch.setenv("ROBOFLOW_API_URL", server.url)
        monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
        server.models["hard-hats/3"] = FakeModel("detection", lambda w, h: [
            {"x": 20, "y": 12, "width": 10, "height": 8, "confidence": 0.9, "class": "hard-hat", "class_id": 0}])  # fmt: skip
        server.models["helmets-seg/1"] = FakeModel("segmentation", lambda w, h: [
            {"x": 20, "y": 15, "width": 20, "height": 10, "confidence": 0.8, "class": "helmet", "points": SQUARE}])  # fmt: skip
        server.models["scenes/2"] = FakeModel("classification", lambda w, h: [
            {"class": "office", "confidence": 0.1}, {"class": "site", "confidence": 0.9}])  # fmt: skip
        yield server


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, model_wait=10)).test_client()


def setup(client: FlaskClient, extra_params: Any) -> Any:
    return client.post("/setup", json={"project": "5.1700000000", "schema": CONFIG, "hostname": "http://ls:8080",
                                       "access_token": "t" * 40, "extra_params": extra_params})  # fmt: skip


def predict(client: FlaskClient) -> Any:
    body = {"tasks": [make_task(1, data_uri(64, 48))], "project": "5.1700000000", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}  # fmt: skip
    return client.post("/predict", json=body)


def test_boxes_outlines_and_choices_from_roboflow_models(client: FlaskClient, fake: FakeRoboflow) -> None:
    assert setup(client, extra()).status_code == 200
    response = predict(client)
    assert response.status_code == 200, response.json
    (entry,) = response.json["results"]
    regions = {r["from_name"]: r for r in entry["result"]}
    assert set(regions) == {"box", "outline", "scene"}
    rect = regions["box"]["value"]  # 10 x 8 px centred at (20, 12) on 64 x 48
    assert rect["rectanglelabels"] == ["Helmet"]  # "hard-hat" through predicted_values
    assert [round(rect[k], 4) for k in ("x", "y", "width", "height")] == [23.4375, 16.6667, 15.625, 16.6667]
    polygon = regions["outline"]["value"]
    assert polygon["polygonlabels"] == ["Helmet"]
    xs, ys = [p[0] * 64 / 100 for p in polygon["points"]], [p[1] * 48 / 100 for p in polygon["points"]]
    assert min(xs) >= 9.5 and max(xs) <= 31.5 and min(ys) >= 9.5 and max(ys) <= 21.5 and max(xs) - min(xs) >= 19
    assert regions["scene"]["value"]["choices"] == ["Site"]
    assert LabelInterface(CONFIG).validate_prediction({"result": entry["result"]})
    assert {s.query["api_key"] for s in fake.seen} == {SECRET} and len(fake.seen) == 3


def test_setup_names_what_is_missing(client: FlaskClient, fake: FakeRoboflow) -> None:
    response = setup(client, extra(key=None))
    assert response.status_code == 400 and "roboflow needs an API key" in response.json["error"]
    bad_id = {"detection": {**section("hard-hats"), "model_id": "hard-hats"}}
    response = setup(client, bad_id)
    assert response.status_code == 400 and '"<project>/<version>"' in response.json["error"]


def test_the_key_is_not_part_of_the_model_version(client: FlaskClient, fake: FakeRoboflow) -> None:
    first = setup(client, extra()).json["model_version"]
    assert setup(client, extra("another-key-2")).json["model_version"] == first
    assert SECRET not in first and first.startswith("roboflow-")


def test_the_key_never_shows_in_logs_errors_metrics_health_or_the_status_page(
    client: FlaskClient, fake: FakeRoboflow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert setup(client, extra()).status_code == 200
    echo = {"message": f"Unauthorized api_key {SECRET}"}  # an error body that echoes the key
    fake.failures = [(401, echo, {}), (500, echo, {}), (500, echo, {}), (404, {"detail": "Not Found"}, {})]
    answer = predict(client)
    assert answer.status_code == 200 and answer.json["results"] == [[]]  # not predicted: retried next time
    page = client.get("/").text
    assert "refused the API key for model hard-hats/3 (HTTP 401: Unauthorized api_key [REDACTED])" in page
    assert "did not answer for model helmets-seg/1 after 2 tries: HTTP 500" in page
    assert "has no model scenes/2 (HTTP 404: Not Found)" in page
    assert "[REDACTED]" in page  # the extra params column, masked
    service = client.application.extensions["prelabel"]
    everything = "\n".join([
        caplog.text, answer.text, page, client.get("/health").text, client.get("/metrics").text,
        *(e.message for e in service.store.events()), *(str(m) for m in service.pool.status()),
    ])  # fmt: skip
    assert SECRET not in everything
    assert {s.query.get("api_key") for s in fake.seen} == {SECRET}  # it was sent, only to Roboflow
