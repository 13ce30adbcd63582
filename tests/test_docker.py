"""The Docker files: what compose wires, what the images install, what the README tells a new user.

The files are read with ``yaml.safe_load`` (``tests/compose_files.py``); a Compose tool (v2 or 1.29, which print
the same file differently) only checks that Compose accepts them and resolves them as these tests do.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from backend.settings import ServerSettings
from tests.compose_files import (
    DOCKER,
    ROOT,
    MissingVariableError,
    compose_command,
    interpolate,
    load,
    mounts,
    published,
    variables,
)

TOKEN = secrets.token_hex(20)
SECRETS = {"LABEL_STUDIO_API_KEY": TOKEN, "LABEL_STUDIO_PASSWORD": "a-password"}
CPU, GPU = ("compose.yml",), ("compose.yml", "compose.gpu.yml")
# Settings the stack decides itself, with the value prelabel gets (LS's service name and the volume paths).
FIXED = {
    "LABEL_STUDIO_URL": "http://label-studio:8080",
    "LABEL_STUDIO_API_KEY": TOKEN,
    "LOCAL_FILES_DOCUMENT_ROOT": "/label-studio/files",
    "MODEL_DIR": "/data/prelabel",
    "HF_HOME": "/data/huggingface",
}
IMAGE_ENV = {"HOST": "0.0.0.0", "PORT": "9090"}  # set by the Dockerfiles: compose publishes and probes port 9090


def service(name: str, files: tuple[str, ...] = CPU, env: dict[str, str] = SECRETS) -> dict:
    return interpolate(load(*files)["services"][name], env)


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}")
    return text[start : text.index("\n## ", start + 1)]


def readme_settings() -> dict[str, str]:
    """Variable -> default column, from the README's settings table."""
    found = {}
    for row in re.findall(r"^\| (`[A-Z].*?) \| (.*?) \|", readme_section("Server settings"), re.M):
        for name in re.findall(r"`([A-Z0-9_]+)`", row[0]):
            found[name] = row[1].strip("`")
    return found


# ----------------------------------------------------------------------------------------------- compose


def test_label_studio_is_pinned_and_both_services_publish_on_loopback_only() -> None:
    studio, prelabel = service("label-studio"), service("prelabel")
    assert studio["image"] == "heartexlabs/label-studio:1.23.2"
    assert published(studio["ports"]) == {8080: ("127.0.0.1", "8080")}
    assert published(prelabel["ports"]) == {9090: ("127.0.0.1", "9090")}
    for each in (studio, prelabel):
        assert each["restart"] == "unless-stopped"
        assert each["healthcheck"]["start_period"].endswith("s") and "/health" in " ".join(each["healthcheck"]["test"])


def test_one_token_is_label_studios_admin_token_and_prelabels_key() -> None:
    studio, prelabel = service("label-studio")["environment"], service("prelabel")["environment"]
    # label_studio/server.py creates the admin at start only when both USERNAME and PASSWORD are set, and gives it
    # USER_TOKEN; organizations/functions.py enables legacy tokens for its organization only with this flag.
    assert studio["LABEL_STUDIO_USERNAME"] and studio["LABEL_STUDIO_PASSWORD"] == "a-password"
    assert studio["LABEL_STUDIO_USER_TOKEN"] == prelabel["LABEL_STUDIO_API_KEY"] == TOKEN
    assert studio["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert prelabel["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert 8080 in published(service("label-studio")["ports"])  # the container port LABEL_STUDIO_URL names


def test_a_missing_token_stops_compose_with_a_command_that_makes_one() -> None:
    with pytest.raises(MissingVariableError) as missing:
        service("prelabel", env={"LABEL_STUDIO_PASSWORD": "x"})
    assert "LABEL_STUDIO_API_KEY" in str(missing.value) and "docker/.env" in str(missing.value)
    (command,) = re.findall(r"python3 -c '([^']+)'", str(missing.value))
    made = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"[0-9a-f]{40}\n", made)  # Label Studio's token column holds 40 characters


