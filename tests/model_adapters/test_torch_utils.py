from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from model_adapters.base import AdapterLoadError, ModelSpec
from model_adapters.grounding_dino import GroundingDino
from model_adapters.torch_utils import local_path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding ``models/`` (and nothing named like a hub organisation)."""
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("model_id", "is_path"),
    [
        ("/models/gdino", True),
        ("./gdino", True),
        ("../gdino", True),
        ("~/gdino", True),
        ("models/gdino", True),  # its parent directory exists here
        ("a/b/c", True),  # hub ids have one slash
        ("models", True),  # exists
        ("IDEA-Research/grounding-dino-tiny", False),
        ("org/name", False),
        ("gdino", False),
    ],
)
def test_which_ids_are_clearly_paths(workdir: Path, model_id: str, is_path: bool) -> None:
    assert (local_path(model_id) is not None) == is_path


def load(model_id: str) -> None:
    GroundingDino(ModelSpec("grounding_dino", model_id, device="cpu")).load()


@pytest.mark.parametrize(
    ("model_id", "shown"),
    [
        ("/no/such/gdino", "/no/such/gdino"),
        ("./gdino", "gdino"),
        ("../gdino", "../gdino"),
        ("~/no-such-prelabel-model", os.path.expanduser("~/no-such-prelabel-model")),
        ("models/gdino", "models/gdino"),
        ("a/b/c", "a/b/c"),
    ],
)
def test_a_path_that_does_not_exist_says_so_not_how_to_download_it(workdir: Path, model_id: str, shown: str) -> None:
    with pytest.raises(AdapterLoadError) as error:
        load(model_id)
    message = str(error.value)
    assert message.startswith(f"grounding_dino: no such directory: {shown}. model_id paths are read on the prelabel")
    assert ("relative to its working directory" in message) == (not os.path.isabs(shown))
    assert "hf download" not in message and "hub id such as 'org/name'" in message


def test_an_org_name_id_stays_a_hub_id(workdir: Path) -> None:
    with pytest.raises(AdapterLoadError, match="(?s)'org/name' as a Hugging Face hub id.*HF_HUB_OFFLINE.*hf download"):
        load("org/name")


def test_a_file_is_not_a_model_directory(workdir: Path) -> None:
    (workdir / "models" / "config.json").write_text("{}")
    with pytest.raises(AdapterLoadError, match=r"models/config.json is a file; model_id must be the model's directory"):
        load("models/config.json")


def test_a_relative_or_home_path_that_exists_loads(
    workdir: Path, tiny: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "models" / "gdino").symlink_to(tiny("grounding_dino"))
    load("./models/gdino")
    load("models/gdino")
    monkeypatch.setenv("HOME", str(workdir))
    load("~/models/gdino")


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("grounding_dino", (96, 128)),  # the tiny processor: shortest_edge 96, longest_edge 128
        ("clip", (32, None)),  # shortest_edge 32, then a crop
        ("owlv2", (64, None)),  # a fixed 64x64 resize
        ("openclip", (32, None)),  # torchvision Resize(32) + CenterCrop
        ("fastvit", None),  # filled in below from timm's own data config
        ("sam", (None, 4096)),  # segmenters: masks keep the input's size, capped only on huge images
    ],
)
def test_each_adapter_says_how_far_its_preprocessing_shrinks_images(family: str, expected, tiny) -> None:
    from model_adapters.base import ModelSpec
    from model_adapters.registry import resolve_adapter

    cls, _ = resolve_adapter(family)
    adapter = cls(ModelSpec(family, str(tiny(family)), device="cpu"))
    adapter.load()
    rule = adapter.resize_rule
    if family == "fastvit":
        from timm.data import resolve_data_config

        config = resolve_data_config(model=adapter.model)
        expected = (int(config["input_size"][-1] / config["crop_pct"]), None)  # timm resizes to size / crop_pct
    if expected is None:
        assert rule is None
    else:
        assert (rule.shortest, rule.longest) == expected
