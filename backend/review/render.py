"""A review report (``backend.review.metrics``) -> the text table ``prelabel report`` prints, and the HTML page.

The page is one self-contained document (inline CSS and SVG, no scripts): per-label precision and recall bars, a
shaded confusion matrix per ``Choices`` control, the score histogram of accepted vs corrected objects and a threshold
curve per label (``backend.review.figures``), agreement per annotator, the model versions reviewed so far, and the
tasks the model disagrees with most, each a link into Label Studio.
"""

from __future__ import annotations

from html import escape
from typing import Any

from backend.review.figures import ACCEPTED, CORRECTED, histogram_svg, threshold_svg

__all__ = ["report_html", "report_table"]

_LABEL_COLUMNS = ("control", "label", "kind", "predicted", "annotated", "matched", "precision", "recall", "mean IoU")
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1b1b1b;max-width:80em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}.muted{color:#666}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}svg text{font:11px sans-serif}
.cm td{text-align:center;min-width:3em;border:1px solid #ddd}figure{display:inline-block;margin:0 1em 1em 0}
"""
_PRECISION, _RECALL = "#1565c0", "#ef6c00"


def report_table(report: dict[str, Any]) -> str:
    """The report as aligned text: a summary line, one row per label, each confusion matrix, each annotator."""
    lines = [_summary(report)]
    rows = [
        (r["control"], r["label"], r["kind"], str(r["predicted"]), str(r["annotated"]), str(r["matched"]),
         _num(r["precision"]), _num(r["recall"]), _num(r["mean_iou"]))
        for r in report["labels"]
    ]  # fmt: skip
    lines += ["", *_aligned(_LABEL_COLUMNS, rows)] if rows else []
    for choice in report["choices"]:
        lines += ["", f"{choice['control']}: accuracy {_num(choice['accuracy'])} "
                      f"({choice['correct']} of {choice['compared']}); rows annotated, columns predicted"]  # fmt: skip
        matrix = [(a, *map(str, counts)) for a, counts in zip(choice["annotated"], choice["matrix"], strict=True)]
        lines += _aligned(("", *choice["predicted"]), matrix)
    people = [(p["annotator"], str(p["annotations"]), _num(p["agreement"]), _percent(p["unchanged"]))
              for p in report["annotators"]]  # fmt: skip
    if people:
        lines += ["", *_aligned(("annotator", "annotations", "agreement", "unchanged"), people)]
    history = [(r["model_version"], r["last"], str(r["annotations"]), _num(r["agreement"]), _percent(r["unchanged"]),
                _num(r["precision"]), _num(r["recall"])) for r in report.get("history") or []]  # fmt: skip
    if history:
        header = ("model version", "last reviewed", "annotations", "agreement", "unchanged", "precision", "recall")
        lines += ["", *_aligned(header, history)]
    if report["disagreements"]:
        lines += ["", "the model disagrees most with:"]
        lines += [f"  task {d['task']} ({d['annotator']}): agreement {d['agreement']:.2f}  {d['url']}"
                  for d in report["disagreements"]]  # fmt: skip
    return "\n".join(lines)


def report_html(report: dict[str, Any]) -> str:
    """The report as a page a reviewer reads."""
    title = f"prelabel review: project {report['project']}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{_STYLE}</style>",
        f"</head><body><h1>{escape(title)}</h1><p>{escape(_summary(report))}</p>",
        "<h2>Per label</h2>",
        _labels_html(report["labels"]),
        *(_choice_html(choice) for choice in report["choices"]),
        _figures_html(report),
        "<h2>Per annotator</h2>",
        _annotators_html(report["annotators"]),
        _history_html(report.get("history") or []),
        "<h2>Where the model disagrees most</h2>",
        _disagreements_html(report["disagreements"]),
        "</body></html>",
    ]
    return "".join(parts)


def _figures_html(report: dict[str, Any]) -> str:
    if not report["threshold_curves"]:
        return ""
    return (
        "<h2>Scores of accepted and corrected objects</h2>"
        f"<figure class='histogram'>{histogram_svg(report['score_histogram'])}<figcaption class='muted'>"
        f"<span style='color:{ACCEPTED}'>&#9632;</span> accepted (kept by the annotator) "
        f"<span style='color:{CORRECTED}'>&#9632;</span> corrected (deleted or changed)</figcaption></figure>"
        "<h2>F1 against the score threshold</h2>"
        + "".join(f"<figure class='curve'>{threshold_svg(curve)}</figure>" for curve in report["threshold_curves"])
        + "<p class='muted'>solid: F1; dashed: precision (blue) and recall (orange); vertical line: the project's "
        "threshold</p>"
    )


def _summary(report: dict[str, Any]) -> str:
    version = report["model_version"] or "the prediction each annotator started from"
    skipped = report["skipped"]
    left_out = [f"{skipped['no_prediction']} without a prediction of that version"] if skipped["no_prediction"] else []
    left_out += [f"{skipped['cancelled']} skipped by the annotator"] if skipped["cancelled"] else []
    left_out += [f"{skipped['unreadable']} unreadable"] if skipped["unreadable"] else []
    text = (
        f"project {report['project']}, model version {version}: {report['annotations']} annotations of "
        f"{report['tasks']} tasks compared; agreement {_num(report['agreement'])}, "
        f"predictions accepted unchanged {_percent(report['unchanged'])}"
    )
    return text + (f" (left out: {', '.join(left_out)})" if left_out else "")


def _labels_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class='muted'>nothing compared yet: annotate tasks that have predictions</p>"
    head = "".join(f"<th>{c}</th>" for c in _LABEL_COLUMNS[:6])
    out = [f"<table><tr>{head}<th>precision / recall</th><th>mean IoU</th></tr>"]
    for r in rows:
        cells = [escape(r["control"]), escape(r["label"]), r["kind"]]
        out.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in cells)
            + "".join(f"<td class='n'>{r[k]}</td>" for k in ("predicted", "annotated", "matched"))
            + f"<td>{_bars(r['precision'], r['recall'])}</td><td class='n'>{_num(r['mean_iou'])}</td></tr>"
        )  # fmt: skip
    out.append(
        f"</table><p class='muted'><span style='color:{_PRECISION}'>&#9632;</span> precision "
        f"<span style='color:{_RECALL}'>&#9632;</span> recall</p>"
    )
    return "".join(out)


def _bars(precision: float | None, recall: float | None) -> str:
    """Two horizontal bars on a 0-1 scale, 200 px wide, each with its value written after it."""
    rows = []
    for y, value, colour, name in ((2, precision, _PRECISION, "precision"), (18, recall, _RECALL, "recall")):
        width = 0 if value is None else round(200 * value)
        rows.append(
            f"<rect class='{name}' x='0' y='{y}' width='{width}' height='12' fill='{colour}'/>"
            f"<text x='{width + 4}' y='{y + 10}'>{_num(value)}</text>"
        )
    return f"<svg width='250' height='32' role='img' aria-label='precision and recall'>{''.join(rows)}</svg>"


def _choice_html(choice: dict[str, Any]) -> str:
    top = max((n for row in choice["matrix"] for n in row), default=0) or 1
    head = "".join(f"<th>{escape(p)}</th>" for p in choice["predicted"])
    rows = []
    for answer, counts in zip(choice["annotated"], choice["matrix"], strict=True):
        cells = "".join(
            f"<td style='background:rgba(21,101,192,{n / top:.2f});color:{'#fff' if n / top > 0.5 else '#1b1b1b'}'>"
            f"{n}</td>"
            for n in counts
        )
        rows.append(f"<tr><th>{escape(answer)}</th>{cells}</tr>")
    return (
        f"<h2>{escape(choice['control'])}: accuracy {_num(choice['accuracy'])} "
        f"({choice['correct']} of {choice['compared']})</h2>"
        f"<table class='cm'><tr><th>annotated \\ predicted</th>{head}</tr>{''.join(rows)}</table>"
    )


def _annotators_html(people: list[dict[str, Any]]) -> str:
    if not people:
        return "<p class='muted'>no annotations compared</p>"
    rows = "".join(
        f"<tr><td>{escape(p['annotator'])}</td><td class='n'>{p['annotations']}</td>"
        f"<td>{_bar(p['agreement'])}</td><td class='n'>{_percent(p['unchanged'])}</td></tr>"
        for p in people
    )
    return f"<table><tr><th>annotator</th><th>annotations</th><th>agreement</th><th>unchanged</th></tr>{rows}</table>"


def _bar(value: float | None) -> str:
    width = 0 if value is None else round(200 * value)
    return (
        f"<svg width='250' height='16' role='img' aria-label='agreement'><rect x='0' y='2' width='{width}' "
        f"height='12' fill='{_PRECISION}'/><text x='{width + 4}' y='12'>{_num(value)}</text></svg>"
    )


def _history_html(rows: list[dict[str, Any]]) -> str:
    """The model versions reviewed so far, each with its newest numbers."""
    if not rows:
        return ""
    head = "".join(
        f"<th>{c}</th>"
        for c in ("model version", "last reviewed", "annotations", "agreement", "unchanged", "precision", "recall")
    )
    body = "".join(
        f"<tr><td>{escape(r['model_version'])}</td><td>{escape(r['last'])}</td><td class='n'>{r['annotations']}</td>"
        f"<td>{_bar(r['agreement'])}</td><td class='n'>{_percent(r['unchanged'])}</td>"
        f"<td class='n'>{_num(r['precision'])}</td><td class='n'>{_num(r['recall'])}</td></tr>"
        for r in rows
    )
    return f"<h2>Model versions reviewed</h2><table class='history'><tr>{head}</tr>{body}</table>"


def _disagreements_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class='muted'>none: every compared annotation agrees with the model</p>"
    items = "".join(
        f"<tr><td><a href='{escape(d['url'], quote=True)}'>task {d['task']}</a></td><td>{escape(d['annotator'])}</td>"
        f"<td class='n'>{d['agreement']:.2f}</td></tr>"
        for d in rows
    )
    return f"<table><tr><th>task</th><th>annotator</th><th>agreement</th></tr>{items}</table>"


def _aligned(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"
