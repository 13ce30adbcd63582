"""docker/compose.yml's environments, run outside Docker: Label Studio 1.23.2 and prelabel with exactly those settings.

Only what cannot run here changes: loopback addresses and ports instead of the compose network, temporary folders
instead of the volumes. Label Studio starts without the harness's user flags, as the image's ``label-studio``
command does, so the admin, its token and legacy-token support come from the compose environment alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.compose_files import interpolate, load
from tests.e2e.label_studio import HOST, LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import RECT_CONFIG, image_array

pytestmark = pytest.mark.e2e

SECRETS = {"LABEL_STUDIO_API_KEY": secrets.token_hex(20), "LABEL_STUDIO_PASSWORD": secrets.token_hex(12)}
# The harness's own defaults that compose does not set: dropped, so Label Studio falls back to its built-in ones.
HARNESS_ONLY = ("LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN", "ML_BLOCK_LOCAL_IP", "SSRF_PROTECTION_ENABLED")


def compose_environment(service: str) -> dict[str, str]:
    return interpolate(load("compose.yml")["services"][service]["environment"], SECRETS)


class ComposeLabelStudio(LabelStudio):
    """Label Studio with the compose service's environment and the image's plain ``start`` (no user flags)."""

    def __init__(self, document_root: Path, compose_env: dict[str, str], log_path: Path) -> None:
        env = {**compose_env, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root.resolve())}
        super().__init__(document_root, extra_env=env, log_path=log_path)
        self.username, self.password = env["LABEL_STUDIO_USERNAME"], env["LABEL_STUDIO_PASSWORD"]
        self.token = env["LABEL_STUDIO_USER_TOKEN"]  # start() checks it with GET /api/current-user/whoami
        self._session.headers["Authorization"] = f"Token {self.token}"

    def environment(self) -> dict[str, str]:
        env = super().environment()
        for key in HARNESS_ONLY:
            if key not in self.extra_env:
                env.pop(key, None)
        return env

    def command(self) -> list[str]:
        return [str(self.executable), "start", "--no-browser", "--internal-host", HOST, "--port", str(self.port)]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeLabelStudio]:
    root = tmp_path_factory.mktemp("compose-label-studio")
    with ComposeLabelStudio(root / "files", compose_environment("label-studio"), root / "label-studio.log") as ls:
        yield ls


@pytest.fixture(scope="module")
def prelabel(studio: ComposeLabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrelabelServer]:
    env = compose_environment("prelabel")
    for path_setting in ("MODEL_DIR", "HF_HOME"):  # the volumes: the server's work dir and the test's cache instead
        del env[path_setting]
    env |= {
        "LABEL_STUDIO_URL": studio.base_url,  # http://label-studio:8080 on the compose network
        "LOCAL_FILES_DOCUMENT_ROOT": str(studio.document_root),
        "HF_HUB_OFFLINE": "1",
    }
    with PrelabelServer(tmp_path_factory.mktemp("compose-prelabel"), env) as server:
        yield server


def test_label_studio_takes_the_admin_and_legacy_token_from_the_environment_alone(studio: ComposeLabelStudio) -> None:
    env, command = studio.environment(), studio.command()
    assert "--user-token" not in command and "--enable-legacy-api-token" not in command and "--username" not in command
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    whoami = studio.api("GET", "/api/current-user/whoami").json()
    assert whoami["email"] == compose_environment("label-studio")["LABEL_STUDIO_USERNAME"]
    login = requests.Session()
    page = login.get(studio.url("/user/login/"), timeout=30)
    form = {"email": whoami["email"], "password": SECRETS["LABEL_STUDIO_PASSWORD"]}
    answer = login.post(
        studio.url("/user/login/"),
        data={**form, "csrfmiddlewaretoken": page.cookies["csrftoken"]},
        headers={"Referer": studio.url("/user/login/")},
        timeout=30,
        allow_redirects=False,
    )
    assert answer.status_code == 302 and "sessionid" in login.cookies  # the password from docker/.env logs in


def test_uploads_are_prelabeled_with_the_provisioned_token(
    studio: ComposeLabelStudio, prelabel: PrelabelServer, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    project = studio.create_project("compose", RECT_CONFIG)
    image = tmp_path / "upload.jpg"
    Image.fromarray(image_array(64, 48, 5)).save(image)
    (task_id,) = studio.import_files(project["id"], [image])
    upload = studio.tasks(project["id"])[0]["data"]["image"]
    assert requests.get(studio.url(upload), timeout=30).status_code == 401  # uploads need the token

    extra = {"detection": {"model_id": str(tiny("grounding_dino"))}}
    backend = studio.add_ml_backend(project["id"], prelabel.url, title="prelabel", extra_params=extra)
    studio.retrieve_predictions(project["id"])
    # A task whose image could not be fetched gets no prediction at all (README, "Protocol").
    (prediction,) = studio.predictions(task_id)
    assert prediction["model_version"] == backend["model_version"], prelabel.log_tail()
    assert "401" not in prelabel.log_tail()


def test_a_backend_brings_a_webhook_which_is_why_ssrf_protection_is_off(
    studio: ComposeLabelStudio, prelabel: PrelabelServer
) -> None:
    """Saving a backend makes Label Studio create a webhook to it; SSRF protection refuses private addresses there."""
    assert compose_environment("label-studio")["SSRF_PROTECTION_ENABLED"] == "false"
    project = studio.create_project("compose webhooks", RECT_CONFIG)
    studio.add_ml_backend(project["id"], prelabel.url, title="prelabel")
    hooks = studio.api("GET", "/api/webhooks/", params={"project": project["id"]}).json()
    assert f"{prelabel.url}/webhook" in [hook["url"] for hook in hooks]
