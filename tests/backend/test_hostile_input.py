"""Hostile or careless requests get a 4xx JSON error that names the field, never a 500."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.app import create_app
from backend.settings import ServerSettings
from tests import fakes  # noqa: F401  (registers the fake adapters)
from tests.helpers import RECT_CONFIG, data_uri, make_task

SMART = """<View><Image name="image" value="$image"/>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="Cat"/></KeyPointLabels>
  <BrushLabels name="mask" toName="image"><Label value="Cat"/></BrushLabels></View>"""


def make_client(tmp_path: Path, **overrides: Any) -> FlaskClient:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, **overrides)).test_client()


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return make_client(tmp_path)


def setup_body(**fields: Any) -> dict[str, Any]:
    return {"project": "3.1700000000", "schema": RECT_CONFIG, "hostname": "http://localhost:8080",
            "access_token": "t" * 40, "extra_params": {"detection": {"model": "slow_fake"}}, **fields}  # fmt: skip


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("route", ["/setup", "/predict", "/webhook"])
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deeply_nested_json_is_a_400_on_every_route(client: FlaskClient, route: str, depth: int) -> None:
    body = '{"tasks": ' + nested(depth) + ', "schema": "x", "action": "A"}'
    response = client.post(route, data=body, content_type="application/json")
    assert response.status_code == 400 and "nests deeper than 64 levels" in response.json["error"]


@pytest.mark.parametrize("field", ["project", "hostname", "access_token", "schema"])
def test_a_lone_surrogate_is_a_400_naming_the_field(client: FlaskClient, field: str) -> None:
    body = json.dumps(setup_body(**{field: "x\ud800y"}))  # json.dumps writes it as the escape "\ud800"
    response = client.post("/setup", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"].startswith(f"{field}: text holds a lone surrogate")


def test_a_lone_surrogate_deep_in_a_task_names_its_path(client: FlaskClient) -> None:
    body = json.dumps({"tasks": [make_task(1, "x"), make_task(2, "\udfff")], "label_config": RECT_CONFIG})
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"].startswith("tasks[1].data.image:")


def test_a_smart_tool_region_without_from_name_is_a_400(client: FlaskClient) -> None:
    extra = {"segmentation": {"model": "fake_segmenter"}, "interactive": {"model": "fake_segmenter"}}
    assert client.post("/setup", json=setup_body(schema=SMART, extra_params=extra)).status_code == 200
    region = {"type": "keypointlabels", "value": {"x": 10, "y": 10, "keypointlabels": ["Cat"]}}
    body = {"tasks": [make_task(1, data_uri())], "project": "3.1700000000", "params": {"context": {"result": [region]}}}
    response = client.post("/predict", json=body)
    assert response.status_code == 400 and "result[0].from_name" in response.json["error"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"detection": {"model": 1.5}}, "model must be a non-empty string"),
        ({"detection": {"model_id": ""}}, "model_id must be a non-empty string"),
        ({"detection": {"model_id": ["a"]}}, "model_id must be a non-empty string"),
        ({"detection": {"device": 0}}, "device must be a non-empty string"),
        ({"controls": {"label": {"dtype": None}}}, "dtype must be a non-empty string"),
    ],
)
def test_settings_of_the_wrong_type_are_a_400_naming_them(client: FlaskClient, extra: dict, match: str) -> None:
    response = client.post("/setup", json=setup_body(extra_params=extra))
    assert response.status_code == 400 and match in response.json["error"]


def test_project_and_hostname_must_be_what_label_studio_sends(client: FlaskClient) -> None:
    assert "'project' must be a string" in client.post("/setup", json=setup_body(project={"id": 1})).json["error"]
    bad = client.post("/setup", json=setup_body(hostname="http://attacker:1\\@localhost:8080"))
    assert bad.status_code == 400 and "'hostname' must be Label Studio's http(s) URL" in bad.json["error"]


def test_documented_limits_on_body_tasks_and_config(tmp_path: Path) -> None:
    client = make_client(tmp_path, max_body_bytes=4096, max_tasks=3, max_config_bytes=1024)
    too_big = client.post("/setup", data="{" + " " * 5000 + "}", content_type="application/json")
    assert too_big.status_code == 413 and "error" in too_big.json
    tasks = [make_task(i, "x") for i in range(4)]
    many = client.post("/predict", json={"tasks": tasks, "label_config": RECT_CONFIG})
    assert many.status_code == 400 and "PRELABEL_MAX_TASKS=3" in many.json["error"]
    config = RECT_CONFIG.replace("<View>", "<View>" + "<!-- padding -->" * 80)
    long = client.post("/setup", json=setup_body(schema=config))
    assert long.status_code == 400 and "PRELABEL_MAX_CONFIG_KB=1" in long.json["error"]


def test_a_chunked_body_over_the_limit_is_refused_too(tmp_path: Path) -> None:
    client = make_client(tmp_path, max_body_bytes=4096)
    body = io.BytesIO(b'{"tasks": [' + b'"x",' * 2000 + b'"x"]}')  # no Content-Length, as a chunked body arrives
    response = client.post("/predict", input_stream=body, content_type="application/json",
                           environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    assert response.status_code == 413


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["project", "schema", "hostname", "access_token", "extra_params", "tasks", "params",
                          "label_config", "action", "annotation", "task"])  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["/setup", "/predict", "/webhook"]), body=st.dictionaries(FIELDS, JSON_VALUES))
def test_random_bodies_never_give_a_5xx(client: FlaskClient, route: str, body: dict[str, Any]) -> None:
    if route != "/webhook":
        body.setdefault("project", "3.1700000000")
    response = client.post(route, json=body)
    assert response.status_code < 500 or response.status_code == 503, (route, body, response.json)
    assert response.is_json


@pytest.mark.parametrize(
    ("extra", "match"),
    [("[" * 5000 + "]" * 5000, "nests deeper than 64"), ('{"prompts": {"Cat": "\\ud800"}}', "lone surrogate")],
)
def test_extra_params_as_a_json_string_get_the_same_checks(client: FlaskClient, extra: str, match: str) -> None:
    response = client.post("/setup", json=setup_body(extra_params=extra))  # Label Studio sends the box as a string
    assert response.status_code == 400 and match in response.json["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"action": "ANNOTATION_CREATED", "project": {"id": 10**30}, "annotation": {"id": 1, "task": 1},
         "task": {"id": 1, "data": {}}},
        {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": 10**30, "task": 1},
         "task": {"id": 1, "data": {}}},
        {"action": "ANNOTATION_UPDATED", "project": {"id": 3}, "annotation": {"id": 1, "task": 1, "updated_at": 1e400,
         "completed_by": 10**40, "parent_prediction": 10**40}, "task": {"id": 1, "data": {}}},
        {"action": "ANNOTATION_UPDATED", "project": {"id": 3}, "annotation": {"id": 1, "task": 1,
         "updated_at": float("nan")}, "task": {"id": 1, "data": {}}},
        {"action": "ANNOTATIONS_CREATED", "project": {"id": 3}, "annotation": [{"id": 1, "task": [1]}],
         "task": [{"id": [1], "data": {}}]},
        {"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 10**30}]},
    ],
)  # fmt: skip
def test_hostile_webhooks_get_a_4xx_or_a_plain_answer_never_a_500(client: FlaskClient, body: dict) -> None:
    client.post("/setup", json=setup_body())
    response = client.post("/webhook", data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 400), response.json


@pytest.mark.parametrize("project", ["%", "_", "1%", "3.17' OR 1=1", "9" * 40])
def test_versions_takes_only_a_project_id(client: FlaskClient, project: str) -> None:
    client.post("/setup", json=setup_body())
    response = client.get("/versions", query_string={"project": project})
    assert response.status_code == 400 and "'project' must be" in response.json["error"]
