from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, LlavaImageProcessor

from model_adapters.base import CLASS_NAME_DATA_FIELD, ModelSpec, Query, make_params
from model_adapters.classification import CALIBRATION
from model_adapters.llava import CHOICE_QUESTION, LIST_QUESTION, PROMPT_QUESTION, Llava
from tests.helpers import image_array
from tests.model_adapters.forced import force, next_token_probs
from tests.model_adapters.test_kosmos2 import frame_by_hand

PROMPTS = ("cat", "dog", "remote")
NAMES = "cat, dog or remote"
IMAGES = (image_array(80, 48, seed=1), image_array(31, 50, seed=2))  # landscape; portrait with an odd padding
# The forced answer in pieces, so the tokens of each phrase and box are known by construction.
PIECES = (
    ("cat phrase", "cat"),
    ("between", ": "),
    ("cat box", "[0.25, 0.5, 0.75, 1.0]"),
    ("between", "\n2. "),
    ("dog phrase", "Dogs"),
    ("between", ": "),
    ("dog box 1", "[0, 0, 1, 1]"),
    ("between", ", "),
    ("dog box 2", "[0.1, 0.2, 0.3, 0.4]"),
    ("rest", "\ntree: [0.1, 0.1, 0.2, 0.2]\nremote: [10, 20, 30, 40]"),
)
# By hand. 80 x 48 sits in an 80 px square 16 px down: fractions f map to (80 fx, 80 fy - 16). 31 x 50 sits in a
# 50 px square (50 - 31) // 2 = 9 px right: (50 fx - 9, 50 fy). Then clipped to the image.
EXPECTED = (
    [[20, 24, 60, 48], [0, 0, 80, 48], [8, 0, 24, 16]],
    [[3.5, 25, 28.5, 50], [0, 0, 31, 50], [0, 10, 6, 20]],
)


@pytest.fixture(scope="module")
def llava(tiny: Callable[[str], Path]) -> Llava:
    adapter = Llava(ModelSpec("llava", str(tiny("llava")), device="cpu"))
    adapter.load()
    return adapter


def query(**params: object) -> Query:
    return Query(PROMPTS, make_params(Llava.Params, {"max_new_tokens": 90, **params}, owner="llava"))


def answer_ids(llava: Llava, *texts: str) -> tuple[list[int], list[int]]:
    """Token ids of the texts one after the other, then end-of-sequence; and each token's text index."""
    tokenizer = llava.processor.tokenizer
    ids, owner = [], []
    for i, text in enumerate(texts):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        owner += [i] * len(piece)
    return [*ids, tokenizer.eos_token_id], [*owner, -1]


def padding_processor(llava: Llava) -> object:
    """The checkpoint's processor with transformers' own padding image processor in place of the adapter's."""
    processor = AutoProcessor.from_pretrained(llava.spec.model_id)
    ip = processor.image_processor
    processor.image_processor = LlavaImageProcessor(
        do_pad=True, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=ip.image_mean
    )
    return processor


def prompt_of(processor: object, question: str) -> str:
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(turn, add_generation_prompt=True)


def teacher_forced(llava: Llava, image: np.ndarray, question: str, ids: list[int]) -> list[float]:
    """Each of ``ids``' probabilities after the question, from one plain forward pass over the whole sequence."""
    processor = padding_processor(llava)
    inputs = processor(
        images=image, text=prompt_of(processor, question), return_tensors="pt", input_data_format="channels_last"
    )
    seq = torch.cat([inputs["input_ids"][0], torch.tensor(ids)])
    with torch.inference_mode():
        logits = llava.model(pixel_values=inputs["pixel_values"], input_ids=seq[None]).logits[0]
    return next_token_probs(logits, seq, inputs["input_ids"].shape[1])


def test_the_model_sees_the_image_padded_as_transformers_pads_it(llava: Llava) -> None:
    ours = llava.preprocess(list(IMAGES), query())["texts"][0]["pixel_values"]
    processor = padding_processor(llava)
    for image, pixels in zip(IMAGES, ours, strict=True):
        expected = processor.image_processor(image, return_tensors="pt", input_data_format="channels_last")
        np.testing.assert_allclose(pixels.numpy(), expected["pixel_values"][0].numpy(), atol=1e-5)


