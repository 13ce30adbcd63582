"""Load adapter families from one site directory only; run as ``python -I -S tests/load_families.py SPEC``.

``SPEC`` is JSON ``{"site": dir, "root": repo root, "models": {family: model_id}}``. ``-I -S`` keeps the caller's
site-packages, user site and ``PYTHON*`` variables out, so only ``site`` and the repository are importable: what a
user's ``pip install ".[extra]"`` provides. Each family goes through its real ``load()`` and one call; the last
line printed is a JSON report (other libraries may print before it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

REPORT_PREFIX = "REPORT "
# Installed by the test extra only: finding any of them means the isolation leaked.
TEST_ONLY = ("pytest", "hypothesis", "ruff")


def _load_and_call(family: str, model_id: str) -> str:
    """Load ``family`` from ``model_id`` on the CPU and run it once; a short description of the answer."""
    import numpy as np

    from model_adapters.base import ModelSpec, Query, make_params
    from model_adapters.registry import resolve_adapter
    from model_adapters.segmentation import MaskPrompt, PromptableSegmenter

    cls, _ = resolve_adapter(family)
    adapter = cls(ModelSpec(family, model_id, device="cpu"))
    adapter.load()
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    if isinstance(adapter, PromptableSegmenter):
        answer = adapter.segment(image, MaskPrompt(boxes=((2.0, 2.0, 20.0, 20.0),)))
        assert answer.mask is not None and answer.mask.shape == (1, 48, 64), answer
    elif not adapter.zero_shot:  # an embedder for learned heads
        embeddings = adapter.embed([image])
        assert embeddings.shape[0] == 1 and abs(float((embeddings**2).sum()) - 1.0) < 1e-4, embeddings.shape
        return f"ok (embedding of {embeddings.shape[1]})"
    else:
        (answer,) = adapter([image], Query(("a cat", "a remote"), make_params(cls.Params, {}, owner=family)))
    return f"ok ({len(answer)} regions)"


def main(spec: dict[str, Any]) -> dict[str, Any]:
    """Put ``site`` and the repository first on ``sys.path``, then load every family of ``spec["models"]``."""
    sys.path[:0] = [spec["site"], spec["root"]]
    import importlib.util

    leaked = [name for name in TEST_ONLY if importlib.util.find_spec(name) is not None]
    results: dict[str, str] = {}
    for family, model_id in spec["models"].items():
        try:
            results[family] = _load_and_call(family, model_id)
        except Exception as exc:  # each family reports, so one failure does not hide the others
            results[family] = f"{type(exc).__name__}: {exc}"
    torch = sys.modules.get("torch")
    return {"sys_path": sys.path, "leaked": leaked, "torch_file": getattr(torch, "__file__", None), "results": results}


if __name__ == "__main__":
    print(REPORT_PREFIX + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
