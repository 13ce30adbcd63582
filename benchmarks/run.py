"""Print the benchmark table: ``python -m benchmarks.run [P1 P3 ...]`` (all rows by default)."""

from __future__ import annotations

import argparse
import importlib
import platform

from benchmarks.common import Row

ROWS = {
    "P1": "p1_predict_overhead",
    "P2": "p2_classification",
    "P3": "p3_detectors",
    "P4": "p4_sam_clicks",
    "P5": "p5_rle",
    "L1": "l1_learning_curve",
    "L2": "l2_fit_speed",
    "R1": "r1_refine",
    "P6": "p6_detic",
    "B1": "b1_bulk",
    "G1": "g1_generative",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", nargs="*", default=list(ROWS), help=f"rows to run (default: all of {list(ROWS)})")
    args = parser.parse_args()
    results: list[Row] = []
    for row in args.rows:
        module = importlib.import_module(f"benchmarks.{ROWS[row.upper()]}")
        results.extend(module.run())
    header = ["row", "what", "baseline", "prelabel", "ratio", "target"]
    table = [header, *(r.cells() for r in results)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print(f"\n{platform.processor() or platform.machine()}, {platform.python_version()}")
    for i, line in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
