"""Each model family loads from the extra a user installs, without the test extra's packages.

The rest of the suite runs with ``.[test]``, which installs more than any user extra: a family that needs a package
only the test extra brings (SigLIP's sentencepiece and protobuf were) passes every other test and still answers 503
after ``make serve`` or in the Docker images. Here a subprocess sees only a site directory linked from the
dependency closure of one extra (see ``tests/isolated_site.py``) and loads the tiny models built by this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from model_adapters.registry import available_adapters, resolve_adapter
from tests.isolated_site import dependency_closure, link_site, project_requirements
from tests.load_families import REPORT_PREFIX

ROOT = Path(__file__).resolve().parents[1]

# The extra that serves each family, as the README's install table says. A new adapter must add a line.
EXTRA_FOR = {
    "grounding_dino": "hf",
    "owlvit": "hf",
    "owlv2": "hf",
    "omdet_turbo": "hf",
    "kosmos2": "hf",
    "florence2": "hf",
    "florence2_seg": "hf",
    "llava": "hf",
    "qwen2_5_vl": "hf",
    "detic": "hf",
    "codet": "hf",
    "clip": "hf",
    "altclip": "hf",
    "siglip": "hf",
    "siglip2": "hf",
    "blip": "hf",
    "sam": "hf",
    "sam2": "hf",
    "sam3": "hf",
    "dinov2": "hf",
    "openclip": "openclip",
    "vlpart": "openclip",
    "fastvit": "timm",
    "albef": "timm",
    "segment_anything": "sam1",
    "roboflow": "roboflow",
}
# Families that call a hosted API: no weights to load, so they are served end to end instead (without torch).
HTTP_ONLY = frozenset({"roboflow"})


EXTRAS = ("all", "hf", "openclip", "timm", "sam1")


def families_of(extra: str) -> list[str]:
    """The model families ``.[extra]`` must load: its own, or every one for ``all``."""
    families = EXTRA_FOR if extra == "all" else {f: e for f, e in EXTRA_FOR.items() if e == extra}
    return sorted(set(families) - HTTP_ONLY)


def start_isolated(extra: str, models: dict[str, Path], workdir: Path) -> subprocess.Popen[str]:
    """Start loading ``models`` in ``python -I -S`` with only the closure of ``.[extra]`` importable."""
    site = workdir / "site"
    link_site(dependency_closure(project_requirements(ROOT / "pyproject.toml", [extra])).values(), site)
    spec = {"site": str(site), "root": str(ROOT), "models": {family: str(path) for family, path in models.items()}}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "HF_HOME": str(workdir / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",  # the children run side by side; tiny models gain nothing from threads
    }
    command = [sys.executable, "-I", "-S", str(ROOT / "tests" / "load_families.py"), json.dumps(spec)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=workdir)


def read_report(child: subprocess.Popen[str]) -> dict:
    """The child's JSON report (its last ``REPORT`` line); fails with its stderr when there is none."""
    stdout, stderr = child.communicate(timeout=300)
    reports = [line for line in stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    assert child.returncode == 0 and reports, stderr[-4000:]
    return json.loads(reports[-1].removeprefix(REPORT_PREFIX))


@pytest.fixture(scope="module")
def reports(tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """extra -> the child's report; the children run side by side (each spends seconds importing torch)."""
    children = {}
    for extra in EXTRAS:
        models = {family: tiny(family) for family in families_of(extra)}
        children[extra] = start_isolated(extra, models, tmp_path_factory.mktemp(f"extra-{extra}"))
    return {extra: read_report(child) for extra, child in children.items()}


def closure_names(*extras: str) -> set[str]:
    return set(dependency_closure(project_requirements(ROOT / "pyproject.toml", extras)))


def test_closure_follows_extras_and_markers() -> None:
    base, hf, test = closure_names(), closure_names("hf"), closure_names("test")
    assert "flask" in base and "torch" not in base
    assert {"torch", "transformers", "sentencepiece", "protobuf"} <= hf and "pytest" not in hf
    assert {"pytest", "hypothesis", "timm", "open-clip-torch", "segment-anything"} <= test
    assert dependency_closure([Requirement('flask; python_version < "3"')]) == {}


def test_every_family_names_its_extra() -> None:
    families = {  # the shipped families (other tests register fakes from their own modules)
        name
        for name in available_adapters()
        if "." not in name and resolve_adapter(name)[0].__module__.startswith("model_adapters.")
    }
    assert set(EXTRA_FOR) == families
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRA_FOR.values()) <= set(extras)


def test_readme_install_table_matches() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| extra | model families |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", table, re.M)
    documented = {family: extra for extra, cell in rows for family in re.findall(r"`(\w+)`", cell)}
    assert documented == EXTRA_FOR


@pytest.mark.parametrize("extra", EXTRAS)
def test_families_load_from_their_extra_alone(extra: str, reports: dict[str, dict]) -> None:
    report = reports[extra]
    # The child saw only the linked site (and the repository): no test-extra package, torch from the site.
    assert report["leaked"] == []
    assert Path(report["torch_file"]).parts[-3:] == ("site", "torch", "__init__.py")
    assert not [p for p in report["sys_path"] if Path(p).name in ("site-packages", "dist-packages")]
    failed = {family: result for family, result in report["results"].items() if not result.startswith("ok")}
    assert failed == {}
    assert sorted(report["results"]) == families_of(extra)


def test_roboflow_serves_from_its_extra_without_torch(tmp_path: Path) -> None:
    """``.[roboflow]`` alone (no torch in its closure) sets up a project and predicts boxes through the app."""
    site = tmp_path / "site"
    link_site(dependency_closure(project_requirements(ROOT / "pyproject.toml", ["roboflow"])).values(), site)
    spec = {"site": str(site), "root": str(ROOT), "model_dir": str(tmp_path / "models")}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    command = [sys.executable, "-I", "-S", str(ROOT / "tests" / "serve_without_torch.py"), json.dumps(spec)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    report = read_report(child)
    assert not report["torch_importable"] and not report["torch_imported"]
    assert not [p for p in report["sys_path"] if Path(p).name in ("site-packages", "dist-packages")]
    assert report["setup"] == 200
    ((region,),) = [entry["result"] for entry in report["results"]]
    assert region["value"]["rectanglelabels"] == ["Helmet"] and round(region["value"]["x"], 4) == 23.4375
