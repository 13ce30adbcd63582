"""The HTML review report opened in headless Chromium: the figures are in the parsed page and drawn on screen.

The report is the constructed two-task case of ``tests/backend/review/test_curves.py`` (two accepted and two
corrected boxes, a calibrated threshold at 0.45), so the pixels each figure paints are known in advance.
"""

from __future__ import annotations

from pathlib import Path

from backend.review.figures import ACCEPTED, CORRECTED, PLOT_H, PLOT_W, THRESHOLD
from backend.review.render import report_html
from tests.backend.review.test_curves import report
from tests.e2e.browser import colour_pixels, open_page


def test_figures_are_parsed_and_painted(tmp_path: Path) -> None:
    page = report_html(report({("label", "Car"): {"threshold": 0.45, "source": "calibrated"}}))
    dom, pixels = open_page(page, tmp_path)
    assert dom.count('<figure class="histogram">') == 1 and dom.count('<figure class="curve">') == 1
    for drawn in ('<polyline class="f1"', '<polyline class="precision"', '<line class="threshold"'):
        assert drawn in dom
    assert pixels.std() > 10  # not a blank page
    # two full-height bars of each kind: 14 px wide (300 px / 10 bins / 2 - 1) x 120 px; edges may blend
    bar = (PLOT_W / 10 / 2 - 1) * PLOT_H
    assert 2 * bar * 0.9 <= colour_pixels(pixels, ACCEPTED) <= 2 * bar * 1.1 + 400  # + the legend's square
    assert 2 * bar * 0.9 <= colour_pixels(pixels, CORRECTED) <= 2 * bar * 1.1 + 400
    assert colour_pixels(pixels, THRESHOLD) >= 2 * PLOT_H * 0.9  # the 2 px line (and its label)
