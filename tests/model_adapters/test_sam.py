from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from model_adapters import sam as sam_module
from model_adapters.base import AdapterLoadError, ModelSpec
from model_adapters.sam import Sam, SamOriginal, SamParams, build_original_sam
from model_adapters.segmentation import Click, EmbeddingCache, MaskPrompt
from tests.helpers import image_array
from tests.tiny_models import build_segment_anything, segment_anything_tiny_kwargs, tiny_segment_anything_model

IMAGE = image_array(80, 48, seed=1)  # not square: SAM resizes the long side and pads
BOXES = ((2.0, 3.0, 40.0, 30.0), (30.0, 10.0, 78.0, 46.0), (10.0, 20.0, 20.0, 40.0))
PROMPTS = {  # name -> (prompt, multimask output under the "auto" rule)
    "one click": (MaskPrompt(clicks=(Click(20, 30),)), True),
    "two clicks": (MaskPrompt(clicks=(Click(20, 30), Click(60, 10, positive=False))), False),
    "box and clicks": (MaskPrompt(boxes=(BOXES[0],), clicks=(Click(20, 15), Click(5, 5, positive=False))), False),
}


@pytest.fixture(scope="module")
def sam(tiny: Callable[[str], Path]) -> Sam:
    adapter = Sam(ModelSpec("sam", str(tiny("sam")), device="cpu"))
    adapter.load()
    return adapter


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny segment_anything checkpoint with its sizes beside it (``sam_tiny.json``)."""
    return build_segment_anything(tmp_path_factory.mktemp("segment_anything"))


@pytest.fixture(scope="module")
def original(checkpoint: Path) -> SamOriginal:
    adapter = SamOriginal(ModelSpec("segment_anything", str(checkpoint), device="cpu"))
    adapter.load()
    return adapter


def hf_reference(sam: Sam, prompt: MaskPrompt, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
    """SamModel + SamProcessor called by hand; the best of the multimask outputs by predicted IoU."""
    processor = AutoProcessor.from_pretrained(sam.spec.model_id)
    kwargs: dict = {}
    if prompt.clicks:
        kwargs["input_points"] = [[[c.x, c.y] for c in prompt.clicks]]
        kwargs["input_labels"] = [[int(c.positive) for c in prompt.clicks]]
    if prompt.boxes:
        kwargs["input_boxes"] = [[list(b) for b in prompt.boxes]]
    inputs = processor(images=IMAGE, return_tensors="pt", **kwargs)
    with torch.inference_mode():
        out = sam.model(**inputs, multimask_output=multimask)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    best = out.iou_scores[0].argmax(-1)
    rows = torch.arange(len(best))
    return masks[rows, best].numpy(), out.iou_scores[0][rows, best].numpy()


def assert_same(got: object, masks: np.ndarray, scores: np.ndarray) -> None:
    """The reference's masks, and its raw predicted IoUs clipped to [0, 1] (scores are probabilities)."""
    assert got.mask.shape == masks.shape and got.mask.dtype == bool  # type: ignore[attr-defined]
    assert int((got.mask != masks).sum()) == 0  # type: ignore[attr-defined]
    np.testing.assert_allclose(got.confidence, np.clip(scores, 0, 1), atol=1e-5)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(PROMPTS))
def test_clicks_equal_sam_model_and_processor_by_hand(sam: Sam, name: str) -> None:
    prompt, multimask = PROMPTS[name]
    got = sam.segment(IMAGE, prompt)
    assert_same(got, *hf_reference(sam, prompt, multimask))


def test_all_boxes_in_one_decoder_call_equal_the_reference_and_box_by_box(sam: Sam) -> None:
    calls: list[int] = []
    original = sam.model.mask_decoder.forward
    sam.model.mask_decoder.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
    try:
        together = sam.segment(IMAGE, MaskPrompt(boxes=BOXES))
    finally:
        del sam.model.mask_decoder.forward
    assert len(calls) == 1 and len(together) == len(BOXES)
    assert_same(together, *hf_reference(sam, MaskPrompt(boxes=BOXES), multimask=False))
    for i, box in enumerate(BOXES):
        alone = sam.segment(IMAGE, MaskPrompt(boxes=(box,)))
        np.testing.assert_array_equal(alone.mask[0], together.mask[i])
        np.testing.assert_allclose(alone.confidence[0], together.confidence[i], atol=1e-5)


def test_boxes_and_clicks_together_give_boxes_then_the_clicks_mask(sam: Sam) -> None:
    clicks = (Click(20, 30),)
    got = sam.segment(IMAGE, MaskPrompt(boxes=BOXES[:2], clicks=clicks))
    boxes, click = sam.segment(IMAGE, MaskPrompt(boxes=BOXES[:2])), sam.segment(IMAGE, MaskPrompt(clicks=clicks))
    np.testing.assert_array_equal(got.mask, np.concatenate([boxes.mask, click.mask]))


