from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from model_adapters.base import AdapterError, AdapterLoadError, ModelSpec, Query, ResizeRule, Task
from model_adapters.dinov2 import Dinov2, EmbedderParams
from model_adapters.registry import UnknownAdapterError, resolve_adapter
from tests.helpers import image_array

# Tiny checkpoint (TINY_BUILDERS key = its model_type) -> the class AutoModel must pick, and its tokens before the
# patches (CLS, then registers).
KINDS = {
    "dinov2": ("Dinov2Model", 1),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", 5),
    "dinov3_vit": ("DINOv3ViTModel", 5),
    "dinov3_convnext": ("DINOv3ConvNextModel", 1),
}
# (H, W): ordinary, non-square, and 1, 3 or 4 px tall or wide (read as channels-first by a processor left to guess).
SHAPES = [(48, 64), (30, 40), (1, 37), (3, 50), (4, 29), (50, 1), (31, 3)]
REFUSAL = (
    "dinov2 has no text tower: it predicts only once the project has annotated examples; see extra_params.learning"
)


def load(tiny: Callable[[str], Path], kind: str, **spec: str) -> Dinov2:
    adapter = Dinov2(ModelSpec("dinov2", str(tiny(kind)), device="cpu", **spec))
    adapter.load()
    return adapter


@pytest.fixture(scope="module", params=list(KINDS))
def dino(request: pytest.FixtureRequest, tiny: Callable[[str], Path]) -> Dinov2:
    return load(tiny, request.param)


@pytest.fixture(scope="module")
def extractor(dino: Dinov2) -> Callable[[np.ndarray], np.ndarray]:
    """transformers' own path on the same weights: the feature-extraction pipeline on a PIL image, then the
    normalised ``[CLS, mean(patch tokens)]`` of its last hidden state, registers left out."""
    pipe = pipeline("image-feature-extraction", model=dino.spec.model_id)
    _, prefix = KINDS[dino.model.config.model_type]

    def features(image: np.ndarray) -> np.ndarray:
        tokens = pipe(Image.fromarray(image), return_tensors=True)
        embedding = torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=-1)
        return torch.nn.functional.normalize(embedding, dim=-1).numpy()

    return features


def test_the_config_picks_the_model_class(dino: Dinov2) -> None:
    model_class, prefix = KINDS[dino.model.config.model_type]
    assert type(dino.model).__name__ == model_class
    assert dino.prefix_tokens == prefix


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_embed_equals_the_feature_extraction_pipeline(
    dino: Dinov2, extractor: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int]
) -> None:
    image = image_array(shape[1], shape[0], seed=sum(shape))
    ours = dino.embed([image])
    assert ours.dtype == np.float32 and ours.shape == (1, 2 * 32)  # every tiny model is 32 wide
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ours, extractor(image), atol=1e-5)


def test_each_image_of_a_mixed_batch_embeds_as_alone(dino: Dinov2) -> None:
    images = [image_array(w, h, seed=i) for i, (h, w) in enumerate(SHAPES)]
    together = dino.embed(images)
    assert together.shape[0] == len(images)
    for image, row in zip(images, together, strict=True):
        np.testing.assert_allclose(row, dino.embed([image])[0], atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-3  # the tiny model does see the image


def test_a_lower_precision_model_still_embeds_float32_unit_vectors(tiny: Callable[[str], Path]) -> None:
    half = load(tiny, "dinov2", dtype="bfloat16")
    image = image_array(64, 48, seed=9)
    ours = half.embed([image])
    assert half.model.dtype == torch.bfloat16 and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, load(tiny, "dinov2").embed([image]), atol=0.05)


def test_the_resize_rule_is_the_processors(tiny: Callable[[str], Path]) -> None:
    assert load(tiny, "dinov2").resize_rule == ResizeRule(shortest=32)  # shorter side to 32, then a 32 px crop
    assert load(tiny, "dinov3_convnext").resize_rule == ResizeRule(shortest=64)  # resized to 64 x 64


def test_it_is_not_zero_shot_and_refuses_prompts(tiny: Callable[[str], Path]) -> None:
    adapter = load(tiny, "dinov2")
    assert Dinov2.zero_shot is False and Dinov2.task is Task.CLASSIFICATION
    query = Query(("a cat", "a dog"), EmbedderParams())
    with pytest.raises(AdapterError, match=re.escape(REFUSAL)):
        adapter([image_array(seed=1)], query)
    with pytest.raises(AdapterError, match=re.escape(REFUSAL)):
        adapter.postprocess(None, [image_array(seed=1)], query)


def test_a_checkpoint_of_another_family_is_refused_naming_both(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(
        AdapterLoadError,
        match="is a 'clip' model, not dinov2 or dinov2_with_registers or dinov3_vit or dinov3_convnext",
    ):
        load(tiny, "clip")


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("dinov2", "facebook/dinov2-small"),
        ("dinov2.small", "facebook/dinov2-small"),
        ("dinov2.giant", "facebook/dinov2-giant"),
        ("dinov2.base_reg", "facebook/dinov2-with-registers-base"),
        ("dinov2.v3_vits16", "facebook/dinov3-vits16-pretrain-lvd1689m"),
        ("dinov2.v3_vitl16_sat", "facebook/dinov3-vitl16-pretrain-sat493m"),
        ("dinov2.v3_convnext_tiny", "facebook/dinov3-convnext-tiny-pretrain-lvd1689m"),
    ],
)
def test_variants_resolve(name: str, model_id: str) -> None:
    assert resolve_adapter(name) == (Dinov2, model_id)


def test_an_unknown_variant_lists_the_family() -> None:
    with pytest.raises(UnknownAdapterError, match="dinov2 has: dinov2.small, dinov2.base"):
        resolve_adapter("dinov2.huge")
