from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from model_adapters.base import AdapterLoadError, ModelSpec, Query
from model_adapters.classification import ClassifierParams
from model_adapters.fastvit import FastVit, imagenet_class_index
from tests.helpers import image_array
from tests.tiny_models import FASTVIT_NAME, build_fastvit

# ImageNet-1k indices: 281 tabby, 282 tiger cat, 134 crane (bird), 517 crane (machine).
PROMPTS = ("tabby", "Tiger Cat", "crane", "cat", "n02123045")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random fastvit_t8 weights with a 1000x head, so the softmax is peaked (random features are ~0.01)."""
    folder = tmp_path_factory.mktemp("fastvit")
    state = load_file(str(build_fastvit(folder)))
    state["head.fc.weight"] = state["head.fc.weight"] * 1000
    path = folder / "fastvit_t8_peaked.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def fastvit(checkpoint: Path) -> FastVit:
    adapter = FastVit(ModelSpec("fastvit", f"{FASTVIT_NAME}:{checkpoint}", device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple[str, ...] = PROMPTS) -> Query:
    return Query(prompts, ClassifierParams())


def timm_probabilities(checkpoint: Path, images: list[np.ndarray]) -> np.ndarray:
    """Softmax of timm's own (not re-parameterised) model on timm's eval transform."""
    model = timm.create_model(FASTVIT_NAME, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.inference_mode():
        return model(torch.stack([transform(Image.fromarray(i)) for i in images])).softmax(dim=-1).numpy()


def test_matched_prompts_get_the_summed_softmax_of_timms_forward(fastvit: FastVit, checkpoint: Path) -> None:
    images = [image_array(64, 48, seed=1), image_array(300, 200, seed=2)]
    expected = timm_probabilities(checkpoint, images)
    assert expected.max() > 0.1  # peaked enough that a wrong class or preprocessing would show
    answers = fastvit(images, query())
    for probs, ours in zip(expected, answers, strict=True):
        want = [probs[281], probs[282], probs[134] + probs[517], 0.0, probs[281]]
        np.testing.assert_allclose(ours.confidence, want, rtol=1e-4, atol=1e-7)
        assert ours.metadata["calibration"] == "softmax"
        assert list(ours.data["class_name"]) == list(PROMPTS)
    assert not np.allclose(answers[0].confidence, answers[1].confidence)


def test_the_model_is_reparameterised_for_inference(fastvit: FastVit) -> None:
    branched = [m for m in fastvit.model.modules() if hasattr(m, "reparam_conv")]
    assert branched and all(m.reparam_conv is not None for m in branched)  # every multi-branch block fused


def test_unmatched_prompts_are_logged_once(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    adapter = FastVit(ModelSpec("fastvit", f"{FASTVIT_NAME}:{checkpoint}", device="cpu"))
    adapter.load()
    with caplog.at_level(logging.WARNING, logger="model_adapters.fastvit"):
        adapter([image_array(seed=3)], query(("cat", "tabby")))
        adapter([image_array(seed=4)], query(("cat", "tabby")))
        adapter([image_array(seed=5)], query(("tabby", "cat", "kitten")))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "'cat' names no ImageNet-1k class" in warned[0] and "'kitten'" in warned[1]


def test_batch_equals_single_images(fastvit: FastVit) -> None:
    images = [image_array(64, 48, seed=s) for s in range(3)]
    for image, together in zip(images, fastvit(images, query()), strict=True):
        (alone,) = fastvit([image], query())
        np.testing.assert_allclose(together.confidence, alone.confidence, rtol=1e-4, atol=1e-7)


def test_class_index_holds_every_lemma_and_synset() -> None:
    index = imagenet_class_index()
    assert index["tabby"] == [281] and index["tabby cat"] == [281] and index["n02123045"] == [281]
    assert index["crane"] == [134, 517]
    assert index["great white shark"] == index["carcharodon carcharias"] == [2]
    assert len({i for classes in index.values() for i in classes}) == 1000


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("fastvitt8", "unknown timm model 'fastvitt8'; FastViT ImageNet-1k weights: .*fastvit_t8.apple_in1k"),
        ("fastvit_t8.bogus", "unknown weights tag 'bogus' for fastvit_t8; it has: .*fastvit_t8.apple_in1k"),
        ("fastvit_t8:/no/such/file.safetensors", "fastvit: no such file: /no/such/file.safetensors. model_id paths"),
        ("/no/such/folder", "fastvit: no such directory: /no/such/folder. model_id paths are read on the"),
        ("local-dir:/no/such/folder", "fastvit: no such directory: /no/such/folder. model_id paths are read on the"),
        ("../no-such-folder", r"fastvit: no such directory: ../no-such-folder. .*relative to its working directory"),
        ("fastvit_t8.apple_in1k", "could not load .*HF_HUB_OFFLINE.*hf download timm/fastvit_t8.apple_in1k"),
    ],
)
def test_bad_ids_say_what_to_do(model_id: str, message: str) -> None:
    with pytest.raises(AdapterLoadError, match=message):
        FastVit(ModelSpec("fastvit", model_id, device="cpu")).load()


def test_a_bare_file_asks_for_the_architecture(checkpoint: Path) -> None:
    with pytest.raises(AdapterLoadError, match=f"is a file; name its architecture too, e.g. 'fastvit_t8:{checkpoint}'"):
        FastVit(ModelSpec("fastvit", str(checkpoint), device="cpu")).load()


def test_a_folder_in_timms_layout_loads_the_same_model(
    fastvit: FastVit, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("fastvit_folder")
    model = timm.create_model(FASTVIT_NAME, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)})
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)  # config.json + model.safetensors
    image = image_array(seed=6)
    (expected,) = fastvit([image], query())
    for model_id in (str(folder), f"local-dir:{folder}"):
        adapter = FastVit(ModelSpec("fastvit", model_id, device="cpu"))
        adapter.load()
        (ours,) = adapter([image], query())
        np.testing.assert_allclose(ours.confidence, expected.confidence, rtol=1e-5, atol=1e-8)