def test_params_threshold_and_multimask_rule(sam: Sam) -> None:
    prompt, _ = PROMPTS["one click"]
    embedding = sam.embed_image(IMAGE)
    with torch.inference_mode():
        never = sam.decode(embedding, IMAGE, prompt, SamParams(multimask="never"))
        strict = sam.decode(embedding, IMAGE, prompt, SamParams(mask_threshold=0.05, multimask="never"))
        always = sam.decode(embedding, IMAGE, MaskPrompt(boxes=BOXES), SamParams(multimask="always"))
    assert_same(never, *hf_reference(sam, prompt, multimask=False))
    assert (strict.mask <= never.mask).all() and strict.mask.sum() < never.mask.sum()
    assert_same(always, *hf_reference(sam, MaskPrompt(boxes=BOXES), multimask=True))


def test_second_segment_on_the_same_key_skips_the_image_encoder(sam: Sam) -> None:
    sam.embeddings = EmbeddingCache()
    calls: list[int] = []
    original = sam.model.get_image_embeddings
    sam.model.get_image_embeddings = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
    try:
        first = sam.segment(IMAGE, PROMPTS["one click"][0], image_key="task-1")
        second = sam.segment(IMAGE, PROMPTS["one click"][0], image_key="task-1")
        sam.segment(IMAGE, PROMPTS["two clicks"][0])  # default key: a hash of the pixels
        sam.segment(IMAGE.copy(), PROMPTS["two clicks"][0])
    finally:
        del sam.model.get_image_embeddings
    assert len(calls) == 2 and sam.embeddings.hits == 2
    np.testing.assert_array_equal(first.mask, second.mask)
    np.testing.assert_array_equal(first.confidence, second.confidence)


@pytest.mark.parametrize("which", ["sam", "original"])
def test_concurrent_segment_calls_equal_sequential_ones(which: str, request: pytest.FixtureRequest) -> None:
    adapter = request.getfixturevalue(which)
    images = [image_array(80, 48, seed=10), image_array(40, 64, seed=11)]
    prompts = [MaskPrompt(clicks=(Click(20, 30),)), MaskPrompt(boxes=BOXES[:2])]
    adapter.embeddings = EmbeddingCache()
    expected = [adapter.segment(i, p) for i, p in zip(images, prompts, strict=True)]
    adapter.embeddings = EmbeddingCache()
    jobs = [(i % 2, f"round-{i // 2}") for i in range(8)]  # both images, fresh keys: encoders run concurrently
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: adapter.segment(images[j[0]], prompts[j[0]], image_key=j[1]), jobs))
    for (index, _), answer in zip(jobs, got, strict=True):
        np.testing.assert_array_equal(answer.mask, expected[index].mask)
        np.testing.assert_allclose(answer.confidence, expected[index].confidence, atol=1e-6)


def test_empty_prompt_gives_no_masks(sam: Sam, original: SamOriginal) -> None:
    for adapter in (sam, original):
        got = adapter.segment(IMAGE, MaskPrompt())
        assert got.mask.shape == (0, 48, 80) and len(got.confidence) == 0


def test_wrong_family_is_named(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="'sam2' model, not sam"):
        Sam(ModelSpec("sam", str(tiny("sam2")), device="cpu")).load()