def test_label_studio_accepts_a_backend_on_the_private_compose_network() -> None:
    studio = service("label-studio")["environment"]
    # Both: the backend URL itself, and the webhook to <backend>/webhook that saving a backend creates
    # (tests/e2e/test_compose_environment.py runs Label Studio with this environment).
    assert studio["ML_BLOCK_LOCAL_IP"] == studio["SSRF_PROTECTION_ENABLED"] == "false"


@pytest.mark.parametrize("files", [CPU, GPU], ids=["cpu", "gpu"])
def test_predict_budget_stays_below_label_studios_timeout(files: tuple[str, ...]) -> None:
    timeout = float(service("label-studio", files)["environment"]["ML_TIMEOUT_PREDICT"])
    budget = float(service("prelabel", files)["environment"]["PRELABEL_PREDICT_BUDGET"])
    assert 15 <= timeout - budget <= 30
    assert (timeout > 100) == (files == CPU)  # raised for CPU forward passes, Label Studio's default on a GPU


def test_every_server_setting_of_the_readme_reaches_prelabel() -> None:
    settings = readme_settings()
    assert {"WORKERS", "BASIC_AUTH_PASS", "PRELABEL_WEBHOOK_SECRET", "HF_TOKEN", "LOG_LEVEL"} <= set(settings)
    raw = load(*CPU)["services"]["prelabel"]["environment"]
    resolved = service("prelabel")["environment"]
    for name in settings:
        if name in IMAGE_ENV:
            continue
        assert name in raw, f"compose does not pass {name}"
        if name in FIXED:
            assert resolved[name] == FIXED[name]
        else:  # passed through under its own name
            assert list(variables(raw[name])) == [name], raw[name]
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (DOCKER / dockerfile).read_text()
        assert all(f"{name}={value}" in text for name, value in IMAGE_ENV.items())


def test_passed_through_settings_keep_prelabels_defaults() -> None:
    """An unset variable reaches prelabel empty or as the README's default, which prelabel reads the same."""
    raw = load(*CPU)["services"]["prelabel"]["environment"]
    settings = readme_settings()
    defaults = {name: variables(raw[name])[name] for name in settings if name in raw and name not in FIXED}
    empty = [name for name, default in defaults.items() if default == ""]
    assert ServerSettings.from_env(dict.fromkeys(empty, "")) == ServerSettings.from_env({})
    for name in ("WORKERS", "THREADS", "GUNICORN_TIMEOUT"):  # read with int() by the CLI: never empty
        assert defaults[name] == settings[name]
    assert set(defaults) - set(empty) == {"WORKERS", "THREADS", "GUNICORN_TIMEOUT", "PRELABEL_PREDICT_BUDGET"}


