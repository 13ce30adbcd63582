from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model_adapters.base import Adapter, ModelSpec, Query, Task, make_params
from model_adapters.registry import UnknownAdapterError, available_adapters, register_adapter, resolve_adapter
from model_adapters.segmentation import MaskPrompt, PromptableSegmenter
from tests.helpers import image_array

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
    "sam": "sam",
    "sam2": "sam2",
    "sam3": "sam3",
    "segment_anything": "segment_anything",
}
FAMILIES = sorted(
    name
    for name in available_adapters()
    if "." not in name and resolve_adapter(name)[0].__module__.startswith("model_adapters.")
)


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


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_every_adapter_loads_a_tiny_model_and_answers_per_image(family: str, tiny: Callable[[str], Path]) -> None:
    cls, _ = resolve_adapter(family)
    assert issubclass(cls, Adapter) and isinstance(cls.task, Task) and cls.max_batch_size >= 1
    adapter = cls(ModelSpec(family, str(tiny(TINY_FOR[family])), device="cpu"))
    adapter.load()
    prompts = ("a cat", "a remote")
    params = make_params(cls.Params, {}, owner=family)
    images = [image_array(64, 48, 0), image_array(40, 30, 1)]
    if isinstance(adapter, PromptableSegmenter):  # boxes in, one mask per box
        answers = [adapter.segment(image, MaskPrompt(boxes=((2, 2, 20, 20), (5, 5, 30, 25)))) for image in images]
        assert [a.mask.shape for a in answers] == [(2, 48, 64), (2, 30, 40)]
        prompts = ("box 1",)  # class ids are all 0 until the server labels the masks
    else:
        answers = adapter(images, Query(prompts, params))
    assert len(answers) == 2
    for answer in answers:
        assert answer.xyxy.shape == (len(answer), 4) and answer.xyxy.dtype.kind == "f"
        assert answer.confidence is not None and len(answer.confidence) == len(answer)
        assert answer.class_id is not None and set(answer.class_id.tolist()) <= set(range(len(prompts)))
        if answer.mask is not None:
            assert answer.mask.shape[0] == len(answer) and answer.mask.dtype == bool
        assert np.isfinite(answer.xyxy).all()
