from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, OmDetTurboForObjectDetection

from model_adapters.base import ModelSpec, Query, make_params
from model_adapters.omdet_turbo import OmDetTurbo
from tests.helpers import image_array

LABELS = ["a cat", "a remote", "dog"]


@pytest.fixture(scope="module")
def omdet(tiny: Callable[[str], Path]) -> OmDetTurbo:
    adapter = OmDetTurbo(ModelSpec("omdet_turbo", str(tiny("omdet_turbo")), device="cpu"))
    adapter.load()
    return adapter


def test_equals_the_model_and_processor_post_processing_called_by_hand(omdet: OmDetTurbo) -> None:
    images = [image_array(64, 48, seed=1), image_array(40, 60, seed=2)]
    query = Query(tuple(LABELS), make_params(OmDetTurbo.Params, {"score_threshold": 0.2}, owner="omdet"))
    answers = omdet(images, query)
    processor = AutoProcessor.from_pretrained(omdet.spec.model_id)
    model = OmDetTurboForObjectDetection.from_pretrained(omdet.spec.model_id)
    for image, ours in zip(images, answers, strict=True):
        inputs = processor(images=Image.fromarray(image), text=[LABELS], return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        (ref,) = processor.post_process_grounded_object_detection(
            outputs, text_labels=[LABELS], threshold=0.2, nms_threshold=1.0, target_sizes=[image.shape[:2]]
        )
        assert len(ours) == len(ref["scores"]) > 0
        order, ref_order = (
            np.argsort(-ours.confidence, kind="stable"),
            np.argsort(-ref["scores"].numpy(), kind="stable"),
        )
        np.testing.assert_allclose(ours.confidence[order], ref["scores"].numpy()[ref_order], atol=1e-5)
        np.testing.assert_allclose(ours.xyxy[order], ref["boxes"].numpy()[ref_order], atol=1e-4)
        np.testing.assert_array_equal(ours.class_id[order], ref["labels"].numpy()[ref_order])
        assert list(ours.data["class_name"]) == [LABELS[i] for i in ours.class_id]
