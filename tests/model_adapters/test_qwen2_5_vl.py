from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from model_adapters.base import CLASS_NAME_DATA_FIELD, ModelSpec, Query, make_params
from model_adapters.qwen2_5_vl import QUESTION, Qwen25VL
from tests.helpers import image_array
from tests.model_adapters.forced import force, next_token_probs

PROMPTS = ("cat", "dog", "remote")
IMAGES = (image_array(80, 48, seed=1), image_array(31, 50, seed=2))  # landscape; small portrait (scaled up)
# The forced answer in pieces, so the tokens of each label and box are known by construction.
PIECES = (
    ("between", '```json\n[\n  {"bbox_2d": '),
    ("cat box", "[21, 14, 63, 56]"),
    ("between", ', "label": "'),
    ("cat label", "cat"),
    ("between", '"},\n  {"bbox_2d": '),
    ("dog box", "[0, 0, 84, 84]"),
    ("between", ', "label": "'),
    ("dog label", "two dogs"),
    ("rest", '"},\n  {"bbox_2d": [1, 2, 3, 4], "label": "tree"},\n  {"bbox_2d": [5, 6, 7, 8], "label": "cat'),
)
# By hand, from Qwen2.5-VL's resize rule (multiples of 28 px, 56² to 112² px here): 80 x 48 rounds to 84 x 56
# (4704 px, within budget); 31 x 50 rounds to 28 x 56 (1568 px, too few), so it is scaled up by
# sqrt(3136 / 1550) and rounded up: 56 x 84. Boxes are pixels of that input, scaled to the image and clipped.
EXPECTED = (
    [[21 * 80 / 84, 14 * 48 / 56, 63 * 80 / 84, 48], [0, 0, 80, 48]],
    [[21 * 31 / 56, 14 * 50 / 84, 31, 56 * 50 / 84], [0, 0, 31, 50]],
)


@pytest.fixture(scope="module")
def qwen(tiny: Callable[[str], Path]) -> Qwen25VL:
    adapter = Qwen25VL(ModelSpec("qwen2_5_vl", str(tiny("qwen2_5_vl")), device="cpu"))
    adapter.load()
    return adapter


def query(**params: object) -> Query:
    return Query(PROMPTS, make_params(Qwen25VL.Params, {"max_new_tokens": 120, **params}, owner="qwen2_5_vl"))


def answer_ids(qwen: Qwen25VL, pieces: tuple[tuple[str, str], ...]) -> tuple[list[int], list[str]]:
    tokenizer = qwen.processor.tokenizer
    ids, owner = [], []
    for name, text in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        owner += [name] * len(piece)
    return [*ids, tokenizer.convert_tokens_to_ids("<|im_end|>")], [*owner, "end"]


def teacher_forced(qwen: Qwen25VL, image: np.ndarray, ids: list[int]) -> tuple[list[float], list[int]]:
    """Each of ``ids``' probabilities after the question (one plain forward pass), and the processor's grid."""
    processor = AutoProcessor.from_pretrained(qwen.spec.model_id)
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION.format(
        names="cat, dog or remote")}]}]  # fmt: skip
    text = processor.apply_chat_template(turn, add_generation_prompt=True)
    inputs = processor(images=image, text=text, return_tensors="pt", input_data_format="channels_last")
    seq = torch.cat([inputs["input_ids"][0], torch.tensor(ids)])
    with torch.inference_mode():
        logits = qwen.model(
            input_ids=seq[None],
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.cat([inputs["mm_token_type_ids"][0], torch.zeros(len(ids), dtype=torch.long)])[
                None
            ],
        ).logits[0]
    return next_token_probs(logits, seq, inputs["input_ids"].shape[1]), inputs["image_grid_thw"][0].tolist()


def test_forced_json_boxes_map_back_by_hand_with_token_scores(qwen: Qwen25VL, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, owner = answer_ids(qwen, PIECES)
    force(monkeypatch, qwen.model, lambda: ids)
    got = [qwen([image], query())[0] for image in IMAGES]  # different input sizes: separate batches
    for image, det, expected, grid in zip(IMAGES, got, EXPECTED, ([1, 4, 6], [1, 6, 4]), strict=True):
        np.testing.assert_allclose(det.xyxy, expected, atol=1e-4)
        # "two dogs" -> dog; "tree" names no prompt; the last object is cut off (no closing brace): dropped.
        assert det.data[CLASS_NAME_DATA_FIELD].tolist() == ["cat", "dog"]
        probs, processor_grid = teacher_forced(qwen, image, ids)
        assert processor_grid == grid  # the resize by hand is the processor's (grid of 14 px patches)
        mean = [np.mean([p for p, o in zip(probs, owner, strict=True) if o in names])
                for names in ({"cat box", "cat label"}, {"dog box", "dog label"})]  # fmt: skip
        np.testing.assert_allclose(det.confidence, mean, rtol=1e-4)


def test_images_of_one_input_size_share_a_batch_and_answer_as_alone(
    qwen: Qwen25VL, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert qwen.batch_key((48, 80, 3)) == qwen.batch_key((50, 78, 3)) == (56, 84)
    assert qwen.batch_key((50, 31, 3)) != qwen.batch_key((48, 80, 3))
    ids, _ = answer_ids(qwen, PIECES)
    force(monkeypatch, qwen.model, lambda: ids)
    pair = [IMAGES[0], image_array(78, 50, seed=5)]
    together = qwen(pair, query())
    for image, det in zip(pair, together, strict=True):
        (alone,) = qwen([image], query())
        np.testing.assert_allclose(det.xyxy, alone.xyxy, atol=1e-4)
        np.testing.assert_allclose(det.confidence, alone.confidence, rtol=1e-4)


def test_unreadable_answers_give_no_regions(qwen: Qwen25VL, monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ('{"bbox_2d": [1, 2, 3], "label": "cat"}', '{"label": "cat"}', "a cat on a sofa", '[{"bbox_2d": [1,'):
        ids, _ = answer_ids(qwen, (("answer", text),))
        force(monkeypatch, qwen.model, lambda ids=ids: ids)
        (det,) = qwen([IMAGES[0]], query())
        assert det.xyxy.shape == (0, 4), text


def test_the_tiny_models_own_generations_are_scored_with_its_probabilities(qwen: Qwen25VL) -> None:
    raw = qwen.forward(qwen.preprocess([IMAGES[0]], query(max_new_tokens=6)))
    (answer,) = raw["answers"]
    probs, _ = teacher_forced(qwen, IMAGES[0], answer.ids)
    np.testing.assert_allclose(answer.probs, probs, rtol=1e-4)
