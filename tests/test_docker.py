"""The Docker files: compose configs validate, and they wire what the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def compose_command() -> list[str]:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1); no engine is needed for ``config``."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail("docker compose is needed to lint docker/ (e.g. `apt-get install docker-compose`)")


def compose_config(*files: str) -> dict:
    args = [arg for name in files for arg in ("-f", str(DOCKER / name))]
    out = subprocess.run([*compose_command(), *args, "config"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_cpu_compose_runs_label_studio_and_prelabel_with_volumes() -> None:
    config = compose_config("compose.yml")
    prelabel, studio = config["services"]["prelabel"], config["services"]["label-studio"]
    assert studio["image"] == "heartexlabs/label-studio:1.23.2"
    assert prelabel["environment"]["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert prelabel["build"]["dockerfile"] == "docker/Dockerfile"
    mounts = {v.split(":")[1] for v in prelabel["volumes"]}
    assert {prelabel["environment"]["MODEL_DIR"], prelabel["environment"]["HF_HOME"]} <= mounts
    assert studio["environment"]["ML_BLOCK_LOCAL_IP"] == "false"


def test_gpu_overlay_uses_the_cuda_image_and_reserves_a_gpu() -> None:
    prelabel = compose_config("compose.yml", "compose.gpu.yml")["services"]["prelabel"]
    assert prelabel["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    (device,) = prelabel["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert prelabel["environment"]["PRELABEL_DEVICE"] == "cuda"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_install_the_package_and_serve_it(name: str) -> None:
    text = (DOCKER / name).read_text()
    for source in ("pyproject.toml", "backend", "model_adapters"):
        assert re.search(rf"^COPY .*\b{source}\b", text, re.M), f"{name} does not copy {source}"
    assert 'pip install ".[all]"' in text
    assert 'CMD ["prelabel", "serve"]' in text
    assert "ENV " in text and "MODEL_DIR=/data/prelabel" in text and "HOST=0.0.0.0" in text
    pinned = re.findall(r'"torch==([\d.]+)"', text)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert all(f"torch>=2.6,<={version}" in pyproject for version in pinned)
