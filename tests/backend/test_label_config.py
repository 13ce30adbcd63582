from __future__ import annotations

import pytest

from backend.errors import LabelConfigError
from backend.label_config import parse_targets
from model_adapters.base import Task

MULTI = """<View>
  <Image name="front" value="$front"/>
  <Image name="back" value="$back_url"/>
  <Text name="caption" value="$caption"/>
  <RectangleLabels name="boxes" toName="front" model_score_threshold="0.2">
    <Label value="Car" predicted_values="car, truck"/>
    <Label value="Person"/>
  </RectangleLabels>
  <PolygonLabels name="outline" toName="back"><Label value="Car"/></PolygonLabels>
  <BrushLabels name="paint" toName="front"><Label value="Car"/></BrushLabels>
  <Choices name="weather" toName="front" choice="multiple"><Choice value="Sunny"/><Choice value="Rain"/></Choices>
  <KeyPointLabels name="clicks" toName="front" smart="true"><Label value="Car"/></KeyPointLabels>
  <Choices name="sentiment" toName="caption"><Choice value="Good"/></Choices>
  <TextArea name="notes" toName="front"/>
</View>"""


def test_every_image_control_becomes_a_target_with_its_task() -> None:
    targets = {t.control: t for t in parse_targets(MULTI)}
    assert set(targets) == {"boxes", "outline", "paint", "weather", "clicks"}  # text controls are not ours
    assert targets["boxes"].task is Task.DETECTION
    assert targets["outline"].task is Task.SEGMENTATION and targets["outline"].to_name == "back"
    assert targets["outline"].value_key == "back_url"
    assert targets["paint"].task is Task.SEGMENTATION
    assert targets["weather"].task is Task.CLASSIFICATION and targets["weather"].attrs["choice"] == "multiple"
    assert targets["clicks"].task is None and targets["clicks"].smart


def test_labels_and_predicted_values() -> None:
    boxes = next(t for t in parse_targets(MULTI) if t.control == "boxes")
    assert boxes.labels == ("Car", "Person")
    assert dict(boxes.predicted_values) == {"Car": ("car", "truck")}
    assert boxes.attrs["model_score_threshold"] == "0.2"


@pytest.mark.parametrize("config", ["<View><Image", "not xml at all", "<View><Image name='i' value='$i'/><Foo/>"])
def test_unparseable_config_is_a_label_config_error(config: str) -> None:
    with pytest.raises(LabelConfigError, match="label config cannot be parsed"):
        parse_targets(config)
