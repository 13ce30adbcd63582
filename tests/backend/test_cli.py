from __future__ import annotations

import pytest

from backend.app import create_app
from backend.cli import main
from backend.settings import ServerSettings, SettingsError
from model_adapters.segmentation import PromptableSegmenter
from tests.fakes import FakeSegmenter  # noqa: F401  (registers the fakes)


def test_adapters_lists_every_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapters"]) == 0
    names = capsys.readouterr().out.split()
    assert {"grounding_dino", "owlv2.large", "clip", "siglip2", "sam", "sam3", "albef.mscoco"} <= set(names)


def test_serve_refuses_bad_settings_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRELABEL_MEDIA_TIMEOUT", "soon")
    assert main(["serve", "--port", "0"]) == 2
    assert "PRELABEL_MEDIA_TIMEOUT must be a number like 30.0, got 'soon'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL must start with http"),
        ({"BASIC_AUTH_USER": "u"}, "set both BASIC_AUTH_USER and BASIC_AUTH_PASS"),
        ({"PRELABEL_DEFAULTS": "{bad"}, "PRELABEL_DEFAULTS must be JSON"),
        ({"PRELABEL_PRELOAD": "maybe"}, "PRELABEL_PRELOAD must be a whole number like 3"),
        ({"PRELABEL_MAX_BODY_MB": "1.5"}, "PRELABEL_MAX_BODY_MB must be a number like 64"),
        ({"PRELABEL_PREDICT_BUDGET": "0"}, "PRELABEL_PREDICT_BUDGET must be positive"),
        ({"LOCAL_FILES_DOCUMENT_ROOT": "/no/such/dir"}, "must be an existing directory"),
        ({"PRELABEL_EMBEDDING_CACHE_ITEMS": "0"}, "must be positive"),
    ],
)
def test_settings_errors(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        ServerSettings.from_env(env)


def test_embedding_cache_bounds_reach_the_segmenters(tmp_path) -> None:
    settings = ServerSettings.from_env({"MODEL_DIR": str(tmp_path), "PRELABEL_PRELOAD": "false",
                                        "PRELABEL_EMBEDDING_CACHE_ITEMS": "3", "PRELABEL_EMBEDDING_CACHE_MB": "5"})  # fmt: skip
    service = create_app(settings).extensions["prelabel"]
    from model_adapters.base import ModelSpec

    spec = ModelSpec("fake_segmenter", "fake/segmenter")
    segmenter = service.pool.get(spec, timeout=10)
    assert isinstance(segmenter, PromptableSegmenter)
    assert (segmenter.embeddings.max_items, segmenter.embeddings.max_bytes) == (3, 5 << 20)


@pytest.mark.parametrize(
    "env",
    [{"PRELABEL_DEVICE": "cuda"}, {"PRELABEL_DEFAULTS": '{"detection": {"device": "cuda:1"}}'}],
)
def test_serve_stops_at_startup_when_a_gpu_it_is_told_to_use_is_unusable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal needs one that is missing")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--port", "0"]) == 2  # before gunicorn starts: a container exits instead of 503-ing
    err = capsys.readouterr().err
    assert "was asked for but CUDA is not available here" in err and "driver >= 580" in err


@pytest.mark.parametrize(
    ("built", "capability", "runs"),
    [
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], (7, 0), False),  # V100 on the CUDA 13 wheel
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], (6, 1), False),  # GTX 10xx
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], (8, 9), True),  # sm_86 binaries run on 8.9
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], (9, 0), True),
        (["sm_80"], (9, 0), False),  # another generation: not binary compatible
        (["sm_80", "compute_80"], (9, 0), True),  # PTX is compiled for newer GPUs
    ],
)
def test_which_gpus_a_torch_build_runs_on(built: list[str], capability: tuple[int, int], runs: bool) -> None:
    from model_adapters.torch_utils import _runs_on

    assert _runs_on(built, *capability) is runs
