"""A page opened in headless Chromium (Debian's ``chromium``): its DOM after parsing, and a screenshot's pixels.

``make test`` installs Chromium (``browser-tool``); without it these checks skip, or fail with ``PRELABEL_E2E=required``.
Each call starts its own Chromium with a throw-away profile and waits for it; nothing else is stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

__all__ = ["chromium", "colour_pixels", "open_page"]

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions")


def chromium() -> str:
    """The Chromium executable; skips the test when there is none (fails under ``PRELABEL_E2E=required``)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no headless browser: apt-get install chromium (make test does)"
        if os.environ.get("PRELABEL_E2E") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def open_page(html: str, workdir: Path, size_wh: tuple[int, int] = (1280, 2400)) -> tuple[str, np.ndarray]:
    """The page's DOM as Chromium serialises it, and a ``(H, W, 3)`` screenshot of its top ``size_wh``."""
    browser = chromium()
    page = workdir / "page.html"
    page.write_text(html, encoding="utf-8")
    shot = workdir / "page.png"
    with tempfile.TemporaryDirectory(dir=workdir) as profile:
        common = [browser, *_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        subprocess.run(
            [*common, f"--screenshot={shot}", f"--window-size={size_wh[0]},{size_wh[1]}", page.as_uri()],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    with Image.open(shot) as image:
        return dom, np.asarray(image.convert("RGB"))


def colour_pixels(pixels: np.ndarray, hex_colour: str, tolerance: int = 8) -> int:
    """How many pixels are ``hex_colour`` (``"#2e7d32"``), each channel within ``tolerance``."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - rgb).max(axis=-1) <= tolerance).sum())
