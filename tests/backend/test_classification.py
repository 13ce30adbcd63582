from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from backend.classification import choice_regions, label_scores
from backend.plan import build_plan
from model_adapters.classification import classification_detections

SINGLE = """<View><Image name="image" value="$image"/>
<Choices name="kind" toName="image"><Choice value="Cat" predicted_values="cat,kitten"/><Choice value="Dog"/>
<Choice value="Bird"/></Choices></View>"""
MULTIPLE = SINGLE.replace('toName="image">', 'toName="image" choice="multiple">')


def plan(config: str, project: dict | None = None):
    return build_plan(config, project or {}, {}, device="cpu", dtype="auto").targets[0]


def answer(probs: list[float], calibration: str = "softmax"):
    prompts = ["cat", "kitten", "Dog", "Bird"]
    return classification_detections(np.asarray(probs), np.zeros((10, 20, 3), np.uint8), prompts, calibration)


def test_plan_defaults_to_clip_with_the_labels_as_prompts() -> None:
    target = plan(SINGLE)
    assert target.spec.adapter == "clip" and target.spec.model_id == "openai/clip-vit-base-patch32"
    assert target.prompts == ("cat", "kitten", "Dog", "Bird") and target.prompt_labels == (0, 0, 1, 2)
    assert target.params.templates == ("a photo of a {}.",)


def test_softmax_prompts_of_a_label_add_up_and_sigmoid_prompts_take_the_best() -> None:
    target = plan(SINGLE)
    assert label_scores(answer([0.3, 0.3, 0.35, 0.05]), target) == pytest.approx([0.6, 0.35, 0.05])
    assert label_scores(answer([0.3, 0.6, 0.35, 0.05], "sigmoid"), target) == pytest.approx([0.6, 0.35, 0.05])


def test_single_choice_takes_the_best_label_scored_by_its_probability() -> None:
    (region,) = choice_regions(answer([0.3, 0.3, 0.35, 0.05]), plan(SINGLE))
    assert region["value"] == {"choices": ["Cat"]} and region["score"] == pytest.approx(0.6)
    assert region["type"] == "choices" and region["from_name"] == "kind" and region["to_name"] == "image"
    assert LabelInterface(SINGLE).validate_prediction({"result": [region], "score": 0.6, "model_version": "v"})


def test_multiple_choice_keeps_labels_over_their_thresholds() -> None:
    target = plan(MULTIPLE, {"classification": {"score_threshold": 0.3, "label_thresholds": {"Bird": 0.01}}})
    (region,) = choice_regions(answer([0.1, 0.1, 0.7, 0.02], "sigmoid"), target)
    assert region["value"] == {"choices": ["Dog", "Bird"]} and region["score"] == pytest.approx(0.02)
    assert LabelInterface(MULTIPLE).validate_prediction({"result": [region], "score": 0.1, "model_version": "v"})
    assert choice_regions(answer([0.1, 0.1, 0.2, 0.0], "sigmoid"), target) == []


def test_classification_settings_are_checked() -> None:
    from backend.errors import ProjectSettingsError

    with pytest.raises(ProjectSettingsError, match="label_thresholds.Cat must be a number"):
        plan(MULTIPLE, {"classification": {"label_thresholds": {"Cat": "high"}}})
    with pytest.raises(ProjectSettingsError, match="model 'grounding_dino' does detection, not classification"):
        plan(SINGLE, {"classification": {"model": "grounding_dino"}})
    assert plan(SINGLE, {"classification": {"templates": ["{} in the wild", "a {}"]}}).params.templates == (
        "{} in the wild", "a {}",
    )  # fmt: skip
