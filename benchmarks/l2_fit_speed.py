"""L2: from an annotation webhook to a new version serving, with 50 annotated images whose features are cached.

``prelabel serve`` (gunicorn, 2 workers) with a real-size CLIP B/32 (random weights) on a ``Choices`` control; 50
annotations arrive and are fitted (their embeddings are cached on disk), then one more arrives: the clock runs from
that webhook until ``/setup`` answers the new version (what Label Studio asks before its next retrieve). The default
debounce (``PRELABEL_FIT_DEBOUNCE``, 3 s: a fit waits for a quiet moment so a burst makes one version) is part of it;
the second row is the fit itself (one new embedding, the head, the artifact), from ``prelabel_fit_seconds``.
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from benchmarks.common import Row, cache_dir, real_size_clip
from tests.e2e.prelabel_server import PrelabelServer

CONFIG = """<View><Image name="image" value="$image"/><Choices name="kind" toName="image">
<Choice value="A"/><Choice value="B"/></Choices></View>"""
TARGET_S = 5.0


def image_uri(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def event(n: int) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": 1},
            "annotation": {"id": n, "task": n, "updated_at": n, "result": [
                {"from_name": "kind", "to_name": "image", "type": "choices", "value": {"choices": ["AB"[n % 2]]}}]},
            "task": {"id": n, "data": {"image": image_uri(n)}}}  # fmt: skip


def fit_seconds(url: str) -> float:
    """Total of ``prelabel_fit_seconds`` over the workers so far."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^prelabel_fit_seconds_sum (\S+)$", text, flags=re.MULTILINE))


def run() -> list[Row]:
    """Seconds from the 51st annotation's webhook to the new version, and of the fit itself."""
    model = real_size_clip(cache_dir() / "clip-b32")
    setup = {"project": "1.1", "schema": CONFIG, "extra_params": {"classification": {"model_id": str(model)}}}
    with tempfile.TemporaryDirectory() as work, PrelabelServer(Path(work), {"PRELABEL_DEVICE": "cpu"}) as server:
        base = requests.post(f"{server.url}/setup", json=setup, timeout=30).json()["model_version"]

        def serving() -> str:
            return requests.post(f"{server.url}/setup", json=setup, timeout=30).json()["model_version"]

        for n in range(1, 51):
            requests.post(f"{server.url}/webhook", json=event(n), timeout=30).raise_for_status()
        deadline = time.monotonic() + 600
        while serving() != f"{base}-fit1":  # the first fit embeds all 50 images
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        before = fit_seconds(server.url)
        started = time.perf_counter()
        requests.post(f"{server.url}/webhook", json=event(51), timeout=30).raise_for_status()
        while serving() != f"{base}-fit2":
            assert time.perf_counter() - started < 120, server.log_tail()
            time.sleep(0.05)
        total = time.perf_counter() - started
        fit = fit_seconds(server.url) - before
    return [
        Row("L2", "webhook -> new version serving (51 images, 50 cached; CLIP B/32; debounce 3 s) / target", TARGET_S,
            total, total / TARGET_S, "<= 1"),
        Row("L2", "the fit itself (1 new embedding + head + artifact) / the whole wait", total, fit, fit / total,
            "the rest is the debounce"),
    ]  # fmt: skip