def test_forced_list_answer_maps_boxes_by_hand_with_token_scores(llava: Llava, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, owner = answer_ids(llava, *(text for _, text in PIECES))
    force(monkeypatch, llava.model, lambda: ids)
    got = llava(list(IMAGES), query())
    names = [name for name, _ in PIECES]
    for image, det, expected in zip(IMAGES, got, EXPECTED, strict=True):
        np.testing.assert_allclose(det.xyxy, expected, atol=1e-4)
        # "Dogs" -> dog twice (the second box shares its line's name); "tree" names no prompt; the remote's box is
        # in pixels, not fractions, so it is dropped.
        assert det.data[CLASS_NAME_DATA_FIELD].tolist() == ["cat", "dog", "dog"]
        probs = teacher_forced(llava, image, LIST_QUESTION.format(names=NAMES), ids)

        def mean_of(*pieces: str, probs: list[float] = probs) -> float:
            return float(np.mean([p for p, o in zip(probs, owner, strict=True) if o >= 0 and names[o] in pieces]))

        scores = [
            mean_of("cat phrase", "cat box"),
            mean_of("dog phrase", "dog box 1"),
            mean_of("dog phrase", "dog box 2"),
        ]
        np.testing.assert_allclose(det.confidence, scores, rtol=1e-4)
        assert len(set(np.round(det.confidence, 7))) == 3


def test_the_tiny_models_own_generations_equal_generating_by_hand(llava: Llava) -> None:
    q = query(max_new_tokens=6)
    raw = llava.forward(llava.preprocess(list(IMAGES), q))
    processor = padding_processor(llava)
    for answer, image in zip(raw[0], IMAGES, strict=True):
        inputs = processor(
            images=image,
            text=prompt_of(processor, LIST_QUESTION.format(names=NAMES)),
            return_tensors="pt",
            input_data_format="channels_last",
        )
        with torch.inference_mode():
            seq = llava.model.generate(
                **inputs, max_new_tokens=6, do_sample=False, suppress_tokens=[llava.model.config.image_token_id]
            )[0]
        new = seq[inputs["input_ids"].shape[1] :].tolist()
        assert answer.ids == new[: len(answer.ids)]
        np.testing.assert_allclose(
            answer.probs, teacher_forced(llava, image, LIST_QUESTION.format(names=NAMES), answer.ids), rtol=1e-4
        )


def test_per_prompt_asks_each_label_and_scores_only_the_box(llava: Llava, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, owner = answer_ids(llava, "[0.25, 0.5, 0.75, 1.0]")
    force(monkeypatch, llava.model, lambda: ids)
    (det,) = llava([IMAGES[0]], query(mode="per_prompt"))
    assert det.class_id.tolist() == [0, 1, 2]
    np.testing.assert_allclose(det.xyxy, [EXPECTED[0][0]] * 3, atol=1e-4)
    for index, prompt in enumerate(PROMPTS):
        probs = teacher_forced(llava, IMAGES[0], PROMPT_QUESTION.format(prompt), ids)
        picked = [p for p, o in zip(probs, owner, strict=True) if o == 0]
        np.testing.assert_allclose(det.confidence[index], np.mean(picked), rtol=1e-4)


def test_without_padding_boxes_map_through_the_processors_crop(llava: Llava, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, _ = answer_ids(llava, "cat: [0, 0, 1, 1], [0.5, 0.25, 0.75, 0.75]")
    force(monkeypatch, llava.model, lambda: ids)
    (det,) = llava([IMAGES[0]], query(pad_to_square=False))
    x0, y0, x1, y1 = frame_by_hand(80, 48)  # the 32 px crop of the image resized to 53 x 32
    w, h = x1 - x0, y1 - y0
    np.testing.assert_allclose(
        det.xyxy, [[x0, y0, x1, y1], [x0 + w / 2, y0 + h / 4, x0 + w * 3 / 4, y0 + h * 3 / 4]], atol=1e-4
    )


def test_broken_answers_and_the_threshold_give_no_regions(llava: Llava, monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("cat: [0.2, 0.3", "[0.1, 0.2, 0.3, 0.4]", "cat: (0.1, 0.2, 0.3, 0.4)", "none"):
        ids, _ = answer_ids(llava, text)
        force(monkeypatch, llava.model, lambda ids=ids: ids)
        (det,) = llava([IMAGES[0]], query())
        assert det.xyxy.shape == (0, 4), text
    ids, _ = answer_ids(llava, *(text for _, text in PIECES))
    force(monkeypatch, llava.model, lambda: ids)
    (det,) = llava([IMAGES[0]], query(score_threshold=0.99))
    assert len(det) == 0


def test_choices_are_the_label_answers_probabilities_renormalised(llava: Llava) -> None:
    got = llava(list(IMAGES), query(task="classification"))
    processor = padding_processor(llava)
    eos = processor.tokenizer.eos_token_id
    for image, det in zip(IMAGES, got, strict=True):
        question = prompt_of(processor, CHOICE_QUESTION.format(names=NAMES))
        asked = processor(images=image, text=question, return_tensors="pt", input_data_format="channels_last")
        first = asked["input_ids"].shape[1]
        log_p = []
        for prompt in PROMPTS:  # P(" cat" then end of answer | question), one image at a time
            inputs = processor(
                images=image, text=f"{question} {prompt}", return_tensors="pt", input_data_format="channels_last"
            )
            seq = torch.cat([inputs["input_ids"][0], torch.tensor([eos])])
            assert seq[:first].tolist() == asked["input_ids"][0].tolist()
            with torch.inference_mode():
                logits = llava.model(pixel_values=inputs["pixel_values"], input_ids=seq[None]).logits[0]
            log_p.append(float(np.sum(np.log(next_token_probs(logits, seq, first)))))
        expected = np.exp(log_p) / np.exp(log_p).sum()
        np.testing.assert_allclose(det.confidence, expected, rtol=1e-4)
        assert det.class_id.tolist() == [0, 1, 2] and det.metadata[CALIBRATION] == "softmax"
        height, width = image.shape[:2]
        assert (det.xyxy == [0, 0, width, height]).all()