def test_volumes_persist_state_and_mount_files_and_weights_read_only() -> None:
    prelabel, studio = service("prelabel"), service("label-studio")
    named = set(load(*CPU)["volumes"])
    found = mounts(prelabel["volumes"])
    assert found["/data/prelabel"] == ("prelabel-data", False) and found["/data/huggingface"] == ("model-cache", False)
    assert {found["/data/prelabel"][0], found["/data/huggingface"][0]} <= named
    assert found["/models"] == ("./models", True)
    assert found["/label-studio/files"] == ("./files", True)
    assert mounts(studio["volumes"])["/label-studio/data"] == ("label-studio-data", False)
    assert studio["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == "/label-studio/files"


def test_gpu_overlay_builds_its_own_image_and_reserves_a_gpu() -> None:
    cpu, gpu = service("prelabel"), service("prelabel", GPU)
    assert (cpu["image"], gpu["image"]) == ("prelabel:cpu", "prelabel:cuda")
    assert (cpu["build"]["dockerfile"], gpu["build"]["dockerfile"]) == ("docker/Dockerfile", "docker/Dockerfile.cuda")
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["PRELABEL_DEVICE"] == "cuda" and cpu["environment"]["PRELABEL_DEVICE"] == ""
    arguments = dockerfile_arguments("Dockerfile.cuda")
    assert gpu["build"]["args"] == {name: arguments[name] for name in gpu["build"]["args"]}
    assert gpu["build"]["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"


def test_mounts_and_ports_read_both_printed_forms() -> None:
    """docker-compose 1.29 prints short strings, Compose v2 mappings (both copied from their ``config`` output)."""
    v1 = ["prelabel-data:/data/prelabel:rw", "/repo/docker/files:/label-studio/files:ro"]
    v2 = [
        {"type": "volume", "source": "prelabel-data", "target": "/data/prelabel", "volume": {}},
        {"type": "bind", "source": "/repo/docker/files", "target": "/label-studio/files", "read_only": True},
    ]
    assert (
        mounts(v1)
        == mounts(v2)
        == {
            "/data/prelabel": ("prelabel-data", False),
            "/label-studio/files": ("/repo/docker/files", True),
        }
    )
    v2_port = {"mode": "ingress", "host_ip": "127.0.0.1", "target": 8080, "published": "8080", "protocol": "tcp"}
    assert published(["127.0.0.1:8080:8080/tcp"]) == published([v2_port]) == {8080: ("127.0.0.1", "8080")}
    assert published(["9090"]) == {9090: ("", "")}


# ----------------------------------------------------------------------------------------------- images


def dockerfile_arguments(name: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", (DOCKER / name).read_text(), re.M))


def instructions(name: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / name).read_text())
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dependencies_are_installed_before_the_sources_are_copied(name: str) -> None:
    steps = instructions(name)
    copies = [i for i, (op, args) in enumerate(steps) if op == "COPY"]
    sources = min(i for i in copies if re.search(r"\b(backend|model_adapters)\b", steps[i][1]))
    installs = [i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args]
    assert [steps[i][1] for i in installs if i > sources] == ["pip install --no-deps ."]
    before = " ".join(steps[i][1] for i in installs if i < sources)
    assert '"torch==${TORCH_VERSION}"' in before and "-r requirements.txt" in before
    assert "requirements.py pyproject.toml all" in before
    last_dependencies = max(i for i in installs if i < sources)  # only pyproject.toml can invalidate it
    assert {args for op, args in steps[:last_dependencies] if op == "COPY"} == {
        "pyproject.toml docker/requirements.py ./"
    }
    assert ("CMD", '["prelabel", "serve"]') in steps and ("USER", "prelabel") in steps


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_base_image_and_torch_are_pinned_within_pyproject(name: str) -> None:
    (base,) = [args for op, args in instructions(name) if op == "FROM"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    arguments = dockerfile_arguments(name)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f"torch>=2.6,<={arguments['TORCH_VERSION']}" in pyproject
    assert f"torchvision>=0.21,<={arguments['TORCHVISION_VERSION']}" in pyproject
    (healthcheck,) = [args for op, args in instructions(name) if op == "HEALTHCHECK"]
    assert "--start-period=" in healthcheck


def test_requirements_script_lists_what_pip_installs_for_an_extra() -> None:
    from packaging.requirements import Requirement

    from tests.isolated_site import project_requirements

    for extra in ("all", "hf", "test"):
        out = subprocess.run(
            [sys.executable, str(DOCKER / "requirements.py"), str(ROOT / "pyproject.toml"), extra],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        expected = {str(r) for r in project_requirements(ROOT / "pyproject.toml", [extra])}
        assert {str(Requirement(line)) for line in out.splitlines()} == expected


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a folder also covers what it holds."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/|\*|\?)", pattern.strip("/"))
        table = {"**/": "(.*/)?", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(p, re.escape(p)) for p in parts) + "(/.*)?")

    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if regex(pattern.lstrip("!")).fullmatch(path):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_only_what_the_images_copy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (".venv/lib/python3.11/site-packages/torch/__init__.py", ".venv-ls/bin/label-studio", ".git/HEAD"):
        assert dockerignored(path, patterns), path
    for path in (".cache/bench/model.safetensors", "tests/test_docker.py", "docker/files/a.jpg", "docker/.env"):
        assert dockerignored(path, patterns), path
    assert dockerignored("backend/__pycache__/app.cpython-311.pyc", patterns)
    for name in ("Dockerfile", "Dockerfile.cuda"):
        for op, args in instructions(name):
            if op == "COPY":
                for source in args.split()[:-1]:
                    assert not dockerignored(source, patterns), source
    assert not dockerignored("backend/app.py", patterns) and not dockerignored("model_adapters/base.py", patterns)


# ----------------------------------------------------------------------------------------------- README


def test_readme_setup_command_makes_an_env_file_compose_accepts(tmp_path: Path) -> None:
    """Run the README's first Docker command as a new user would, in a copy holding docker/.env.example."""
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", readme_section("Docker"), re.S) if ".env.example" in b]
    setup = "\n".join(line for line in block.splitlines() if not line.startswith("docker compose"))
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / ".env.example").write_text((DOCKER / ".env.example").read_text())
    subprocess.run(["bash", "-euo", "pipefail", "-c", setup], cwd=tmp_path, check=True)
    lines = (tmp_path / "docker" / ".env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert re.fullmatch(r"[0-9a-f]{40}", env["LABEL_STUDIO_API_KEY"]) and len(env["LABEL_STUDIO_PASSWORD"]) >= 16
    assert env["COMPOSE_PROJECT_NAME"] == "prelabel"
    assert service("prelabel", GPU, env)["environment"]["LABEL_STUDIO_API_KEY"] == env["LABEL_STUDIO_API_KEY"]


def test_readme_names_every_compose_command_file_and_image() -> None:
    section = readme_section("Docker")
    for needed in ("docker compose -f docker/compose.yml up", "-f docker/compose.gpu.yml", "prelabel:cpu"):
        assert needed in section
    assert "prelabel:cuda" in section and "http://prelabel:9090" in section and "R580" in section
    assert "Personal Access Token" in section and "LABEL_STUDIO_API_KEY" in section


# ----------------------------------------------------------------------------------------------- Compose itself


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[[tuple[str, ...], dict[str, str]], dict]:
    """``config`` of the given files by the installed Compose tool, with only ``env`` set (no docker/.env)."""
    command = compose_command()
    if command is None:
        pytest.fail("docker compose (or docker-compose) is needed to check docker/ (`make test` installs one)")
    empty = tmp_path / "empty.env"
    empty.write_text("")

    def run(files: tuple[str, ...], env: dict[str, str]) -> dict:
        args = [arg for name in files for arg in ("-f", str(DOCKER / name))]
        base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "COMPOSE_PROJECT_NAME": "prelabel"}
        out = subprocess.run(
            [*command, "--env-file", str(empty), *args, "config"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**base, **env},
        )
        config = yaml.safe_load(out.stdout) if out.returncode == 0 else None
        # Compose 2.40's `config` exits 0 after an interpolation error, printing nothing: require a config too.
        assert isinstance(config, dict) and "services" in config, out.stderr
        return config

    return run


@pytest.mark.parametrize("files", [CPU, GPU], ids=["cpu", "gpu"])
def test_compose_resolves_the_files_as_these_tests_do(files: tuple[str, ...], compose_config: Callable) -> None:
    config = compose_config(files, SECRETS)
    for name in ("label-studio", "prelabel"):
        ours, theirs = service(name, files), config["services"][name]
        assert mounts(theirs["volumes"]) == {
            target: (str((DOCKER / source).resolve()) if source.startswith(".") else source, ro)
            for target, (source, ro) in mounts(ours["volumes"]).items()
        }
        assert published(theirs["ports"]) == published(ours["ports"])
        assert {k: str(v) for k, v in theirs["environment"].items()} == ours["environment"]
        assert theirs["image"] == ours["image"]


def test_compose_refuses_to_start_without_the_token(compose_config: Callable) -> None:
    with pytest.raises(AssertionError, match=r"secrets\.token_hex\(20\)"):
        compose_config(CPU, {"LABEL_STUDIO_PASSWORD": "x"})
