"""P6: Detic Swin-B (real size, random weights) on the detectron2-free port / the original code's forward.

The baseline is the original's time recorded in ``tests/fixtures/detic/timing_full_detic_swinb.json`` (Detic +
detectron2, CPU, 2 threads, a 480x640 tensor fed without resizing, 22047-class classifier, one class per
proposal, score threshold 1e-4, 300 detections at most, masks pasted): the original cannot be installed beside
this project's torch stack, so it is not re-run here. The port runs the same settings with 2 threads, its detections
capped at the original's count (153): random weights from another initialiser would otherwise give another count,
and the mask head's cost grows with it. Target: ratio <= 1.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from benchmarks.common import Row, median_time

TIMING = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "detic" / "timing_full_detic_swinb.json"
CLASSES = 22047


def run() -> list[Row]:
    from model_adapters.detic_net.model import DeticArch, DeticNet
    from model_adapters.detic_net.roi_heads import DetectionSettings, classifier_weight

    recorded = json.loads(TIMING.read_text())
    runs = recorded["direct_480x640_input"]
    baseline = statistics.median(r["total_s"] for r in runs)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        net = DeticNet(DeticArch("swin")).eval()
        zs = classifier_weight(torch.randn(CLASSES, 512))
        pixels = torch.randn(1, 3, 480, 640)
        settings = DetectionSettings(1e-4, 0.5, min(r["num_dets"] for r in runs), True)

        def forward() -> None:
            with torch.inference_mode():
                net(pixels, [(480, 640)], [(480, 640)], zs, settings=settings)

        forward()  # warm-up
        ours = median_time(forward, 2)
    finally:
        torch.set_num_threads(threads)
    return [Row("P6", "Detic Swin-B forward, 480x640, 2 threads", baseline, ours, ours / baseline, "<= 1")]
