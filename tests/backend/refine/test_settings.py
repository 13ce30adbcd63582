"""The refine stages' settings: what a project writes, what it gets, and named errors for what is wrong."""

from __future__ import annotations

import pytest

from backend.errors import ProjectSettingsError
from backend.plan import build_plan, check_server_defaults
from backend.refine.tiling import Tiling
from tests.backend.refine.colour_models import ColourClassifier, ColourDetector
from tests.backend.refine.test_stages import CONFIG

DETECTOR = ColourDetector.name


def plan(detection: dict, **top: object):
    return build_plan(CONFIG, {"detection": detection, **top}, {}, device="cpu", dtype="auto").targets[0]


def test_members_inherit_the_section_and_override_it() -> None:
    target = plan({"score": 0.5, "nms_threshold": 0.3, "models": [
        {"model": DETECTOR}, {"model": f"{DETECTOR}.other", "score": 0.7, "weight": 2.5}]})  # fmt: skip
    (first, second) = target.members
    assert (first.plan.params.score, first.weight) == (0.5, 1.0)
    assert (second.plan.spec.model_id, second.plan.params.score, second.weight) == ("test/colour-other", 0.7, 2.5)
    assert target.post.nms_threshold == 0.3 and target.spec == first.plan.spec


def test_verify_asks_the_labels_prompts_and_the_background() -> None:
    target = plan({"model": DETECTOR, "verify": {"model": ColourClassifier.name, "background": ["gray", "sky"]}},
                  prompts={"Car": ["red", "crimson"]})  # fmt: skip
    classifier = target.verify.plan
    assert classifier.prompts == ("red", "crimson", "Person", "gray", "sky")
    assert classifier.prompt_labels == (0, 0, 1, 2, 2) and target.verify.action == "drop"


@pytest.mark.parametrize(
    ("raw", "want"),
    [("auto", Tiling(above=2048)), (True, Tiling()), (False, None), ({"tile": 640, "whole": False},
                                                                       Tiling(tile=640, whole=False))],
)  # fmt: skip
def test_tiling_forms(raw: object, want: Tiling | None) -> None:
    assert plan({"model": DETECTOR, "tiling": raw}).tiling == want


@pytest.mark.parametrize(
    ("detection", "message"),
    [
        ({"models": []}, "models must be a list of detectors"),
        ({"models": [{"weight": 2}]}, r"models\[0\]: each member names its model"),
        ({"models": [{"model": DETECTOR, "weight": 0}]}, "weight must be a number above 0"),
        ({"models": [{"model": DETECTOR, "tiling": "auto"}]}, "'tiling' belongs to the detection section"),
        ({"models": [{"model": "clip"}]}, "does classification, not detection"),
        ({"models": [{"model": DETECTOR}], "bogus": 1}, "unknown setting 'bogus' for any member"),
        ({"model": DETECTOR, "tiling": {"tile": 8}}, "tile must be between 256 and 16384"),
        ({"model": DETECTOR, "tiling": "always"}, 'tiling must be "auto", true, false'),
        ({"model": DETECTOR, "verify": {"model": DETECTOR}}, "does detection, not classification"),
        ({"model": DETECTOR, "verify": {"model": ColourClassifier.name, "action": "keep"}}, 'action must be "drop"'),
        ({"model": DETECTOR, "verify": {"model": ColourClassifier.name, "margin": 2}}, "margin must be a number"),
        ({"model": DETECTOR, "verify": "clip"}, "verify must be an object"),
        ({"model": DETECTOR, "fusion_iou": 1.5}, "fusion_iou must be between"),
    ],
)
def test_mistakes_are_named(detection: dict, message: str) -> None:
    with pytest.raises(ProjectSettingsError, match=message):
        plan(detection)


def test_server_defaults_may_name_stages_and_are_checked_at_startup() -> None:
    check_server_defaults({"detection": {"model": DETECTOR, "tiling": "auto"}})
    with pytest.raises(ProjectSettingsError, match="tile must be"):
        check_server_defaults({"detection": {"model": DETECTOR, "tiling": {"tile": 1}}})
