from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from model_adapters import sam3 as sam3_module
from model_adapters.base import CLASS_NAME_DATA_FIELD, AdapterLoadError, ModelSpec, Query, Task, make_params
from model_adapters.sam3 import Sam3
from tests.helpers import image_array

LABELS = ("a cat", "a dog person", "car")
THRESHOLD = 0.2  # random tiny weights score about 0.25


@pytest.fixture(scope="module")
def sam3(tiny: Callable[[str], Path]) -> Sam3:
    adapter = Sam3(ModelSpec("sam3", str(tiny("sam3")), device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple = LABELS, threshold: float = THRESHOLD) -> Query:
    return Query(prompts, make_params(Sam3.Params, {"score_threshold": threshold}, owner="sam3"))


def reference(sam3: Sam3, image: np.ndarray, label: str, threshold: float) -> dict:
    """Sam3Model + Sam3Processor called by hand on one prompt, then post_process_instance_segmentation."""
    processor = AutoProcessor.from_pretrained(sam3.spec.model_id)
    inputs = processor(images=image, text=label, return_tensors="pt")
    with torch.inference_mode():
        out = sam3.model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    return processor.post_process_instance_segmentation(
        out, threshold=threshold, mask_threshold=0.5, target_sizes=[image.shape[:2]]
    )[0]


def test_is_a_text_prompted_segmentation_adapter() -> None:
    assert Sam3.task is Task.SEGMENTATION and not getattr(Sam3, "promptable", False)  # no detector needed


@pytest.mark.parametrize("prompts_per_pass", [8, 2, 1])
def test_each_prompt_equals_the_model_and_post_processing_by_hand(
    sam3: Sam3, prompts_per_pass: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sam3_module, "_PROMPTS_PER_PASS", prompts_per_pass)
    image = image_array(80, 48, seed=1)
    (got,) = sam3([image], query())
    assert got.mask.shape[1:] == (48, 80) and got.mask.dtype == bool
    for index, label in enumerate(LABELS):
        ref = reference(sam3, image, label, THRESHOLD)
        mine = got[got.class_id == index]
        assert len(mine) == len(ref["scores"]) > 0
        assert int((mine.mask != ref["masks"].numpy().astype(bool)).sum()) == 0
        np.testing.assert_allclose(mine.confidence, ref["scores"].numpy(), atol=1e-5)
        assert ((mine.confidence >= 0) & (mine.confidence <= 1)).all()  # query probability times presence
        np.testing.assert_allclose(mine.xyxy, ref["boxes"].numpy(), atol=1e-4)
        assert set(mine.data[CLASS_NAME_DATA_FIELD]) == {label}


def test_one_image_embedding_serves_every_prompt_and_text_features_are_cached(sam3: Sam3) -> None:
    vision: list[int] = []
    text: list[int] = []
    vision_fn, text_fn = sam3.model.get_vision_features, sam3.model.get_text_features
    sam3.model.get_vision_features = lambda *a, **k: (vision.append(1), vision_fn(*a, **k))[1]  # type: ignore[method-assign]
    sam3.model.get_text_features = lambda *a, **k: (text.append(1), text_fn(*a, **k))[1]  # type: ignore[method-assign]
    try:
        sam3([image_array(seed=2), image_array(seed=3)], query(("tree", "house", "bird")))
        assert (len(vision), len(text)) == (2, 1)
        sam3([image_array(seed=2)], query(("tree", "house", "bird")))
        assert (len(vision), len(text)) == (3, 1)
    finally:
        del sam3.model.get_vision_features, sam3.model.get_text_features


def test_batch_equals_single_images(sam3: Sam3) -> None:
    images = [image_array(64, 48, seed=4), image_array(30, 50, seed=5)]
    for image, together in zip(images, sam3(images, query()), strict=True):
        (alone,) = sam3([image], query())
        assert len(together) == len(alone) > 0
        np.testing.assert_array_equal(together.mask, alone.mask)
        np.testing.assert_array_equal(together.class_id, alone.class_id)
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-5)


def test_threshold_filters_and_nothing_found_is_empty(sam3: Sam3) -> None:
    (none,) = sam3([image_array(seed=6)], query(threshold=0.99))
    assert len(none) == 0 and none.mask.shape == (0, 48, 64)
    (no_prompts,) = sam3([image_array(seed=6)], query(prompts=()))
    assert len(no_prompts) == 0


def test_wrong_family_is_named(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="'sam2' model, not sam3"):
        Sam3(ModelSpec("sam3", str(tiny("sam2")), device="cpu")).load()
