"""Serve a Roboflow-backed project from one site directory only; run as ``python -I -S tests/serve_without_torch.py SPEC``.

``SPEC`` is JSON ``{"site": dir, "root": repo root, "model_dir": dir}``. Like ``tests/load_families.py``, ``-I -S``
leaves only ``site`` (a ``.[roboflow]`` install) and the repository importable. The app answers ``/setup`` and
``/predict`` with a loopback fake Roboflow; the last line printed is a JSON report.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPORT_PREFIX = "REPORT "
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
    '<Label value="Helmet"/></RectangleLabels></View>'
)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    """Set up a project with the ``roboflow`` adapter and predict one task; report what was imported."""
    # The repository first: OpenCV's loader puts its own folder at sys.path[1], which must come before the site's
    # ``cv2`` package (with the site at sys.path[0], ``import cv2`` finds the package again and fails).
    sys.path[:0] = [spec["root"], spec["site"]]
    import importlib.util

    from backend.app import create_app
    from backend.settings import ServerSettings
    from tests.fake_roboflow import FakeModel, FakeRoboflow
    from tests.helpers import data_uri, make_task

    answer = {"x": 20, "y": 12, "width": 10, "height": 8, "confidence": 0.9, "class": "helmet", "class_id": 0}
    with FakeRoboflow("k" * 20) as fake:
        fake.models["helmets/1"] = FakeModel("detection", lambda w, h: [answer])
        os.environ["ROBOFLOW_API_URL"] = fake.url
        os.environ["ROBOFLOW_API_KEY"] = "k" * 20
        client = create_app(ServerSettings(model_dir=Path(spec["model_dir"]), preload_projects=0)).test_client()
        extra = {"detection": {"model": "roboflow", "model_id": "helmets/1", "api": "self_hosted"}}
        setup = client.post("/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": extra})
        tasks = [make_task(1, data_uri(64, 48))]
        predicted = client.post("/predict", json={"tasks": tasks, "project": "1.1", "label_config": CONFIG})
    return {
        "setup": setup.status_code,
        "results": predicted.json.get("results") if predicted.is_json else predicted.text,
        "torch_importable": importlib.util.find_spec("torch") is not None,
        "torch_imported": "torch" in sys.modules,
        "sys_path": sys.path,
    }


if __name__ == "__main__":
    print(REPORT_PREFIX + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