def predictor_reference(model: torch.nn.Module, prompt: MaskPrompt, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
    """segment_anything's SamPredictor (set_image + predict / predict_torch), best mask by predicted IoU."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    predictor.set_image(IMAGE)
    if len(prompt.boxes) > 1:
        boxes = predictor.transform.apply_boxes_torch(torch.tensor(prompt.boxes), IMAGE.shape[:2])
        masks, scores, _ = predictor.predict_torch(None, None, boxes, multimask_output=multimask)
        masks, scores = masks.numpy(), scores.numpy()
    else:
        points = np.array([[c.x, c.y] for c in prompt.clicks]) if prompt.clicks else None
        labels = np.array([int(c.positive) for c in prompt.clicks]) if prompt.clicks else None
        box = np.array(prompt.boxes[0]) if prompt.boxes else None
        masks, scores, _ = predictor.predict(points, labels, box, multimask_output=multimask)
        masks, scores = masks[None], scores[None]
    best = scores.argmax(-1)
    rows = np.arange(len(best))
    return masks[rows, best], scores[rows, best]


def test_the_sam_builder_at_its_defaults_is_segment_anythings_vit_b() -> None:
    """``build_original_sam`` (which the tiny references share with the adapter) against the package's own builder."""
    from segment_anything import sam_model_registry

    def settings(model: torch.nn.Module) -> dict[str, dict]:  # every module's plain attributes (heads, sizes, ...)
        plain = int | float | bool | str | tuple | list
        return {name: {k: v for k, v in vars(m).items() if isinstance(v, plain)} for name, m in model.named_modules()}

    with torch.device("meta"):  # architecture only: no 375 MB of weights
        ours, theirs = build_original_sam().eval(), sam_model_registry["vit_b"]()  # the package builds in eval mode
    assert repr(ours) == repr(theirs) and settings(ours) == settings(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def from_file(checkpoint: Path) -> torch.nn.Module:
    """The tiny segment_anything Sam with the checkpoint's weights, built apart from the adapter's loading."""
    return tiny_segment_anything_model(checkpoint, **segment_anything_tiny_kwargs())


@pytest.mark.parametrize("shift", [-3.0, 3.0])
@pytest.mark.parametrize("which", ["sam", "original"])
def test_predicted_ious_below_0_or_above_1_are_clipped(
    which: str, shift: float, request: pytest.FixtureRequest
) -> None:
    """SAM's IoU head is a plain regression (the tiny model predicts about -0.02 for two clicks): shifted both ways."""
    adapter = request.getfixturevalue(which)
    head = [m for m in adapter.model.mask_decoder.iou_prediction_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.bias += shift
        for prompt, multimask in PROMPTS.values():
            if which == "sam":
                masks, raw = hf_reference(adapter, prompt, multimask)
            else:
                masks, raw = predictor_reference(adapter.model, prompt, multimask)
            assert ((raw < 0) if shift < 0 else (raw > 1)).all()
            got = adapter.segment(IMAGE, prompt)
            assert_same(got, masks, raw)
            assert (got.confidence == (0.0 if shift < 0 else 1.0)).all()
    finally:
        with torch.no_grad():
            head.bias.copy_(saved)


@pytest.mark.parametrize("name", [*PROMPTS, "boxes"])
def test_segment_anything_equals_sam_predictor(original: SamOriginal, checkpoint: Path, name: str) -> None:
    prompt, multimask = PROMPTS.get(name, (MaskPrompt(boxes=BOXES), False))
    assert_same(original.segment(IMAGE, prompt), *predictor_reference(from_file(checkpoint), prompt, multimask))


def test_segment_anything_boxes_in_one_call_equal_box_by_box(original: SamOriginal, checkpoint: Path) -> None:
    together = original.segment(IMAGE, MaskPrompt(boxes=BOXES))
    for i, box in enumerate(BOXES):
        masks, scores = predictor_reference(from_file(checkpoint), MaskPrompt(boxes=(box,)), multimask=False)
        np.testing.assert_array_equal(together.mask[i], masks[0])
        np.testing.assert_allclose(together.confidence[i], np.clip(scores[0], 0, 1), atol=1e-5)


def test_segment_anything_standard_widths_go_through_the_registry(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a sizes file the ViT width picks the registry builder (faked here: real ViT-B is 375 MB)."""
    import segment_anything

    plain = tmp_path / "sam_plain.pth"
    plain.write_bytes(checkpoint.read_bytes())
    built: list[str] = []
    fake = lambda: (built.append("vit_b"), tiny_segment_anything_model(**segment_anything_tiny_kwargs()))[1]  # noqa: E731
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", fake)
    with pytest.raises(AdapterLoadError, match="32-wide ViT, not SAM's; add sam_plain.json"):
        SamOriginal(ModelSpec("segment_anything", str(plain), device="cpu")).load()
    monkeypatch.setitem(sam_module._ORIGINAL_VARIANTS, 32, "vit_b")
    adapter = SamOriginal(ModelSpec("segment_anything", str(plain), device="cpu"))
    adapter.load()
    assert built == ["vit_b"]
    assert_same(
        adapter.segment(IMAGE, PROMPTS["one click"][0]),
        *predictor_reference(from_file(checkpoint), *PROMPTS["one click"]),
    )


def test_segment_anything_missing_checkpoint_and_half_precision_are_explained(checkpoint: Path) -> None:
    with pytest.raises(
        AdapterLoadError, match="segment_anything: no such file: sam_vit_b_01ec64.pth. .*from e.g. https://dl.fbai"
    ):
        SamOriginal(ModelSpec("segment_anything", "sam_vit_b_01ec64.pth", device="cpu")).load()
    with pytest.raises(AdapterLoadError, match="float32 only"):
        SamOriginal(ModelSpec("segment_anything", str(checkpoint), device="cpu", dtype="float16")).load()


def test_embedding_cache_evicts_by_count_and_by_bytes() -> None:
    cache = EmbeddingCache(max_items=2, max_bytes=1000)
    for key in "abc":
        cache.put(key, {"x": np.zeros(10, dtype=np.float32)})  # 40 bytes each
    assert len(cache) == 2 and cache.get("a") is None and cache.get("b") is not None
    cache.put("d", torch.zeros(10))  # "c" is now the least recently used
    assert cache.get("c") is None and cache.get("b") is not None and cache.get("d") is not None

    cache = EmbeddingCache(max_items=10, max_bytes=100)
    cache.put("a", [torch.zeros(10), torch.zeros(5)])  # 60 bytes
    cache.put("b", torch.zeros(10))  # 100 in all: kept
    assert len(cache) == 2
    cache.put("c", np.zeros(2, dtype=np.float64))  # 116 > 100: "a" goes
    assert cache.get("a") is None and len(cache) == 2
    cache.put("huge", np.zeros(1000))  # over the bound alone: still kept, as the newest
    assert len(cache) == 1 and cache.get("huge") is not None
    assert (cache.hits, cache.misses) == (1, 1)
