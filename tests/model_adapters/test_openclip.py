from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from model_adapters.base import AdapterLoadError, ModelSpec, Query
from model_adapters.classification import ClassifierParams
from model_adapters.openclip import OpenClip, parse_model_id
from tests.helpers import image_array
from tests.tiny_models import build_open_clip

LABELS = ("a cat", "a remote", "dog")
TEMPLATES = ("a photo of {}.",)
SIGMOID_NAME = "prelabel-tiny-ViT-sigmoid"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """``(model name, checkpoint file, folder)`` of the tiny open_clip model (registered with open_clip)."""
    folder = tmp_path_factory.mktemp("open_clip")
    name, checkpoint = build_open_clip(folder)
    return name, checkpoint, folder


@pytest.fixture(scope="module")
def sigmoid_checkpoint(built: tuple[str, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny config plus a learned logit bias (as open_clip's SigLIP models have), with random weights."""
    folder = tmp_path_factory.mktemp("open_clip_sigmoid")
    config = json.loads((built[2] / "model_configs" / f"{built[0]}.json").read_text())
    (folder / f"{SIGMOID_NAME}.json").write_text(json.dumps({**config, "init_logit_bias": -3.0}))
    open_clip.add_model_config(folder)
    torch.manual_seed(1)
    model = open_clip.create_model(SIGMOID_NAME, pretrained=None)
    checkpoint = folder / "sigmoid.pt"
    torch.save(model.state_dict(), checkpoint)
    return checkpoint


def load(model_id: str) -> OpenClip:
    adapter = OpenClip(ModelSpec("openclip", model_id, device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple[str, ...] = LABELS, templates: tuple[str, ...] = TEMPLATES) -> Query:
    return Query(prompts, ClassifierParams(templates=templates))


def by_hand(name: str, checkpoint: Path, images: list[np.ndarray], texts: list[str]) -> tuple[torch.Tensor, ...]:
    """``(cosine, logit_scale, logit_bias)`` from open_clip's own transform, tokenizer and encoders."""
    model, preprocess = open_clip.create_model_from_pretrained(name, str(checkpoint))
    tokenizer = open_clip.get_tokenizer(name)
    with torch.inference_mode():
        image = model.encode_image(torch.stack([preprocess(Image.fromarray(i)) for i in images]))
        text = model.encode_text(tokenizer(texts))
        image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
        bias = None if model.logit_bias is None else model.logit_bias.detach()
        return image @ text.T, model.logit_scale.exp(), bias


def test_equals_open_clip_by_hand(built: tuple[str, Path, Path]) -> None:
    name, checkpoint, _ = built
    images = [image_array(64, 48, seed=1), image_array(30, 50, seed=2)]
    cosine, scale, bias = by_hand(name, checkpoint, images, [TEMPLATES[0].format(label) for label in LABELS])
    assert bias is None
    answers = load(f"{name}:{checkpoint}")(images, query())
    np.testing.assert_allclose(np.stack([a.confidence for a in answers]), (scale * cosine).softmax(-1), atol=1e-6)
    assert all(a.metadata["calibration"] == "softmax" for a in answers)
    assert not np.allclose(answers[0].confidence, answers[1].confidence)


def test_a_local_dir_loads_the_same_model(built: tuple[str, Path, Path]) -> None:
    name, checkpoint, folder = built
    image = image_array(seed=3)
    (from_file,) = load(f"{name}:{checkpoint}")([image], query())
    for model_id in (f"local-dir:{folder}", str(folder)):
        (from_dir,) = load(model_id)([image], query())
        np.testing.assert_allclose(from_dir.confidence, from_file.confidence, atol=1e-6)


def test_a_bare_checkpoint_file_asks_for_the_architecture(built: tuple[str, Path, Path]) -> None:
    with pytest.raises(AdapterLoadError, match=f"is a file; name its architecture too, e.g. 'ViT-B-32:{built[1]}'"):
        load(str(built[1]))


def test_a_model_with_a_logit_bias_gets_sigmoid_probabilities(sigmoid_checkpoint: Path) -> None:
    images = [image_array(64, 48, seed=1), image_array(30, 50, seed=2)]
    cosine, scale, bias = by_hand(SIGMOID_NAME, sigmoid_checkpoint, images, [TEMPLATES[0].format(x) for x in LABELS])
    adapter = load(f"{SIGMOID_NAME}:{sigmoid_checkpoint}")
    assert adapter.calibration == "sigmoid"
    answers = adapter(images, query())
    np.testing.assert_allclose(np.stack([a.confidence for a in answers]), (scale * cosine + bias).sigmoid(), atol=1e-6)
    assert all(a.metadata["calibration"] == "sigmoid" for a in answers)


def test_batch_equals_single_images(built: tuple[str, Path, Path]) -> None:
    adapter = load(f"{built[0]}:{built[1]}")
    images = [image_array(64, 48, seed=s) for s in range(3)]
    for image, together in zip(images, adapter(images, query()), strict=True):
        (alone,) = adapter([image], query())
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-6)


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("ViT-B32/openai", r"unknown architecture 'ViT-B32' \(did you mean ViT-B-32.*architectures: .*EVA02-B-16"),
        ("ViT-B-32/nope", "unknown pretrained tag 'nope'.*ViT-B-32 has: ViT-B-32/openai, .*ViT-B-32/metaclip_400m"),
        ("ViT-B-32", "no pretrained tag in 'ViT-B-32'; ViT-B-32 has: ViT-B-32/openai"),
        ("ViT-B-32:/no/such/file.pt", "openclip: no such file: /no/such/file.pt. model_id paths are read on the"),
        ("/no/such/folder", "openclip: no such directory: /no/such/folder. model_id paths are read on the"),
        ("local-dir:/no/such/folder", "openclip: no such directory: /no/such/folder. model_id paths are read on the"),
        ("./no-such-folder", r"openclip: no such directory: no-such-folder. .*relative to its working directory"),
        ("ViT-B-32-quickgelu/metaclip_400m", "could not load .*HF_HUB_OFFLINE.*timm/vit_base_patch32_clip_224"),
    ],
)
def test_bad_ids_say_what_exists(model_id: str, message: str) -> None:
    with pytest.raises(AdapterLoadError, match=message):
        load(model_id)


def test_id_forms_parse_to_open_clip_arguments(built: tuple[str, Path, Path]) -> None:
    name, checkpoint, folder = built
    assert parse_model_id("PE-Core-B-16/meta") == ("PE-Core-B-16", "meta")
    assert parse_model_id(f"{name}:{checkpoint}") == (name, str(checkpoint))
    assert parse_model_id(f"local-dir:{folder}") == parse_model_id(str(folder)) == (f"local-dir:{folder}", None)
    assert parse_model_id("hf-hub:timm/ViT-B-16-SigLIP2") == ("hf-hub:timm/ViT-B-16-SigLIP2", None)


@pytest.mark.parametrize("variant", sorted(OpenClip.variants))
def test_variants_name_listed_weights_with_the_activation_they_were_trained_with(variant: str) -> None:
    name, tag = parse_model_id(OpenClip.variants[variant])
    assert (name, tag) in open_clip.list_pretrained()
    trained_quick_gelu = open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False)
    assert open_clip.get_model_config(name).get("quick_gelu", False) == trained_quick_gelu
