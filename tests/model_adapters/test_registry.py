from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from model_adapters.base import Adapter, AdapterError, ModelSpec, Query, Task, make_params
from model_adapters.registry import UnknownAdapterError, available_adapters, register_adapter, resolve_adapter
from model_adapters.segmentation import MaskPrompt, PromptableSegmenter
from tests.helpers import image_array
from tests.references import EMBEDDINGS, PROMPTS, REFERENCES, canonical, segment_box

# Every registered family, with the tiny model the sweep loads it from. A new adapter must add a line.
TINY_FOR = {
    "grounding_dino": "grounding_dino",
    "owlvit": "owlvit",
    "owlv2": "owlv2",
    "omdet_turbo": "omdet_turbo",
    "clip": "clip",
    "altclip": "altclip",
    "siglip": "siglip",
    "siglip2": "siglip2",
    "blip": "blip",
    "openclip": "openclip",
    "fastvit": "fastvit",
    "albef": "albef",
    "detic": "detic",
    "codet": "codet",
    "vlpart": "vlpart",
    "dinov2": "dinov2",
    "sam": "sam",
    "sam2": "sam2",
    "sam3": "sam3",
    "segment_anything": "segment_anything",
    "kosmos2": "kosmos2",
    "florence2": "florence2",
    "florence2_seg": "florence2",
    "llava": "llava",
    "qwen2_5_vl": "qwen2_5_vl",
}
# Families behind a hosted API: no weights and no library reference path; their own tests use a loopback fake.
HOSTED = {"roboflow": "tests/model_adapters/test_roboflow.py"}
# Generative families: random tiny weights write noise, so their parity with the processor's post-processing is
# proven on forced answers in their own test modules; the sweep checks that every shape gives a valid answer.
GENERATIVE = {"kosmos2", "florence2", "florence2_seg", "llava", "qwen2_5_vl"}
FAMILIES = sorted(
    name
    for name in available_adapters()
    if "." not in name and resolve_adapter(name)[0].__module__.startswith("model_adapters.") and name not in HOSTED
)


def test_hosted_families_are_registered_and_tested_against_a_fake() -> None:
    for family, tests in HOSTED.items():
        assert resolve_adapter(family)[0].name == family and (Path(__file__).parents[2] / tests).is_file()


def test_names_resolve_to_families_and_variants() -> None:
    names = available_adapters()
    assert {"grounding_dino", "grounding_dino.tiny", "grounding_dino.base", "grounding_dino.llmdet_tiny"} <= set(names)
    assert {"owlv2", "owlv2.large", "owlvit", "owlvit.base16", "omdet_turbo"} <= set(names)
    cls, model_id = resolve_adapter("grounding_dino")
    assert cls.name == "grounding_dino" and model_id == "IDEA-Research/grounding-dino-tiny"
    assert resolve_adapter("grounding_dino.base")[1] == "IDEA-Research/grounding-dino-base"


def test_unknown_names_list_what_exists() -> None:
    with pytest.raises(UnknownAdapterError, match="unknown model 'yolo'; available: .*grounding_dino"):
        resolve_adapter("yolo")
    with pytest.raises(
        UnknownAdapterError,
        match="grounding_dino has: grounding_dino.tiny, grounding_dino.base, grounding_dino.mm_tiny",
    ):
        resolve_adapter("grounding_dino.xxl")


def test_a_second_family_with_the_same_name_is_refused() -> None:
    original, _ = resolve_adapter("grounding_dino")
    clone = type("Clone", (original,), {})
    with pytest.raises(ValueError, match="registered twice"):
        register_adapter(clone)
    assert resolve_adapter("grounding_dino")[0] is original


def test_backend_and_every_adapter_module_import_without_torch() -> None:
    code = (
        "import sys; import backend.app, backend.cli; from model_adapters.registry import available_adapters; "
        "available_adapters(); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'timm', 'open_clip', 'segment_anything') if m in sys.modules); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_family_has_a_tiny_model_in_the_sweep() -> None:
    assert set(FAMILIES) == set(TINY_FOR)


def test_every_family_has_a_reference_path() -> None:
    """Zero-shot families are compared on their answers, the others (learned heads only) on their embeddings."""
    zero_shot = {family for family in FAMILIES if resolve_adapter(family)[0].zero_shot}
    assert set(REFERENCES) == zero_shot - GENERATIVE
    assert set(EMBEDDINGS) == {family for family in FAMILIES if not resolve_adapter(family)[0].zero_shot}


@pytest.fixture(scope="module")
def adapters(tiny: Callable[[str], Path]) -> Callable[[str], Adapter]:
    """``adapters("owlv2")`` -> the family's adapter loaded from its tiny model, once per module."""
    loaded: dict[str, Adapter] = {}

    def get(family: str) -> Adapter:
        if family not in loaded:
            cls, _ = resolve_adapter(family)
            loaded[family] = cls(ModelSpec(family, str(tiny(TINY_FOR[family])), device="cpu"))
            loaded[family].load()
        return loaded[family]

    return get


def answer(adapter: Adapter, image: np.ndarray) -> sv.Detections:
    """The adapter's answer at threshold 0 for ``PROMPTS`` (segmenters: one mask for the reference's box)."""
    if isinstance(adapter, PromptableSegmenter):
        x1, y1, x2, y2 = segment_box(image)
        return adapter.segment(image, MaskPrompt(boxes=((x1, y1, x2, y2),)))
    zero = {f.name: 0.0 for f in dataclasses.fields(adapter.Params) if f.name in ("score_threshold", "text_threshold")}
    (out,) = adapter([image], Query(PROMPTS, make_params(adapter.Params, zero, owner=adapter.name)))
    return out


# (H, W): ordinary images, then images 1, 3 or 4 px tall or wide, which processors guessing the layout read as
# channels-first.
SHAPES = [(48, 64), (30, 40), (1, 37), (3, 50), (4, 29), (50, 1), (31, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_every_adapter_answers_as_its_reference_path_at_any_shape(
    family: str, shape: tuple[int, int], adapters: Callable[[str], Adapter]
) -> None:
    adapter = adapters(family)
    assert isinstance(adapter.task, Task) and adapter.max_batch_size >= 1
    image = image_array(shape[1], shape[0], seed=sum(shape))
    if not adapter.zero_shot:  # it answers only through a learned head: its embedding is what it computes
        with pytest.raises(AdapterError):
            answer(adapter, image)
        ours, expected = adapter.embed([image]), EMBEDDINGS[family](adapter, image)
        assert ours.dtype == np.float32 and ours.shape == expected.shape
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(ours, expected, atol=1e-5)
        return
    height, width = shape
    if family in GENERATIVE:
        ours = answer(adapter, image)
        assert ((ours.xyxy >= 0) & (ours.xyxy <= [width, height] * 2)).all() and ours.xyxy.shape == (len(ours), 4)
        return
    ours, expected = answer(adapter, image), REFERENCES[family](adapter, image)
    assert len(ours) == len(expected) > 0
    assert ours.xyxy.dtype.kind == "f" and ((ours.xyxy >= 0) & (ours.xyxy <= [width, height] * 2)).all()
    ours, expected = canonical(ours), canonical(expected)
    np.testing.assert_allclose(ours.confidence, expected.confidence, atol=1e-5)
    np.testing.assert_allclose(ours.xyxy, expected.xyxy, atol=1e-3)
    if expected.class_id is not None:
        np.testing.assert_array_equal(ours.class_id, expected.class_id)
    if expected.mask is not None:
        assert ours.mask.shape == expected.mask.shape == (len(ours), height, width)
        assert int((ours.mask != expected.mask).sum()) == 0
