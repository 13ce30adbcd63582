from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from transformers import AutoProcessor, GroundingDinoForObjectDetection, pipeline

from model_adapters.base import AdapterLoadError, ModelSpec, Query, make_params
from model_adapters.grounding_dino import GroundingDino
from tests import references
from tests.helpers import image_array
from tests.references import PROMPTS, canonical

LABELS = ("a cat", "a remote", "dog")


@pytest.fixture(scope="module")
def gdino(tiny: Callable[[str], Path]) -> GroundingDino:
    adapter = GroundingDino(ModelSpec("grounding_dino", str(tiny("grounding_dino")), device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple[str, ...] = LABELS, **params: object) -> Query:
    return Query(prompts, make_params(GroundingDino.Params, params, owner="grounding_dino"))


def count_forwards(adapter: GroundingDino) -> list[int]:
    calls: list[int] = []
    adapter.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_per_prompt_mode_equals_the_transformers_pipeline(gdino: GroundingDino) -> None:
    image = image_array(64, 48, seed=1)
    detector = pipeline("zero-shot-object-detection", model=gdino.spec.model_id)
    reference = detector(Image.fromarray(image), candidate_labels=list(LABELS), threshold=0.2)
    ours = gdino([image], query(score_threshold=0.2, text_threshold=0.0, prompt_mode="per_prompt"))[0]
    assert len(ours) == len(reference) > 0
    order = np.argsort(-ours.confidence, kind="stable")
    got = [(LABELS[ours.class_id[i]], float(ours.confidence[i]), ours.xyxy[i]) for i in order]
    for ref, (label, score, box) in zip(reference, got, strict=True):
        assert label == ref["label"]
        assert score == pytest.approx(ref["score"], abs=1e-4)
        # the pipeline truncates boxes to ints; ours keep the sub-pixel values it started from
        assert [int(v) for v in box] == [ref["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]


def test_joint_mode_scores_and_boxes_equal_the_processor_post_processing(gdino: GroundingDino) -> None:
    image = image_array(64, 48, seed=2)
    processor = AutoProcessor.from_pretrained(gdino.spec.model_id)
    inputs = processor(images=Image.fromarray(image), text=[list(LABELS)], return_tensors="pt")
    with torch.inference_mode():
        outputs = gdino.model(**inputs)
    (reference,) = processor.post_process_grounded_object_detection(
        outputs, inputs.input_ids, threshold=0.2, text_threshold=0.0, target_sizes=[image.shape[:2]]
    )
    ours = gdino([image], query(score_threshold=0.2, text_threshold=0.0))[0]
    assert len(ours) == len(reference["scores"]) > 0
    np.testing.assert_allclose(ours.confidence, reference["scores"].numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.xyxy, reference["boxes"].numpy(), atol=1e-4)
    # each box goes to the prompt whose tokens hold its highest probability
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs.input_ids[0])
    spans = {0: [1, 2], 1: [4, 5], 2: [7]}  # [CLS] a cat . a remote . dog . [SEP]
    assert tokens == ["[CLS]", "a", "cat", ".", "a", "remote", ".", "dog", ".", "[SEP]"]
    keep = outputs.logits.sigmoid()[0].max(-1).values > 0.2
    probs = outputs.logits.sigmoid()[0][keep]
    expected = torch.stack([probs[:, idx].max(-1).values for idx in spans.values()], -1).argmax(-1)
    np.testing.assert_array_equal(ours.class_id, expected.numpy())


def test_joint_mode_is_one_forward_for_all_prompts(gdino: GroundingDino) -> None:
    calls = count_forwards(gdino)
    gdino([image_array()], query())
    assert len(calls) == 1
    gdino([image_array()], query(prompt_mode="per_prompt"))
    assert len(calls) == 1 + len(LABELS)


def test_prompts_beyond_the_caption_limit_are_split_into_fitting_chunks(gdino: GroundingDino) -> None:
    prompts = tuple(f"a photo of a cat {i}" for i in range(60))  # ~8 tokens each: > 256 in one caption
    captions = gdino._joint_captions(prompts)
    assert len(captions) == 2
    assert [i for ids, _ in captions for i in ids] == list(range(60))
    for _, caption in captions:
        assert len(gdino.processor.tokenizer(caption).input_ids) <= gdino.max_text_len
    calls = count_forwards(gdino)
    image = image_array()
    out = gdino([image], query(prompts, score_threshold=0.0, text_threshold=0.0))[0]
    assert len(calls) == 2
    assert set(out.class_id.tolist()) <= set(range(60)) and len(out) == 2 * gdino.model.config.num_queries
    processor = AutoProcessor.from_pretrained(gdino.spec.model_id)
    for ids, caption in captions:  # each chunk's boxes are the processor's for that caption, with its prompts' ids
        inputs = processor(images=image, text=caption, return_tensors="pt", input_data_format="channels_last")
        with torch.inference_mode():
            outputs = gdino.model(**inputs)
        (reference,) = processor.post_process_grounded_object_detection(
            outputs, inputs.input_ids, threshold=0.0, text_threshold=0.0, target_sizes=[image.shape[:2]]
        )
        mine = canonical(out[np.isin(out.class_id, ids)])
        theirs = canonical(sv.Detections(xyxy=reference["boxes"].numpy(), confidence=reference["scores"].numpy()))
        np.testing.assert_allclose(mine.confidence, theirs.confidence, atol=1e-5)
        np.testing.assert_allclose(mine.xyxy, theirs.xyxy, atol=1e-3)


@pytest.mark.parametrize("shape", [(48, 64), (96, 128), (24, 32), (40, 30), (50, 50), (1, 37), (400, 7)])
def test_batch_key_is_the_size_the_processor_resizes_to(gdino: GroundingDino, shape: tuple[int, int]) -> None:
    image = image_array(shape[1], shape[0])
    pixels = gdino.processor.image_processor(images=image, return_tensors="pt", input_data_format="channels_last")
    assert gdino.batch_key(image.shape) == tuple(pixels["pixel_values"].shape[-2:])


def test_images_resized_to_one_size_batch_as_they_answer_alone_and_others_would_not(gdino: GroundingDino) -> None:
    same = [image_array(64, 48, seed=0), image_array(128, 96, seed=1), image_array(32, 24, seed=2)]
    assert len({gdino.batch_key(image.shape) for image in same}) == 1
    alone = [gdino([image], query(score_threshold=0.1))[0] for image in same]
    for together, single in zip(gdino(same, query(score_threshold=0.1)), alone, strict=True):
        assert len(together) == len(single) > 0
        np.testing.assert_allclose(together.xyxy, single.xyxy, atol=1e-3)
        np.testing.assert_allclose(together.confidence, single.confidence, atol=1e-5)
        np.testing.assert_array_equal(together.class_id, single.class_id)
    # why the key exists: padded to another image's size, an image's boxes move
    mixed = gdino([same[0], image_array(30, 40, seed=3)], query(score_threshold=0.0, text_threshold=0.0))[0]
    (single,) = gdino([same[0]], query(score_threshold=0.0, text_threshold=0.0))
    assert not np.allclose(mixed.confidence, single.confidence, atol=1e-3)


def test_thresholds_filter_and_class_names_are_set(gdino: GroundingDino) -> None:
    loose = gdino([image_array()], query(score_threshold=0.0, text_threshold=0.0))[0]
    strict = gdino([image_array()], query(score_threshold=0.9, text_threshold=0.0))[0]
    assert len(loose) == gdino.model.config.num_queries and len(strict) < len(loose)
    assert (strict.confidence > 0.9).all()
    assert list(loose.data["class_name"]) == [LABELS[i] for i in loose.class_id]


def test_mm_grounding_dino_checkpoints_load_through_their_own_class(tiny: Callable[[str], Path]) -> None:
    adapter = GroundingDino(ModelSpec("grounding_dino", str(tiny("mm_grounding_dino")), device="cpu"))
    adapter.load()
    assert type(adapter.model).__name__ == "MMGroundingDinoForObjectDetection"
    image = image_array()
    (out,) = adapter([image], query(PROMPTS, score_threshold=0.0, text_threshold=0.0))
    expected = references.grounding_dino(adapter, image)
    assert len(out) == len(expected) > 0
    out, expected = canonical(out), canonical(expected)
    np.testing.assert_allclose(out.confidence, expected.confidence, atol=1e-5)
    np.testing.assert_allclose(out.xyxy, expected.xyxy, atol=1e-3)


def test_unloadable_ids_name_the_id_and_the_way_out(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="(?s)IDEA-Research/no-such-model.*HF_HUB_OFFLINE.*model_id"):
        GroundingDino(ModelSpec("grounding_dino", "IDEA-Research/no-such-model", device="cpu")).load()
    with pytest.raises(AdapterLoadError, match="'owlv2' model, not grounding-dino or mm-grounding-dino"):
        GroundingDino(ModelSpec("grounding_dino", str(tiny("owlv2")), device="cpu")).load()


def test_reduced_precision_runs_and_answers_in_float32(tiny: Callable[[str], Path]) -> None:
    adapter = GroundingDino(ModelSpec("grounding_dino", str(tiny("grounding_dino")), device="cpu", dtype="bfloat16"))
    adapter.load()
    assert adapter.model.dtype == torch.bfloat16
    image = image_array()
    (out,) = adapter([image], query(PROMPTS, score_threshold=0.0, text_threshold=0.0))
    assert out.xyxy.dtype == np.float32 and out.confidence.dtype == np.float32
    # the reference: transformers' own model loaded in bfloat16, fed the processor's pixels in bfloat16
    model = GroundingDinoForObjectDetection.from_pretrained(adapter.spec.model_id, dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(adapter.spec.model_id)
    inputs = processor(images=image, text=[list(PROMPTS)], return_tensors="pt", input_data_format="channels_last")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.inference_mode():
        outputs = model(**inputs)
    outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()  # answered in float32
    (reference,) = processor.post_process_grounded_object_detection(
        outputs, inputs.input_ids, threshold=0.0, text_threshold=0.0, target_sizes=[image.shape[:2]]
    )
    expected = sv.Detections(xyxy=reference["boxes"].numpy(), confidence=reference["scores"].numpy())
    assert len(out) == len(expected) > 0
    out, expected = canonical(out), canonical(expected)
    np.testing.assert_allclose(out.confidence, expected.confidence, atol=1e-5)
    np.testing.assert_allclose(out.xyxy, np.clip(expected.xyxy, 0, [64, 48, 64, 48]), atol=1e-3)
