"""The ALBEF adapter against the reference outputs of the original code (tests/fixtures/albef)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_adapters.albef import Albef, AlbefParams, _cached_path, albef_cache_dir, itm_rerank, pre_caption
from model_adapters.base import AdapterLoadError, ModelSpec, Query, SettingsError, make_params
from model_adapters.classification import CALIBRATION
from model_adapters.registry import resolve_adapter
from tests.helpers import LocalServer, image_array
from tests.tiny_models import build_albef

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "albef"
# Reference case -> (checkpoint file, reference image key).
CASES = {
    "pretrain_64": ("albef_tiny_pretrain.pth", "image_64"),
    "retrieval_96": ("albef_tiny_retrieval96.pth", "image_96"),
}
ATOL = 1e-5


def build_albef_checkpoint(dest: Path, case: str = "retrieval_96") -> Path:
    """Copy a tiny ALBEF checkpoint with its ``vocab.txt`` and BERT config into ``dest``; return the ``.pth``.

    ``str(...)`` of the result is a ``model_id`` for the ``albef`` adapter (same signature as the builders in
    ``tests/tiny_models.py``, so it can serve the registry sweep).
    """
    return build_albef(dest, CASES[case][0])


@pytest.fixture(scope="module")
def albef_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``model_id`` of the tiny retrieval-layout checkpoint (96 px), vocabulary beside it."""
    return str(build_albef_checkpoint(tmp_path_factory.mktemp("albef")))


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(FIX / "albef_tiny_reference.pt", map_location="cpu", weights_only=True)


def load(model_id: str | Path) -> Albef:
    adapter = Albef(ModelSpec("albef", str(model_id), device="cpu", dtype="float32"))
    adapter.load()
    return adapter


def run_reference(adapter: Albef, ref: dict, image_key: str, params: AlbefParams) -> tuple[dict, np.ndarray]:
    """``forward`` + ``postprocess`` on the reference pixels and texts; returns raw outputs and probabilities."""
    batch = {"pixel_values": ref[image_key], "prompts": tuple(ref["texts"]), "templates": params.templates}
    raw = adapter.forward({**batch, "itm_top_k": params.itm_top_k})
    images = [image_array(32, 24, i) for i in range(len(ref[image_key]))]
    answers = adapter.postprocess(raw, images, Query(tuple(ref["texts"]), params))
    return raw, np.stack([answer.confidence for answer in answers])


def test_module_imports_without_torch() -> None:
    code = (
        "import sys, model_adapters.albef; heavy = {'torch', 'timm', 'transformers'} & set(sys.modules); print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set()"


def test_registered_with_official_variants() -> None:
    cls, default = resolve_adapter("albef")
    assert cls is Albef and cls.task.value == "classification"
    assert default == "https://storage.googleapis.com/sfr-pcl-data-research/ALBEF/mscoco.pth"
    assert resolve_adapter("albef.pretrain_14m")[1].endswith("/ALBEF/ALBEF.pth")
    assert resolve_adapter("albef.pretrain_4m")[1].endswith("/ALBEF/ALBEF_4M.pth")
    assert resolve_adapter("albef.flickr30k")[1].endswith("/ALBEF/flickr30k.pth")


@pytest.mark.parametrize("case", sorted(CASES))
def test_itc_probabilities_match_reference(case: str, ref: dict, tmp_path: Path) -> None:
    image_key = CASES[case][1]
    adapter = load(build_albef_checkpoint(tmp_path, case))
    expected = ref[case]
    assert adapter.model.image_res == ref[image_key].shape[-1]
    texts = [pre_caption(t) for t in ref["texts"]]
    assert texts == ref["texts"]  # already clean: the reference token ids apply
    ids, mask = adapter.tokenizer(texts)
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    with torch.inference_mode():
        image_feat = adapter.encode_images({"pixel_values": ref[image_key]})
        text_feat = adapter.encode_texts(list(ref["texts"]))
    assert (image_feat - expected["image_feat"]).abs().max() < ATOL
    assert (text_feat - expected["text_feat"]).abs().max() < ATOL
    raw, probs = run_reference(adapter, ref, image_key, AlbefParams(templates=("{}",)))
    assert "itm_logits" not in raw
    assert (raw["logits"] - expected["logits_itc"]).abs().max() < 1e-4  # logits ~ 1/temp = 19 times cosines
    assert np.abs(probs - expected["probs_itc"].numpy()).max() < ATOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_itm_reranks_top_k_by_match_logit(case: str, ref: dict, tmp_path: Path) -> None:
    image_key = CASES[case][1]
    adapter = load(build_albef_checkpoint(tmp_path, case))
    expected, k = ref[case], 3
    raw, probs = run_reference(adapter, ref, image_key, AlbefParams(templates=("{}",), itm_top_k=k))
    top = expected["logits_itc"].topk(k, dim=-1).indices
    assert torch.equal(raw["itm_index"], top)
    match = expected["itm_logits"][..., 1].gather(1, top)
    assert (raw["itm_logits"] - match).abs().max() < ATOL
    # By hand: the top-k share their ITC mass by softmax of the match logits; the rest keep ITC.
    itc = expected["probs_itc"].numpy()
    for b in range(len(itc)):
        idx, logits = top[b].numpy(), match[b].numpy()
        want = itc[b].copy()
        want[idx] = itc[b, idx].sum() * np.exp(logits) / np.exp(logits).sum()
        assert np.abs(probs[b] - want).max() < ATOL
        assert abs(probs[b].sum() - 1) < 1e-5
        assert list(np.argsort(-probs[b][idx])) == list(np.argsort(-logits))  # ALBEF's retrieval order
        assert int(np.argmax(probs[b])) in idx
        rest = np.setdiff1d(np.arange(len(itc[b])), idx)
        assert np.abs(probs[b][rest] - itc[b][rest]).max() < ATOL


def test_itm_averages_template_match_logits(albef_checkpoint: str, ref: dict) -> None:
    adapter = load(albef_checkpoint)
    templates, k = ("{}", "a photo of {}"), 2
    raw, _ = run_reference(adapter, ref, "image_96", AlbefParams(templates=templates, itm_top_k=k))
    with torch.inference_mode():
        image_embeds, _ = adapter.model.encode_image(ref["image_96"])
        for b in range(len(image_embeds)):
            for slot, j in enumerate(raw["itm_index"][b].tolist()):
                ids, mask = adapter.tokenizer([t.format(ref["texts"][j]) for t in templates])
                match = adapter.model.itm_logits(image_embeds[b : b + 1].expand(2, -1, -1), ids, mask)[:, 1]
                assert abs(raw["itm_logits"][b, slot] - match.mean()) < ATOL


def test_itm_rerank_keeps_probabilities() -> None:
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    out = itm_rerank(probs, torch.tensor([[0, 1]]), torch.tensor([[0.0, 10.0]]))
    assert torch.allclose(out.sum(dim=1), torch.ones(1))
    assert out[0].argmax() == 1 and torch.allclose(out[0, 2:], probs[0, 2:])


def test_predicts_numpy_images_one_row_per_prompt(albef_checkpoint: str) -> None:
    adapter = load(albef_checkpoint)
    prompts = ("cat", "dog", "red car", "merlion")
    images = [image_array(64, 48, 0), image_array(40, 30, 1), image_array(120, 90, 2)]
    for settings in ({}, {"itm_top_k": 2}, {"itm_top_k": 10, "templates": ["a photo of a {}.", "{}"]}):
        params = make_params(Albef.Params, settings, owner="albef")
        answers = adapter(images, Query(prompts, params))
        assert len(answers) == len(images)
        for answer, image in zip(answers, images, strict=True):
            assert len(answer) == len(prompts) and answer.class_id.tolist() == [0, 1, 2, 3]
            assert answer.metadata[CALIBRATION] == "softmax"
            assert abs(float(answer.confidence.sum()) - 1) < 1e-5 and (answer.confidence >= 0).all()
            assert answer.xyxy.tolist()[0] == [0, 0, image.shape[1], image.shape[0]]


def test_prompts_are_cleaned_like_albef_captions() -> None:
    assert pre_caption("A photo of a Hot-Dog / Bun!") == "a photo of a hot dog bun"
    assert pre_caption("  it's (really) a cat.  ") == "its really a cat"


@pytest.mark.parametrize(("settings", "message"), [({"itm_top_k": -1}, ">= 0"), ({"itm_top_k": "3"}, "number")])
def test_bad_itm_top_k_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        make_params(Albef.Params, settings, owner="albef")


def test_non_albef_file_gives_clear_error(tmp_path: Path) -> None:
    vit = {"model": {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8)}}
    torch.save(vit, tmp_path / "vit.pth")
    with pytest.raises(AdapterLoadError, match=r"albef: .*vit\.pth is not an ALBEF checkpoint.*mscoco\.pth"):
        load(tmp_path / "vit.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(AdapterLoadError, match=r"could not read the checkpoint '.*notes\.pth'"):
        load(tmp_path / "notes.pth")
    with pytest.raises(AdapterLoadError, match=r"albef: no such file: .*missing\.pth\. .*or use an http\(s\) URL"):
        load(tmp_path / "missing.pth")
    with pytest.raises(AdapterLoadError, match=r"albef: checkpoint '.*' is not a file; model_id must be an ALBEF"):
        load(tmp_path)


def test_vocabulary_problems_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = build_albef_checkpoint(tmp_path / "big")
    with (checkpoint.parent / "vocab.txt").open("a") as vocab:
        vocab.write("".join(f"extra{i}\n" for i in range(10)))
    with pytest.raises(AdapterLoadError, match=r"vocab\.txt has 50 tokens but the checkpoint's text encoder 40"):
        load(checkpoint)
    checkpoint = build_albef_checkpoint(tmp_path / "none")
    (checkpoint.parent / "vocab.txt").unlink()
    monkeypatch.setattr("model_adapters.albef.DEFAULT_VOCAB", "prelabel-tests/no-such-vocab")  # not in any cache
    with pytest.raises(AdapterLoadError, match="could not load the prelabel-tests/no-such-vocab vocabulary.*next to"):
        load(checkpoint)


def test_url_offline_and_not_downloaded_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AdapterLoadError, match="not downloaded yet and HF_HUB_OFFLINE is set"):
        load("https://example.invalid/ALBEF/mscoco.pth")


def test_url_is_downloaded_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hits = []
    with LocalServer() as server:

        @server.app.get("/ALBEF/tiny.pth")
        def checkpoint() -> bytes:
            hits.append(1)
            return (FIX / "albef_tiny_retrieval96.pth").read_bytes()

        url = f"{server.url}/ALBEF/tiny.pth"
        cached = _cached_path(url)
        assert cached.parent.parent == albef_cache_dir() == tmp_path / "hf" / "prelabel" / "albef"
        cached.parent.mkdir(parents=True)
        for name in ("vocab.txt", "config_bert_small.json"):  # found beside the download, as beside a path
            shutil.copy(FIX / name, cached.parent / name)
        first = load(url)
        assert cached.is_file() and len(hits) == 1
        second = load(url)
    assert len(hits) == 1
    assert first.model.image_res == second.model.image_res == 96
