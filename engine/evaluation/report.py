"""A study as one self-contained HTML file: ``python -m engine.report DIR --out R.html``.

DIR is a run folder, a cross-validation folder or ``checkpoints``. The file holds the
model card figures, the data summary and data health, the per-fold table with mean ±
std, the test split as labelled (and with reviewed labels when a review file is given),
ROC, precision-recall, calibration and confusion figures as inline SVG, the most
confident errors and the flagged labels as inline thumbnails, the configuration and the
environment. No script, font, stylesheet or image is fetched: it opens offline, and can
be attached to a paper or a ticket. Reads the folder's files only; no TensorFlow.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image

from engine import layout, runs
from engine.data.cues import cue_label
from engine.data.imageio import ImageDecodeError, decode_path
from engine.data.sources import relocate
from engine.evaluation.intervals import format_with_ci
from engine.evaluation.review import read_review
from engine.files import atomic_open

_STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{background:#fff4e5;border:1px solid
#f0b86e;padding:.6em 1em}.figs{display:flex;flex-wrap:wrap;gap:1em}.thumbs{display:flex;flex-wrap:wrap;gap:.6em}
.thumb{width:150px;font-size:.75em;word-break:break-all}.thumb img{width:150px;height:150px;object-fit:contain;
background:#000}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}"""


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value, percent: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return f"{100 * value:.1f}%" if percent else f"{value:.4f}"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def line_chart(title: str, xs, ys, x_label: str, y_label: str, diagonal: bool = False,
               size: int = 260) -> str:
    """An inline SVG line chart on [0, 1] x [0, 1]."""
    pad = 36
    inner = size - 2 * pad

    def point(x, y):
        return f"{pad + inner * float(x):.1f},{pad + inner * (1 - float(y)):.1f}"
    path = " ".join(point(x, y) for x, y in zip(xs, ys))
    ticks = "".join(
        f'<text x="{pad + inner * t:.0f}" y="{size - pad + 14}" font-size="9" text-anchor="middle">{t:g}</text>'
        f'<text x="{pad - 6}" y="{pad + inner * (1 - t) + 3:.0f}" font-size="9" text-anchor="end">{t:g}</text>'
        for t in (0, 0.5, 1))
    guide = (f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" stroke="#bbb" '
             'stroke-dasharray="4 3"/>' if diagonal else "")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
            f'aria-label="{_e(title)}"><rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" '
            f'stroke="#999"/>{guide}<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
            f'<text x="{size / 2}" y="16" font-size="12" text-anchor="middle">{_e(title)}</text>{ticks}'
            f'<text x="{size / 2}" y="{size - 4}" font-size="10" text-anchor="middle">{_e(x_label)}</text>'
            f'<text x="10" y="{size / 2}" font-size="10" text-anchor="middle" transform="rotate(-90 10 {size / 2})">'
            f'{_e(y_label)}</text></svg>')


def confusion_svg(cm: dict, size: int = 260) -> str:
    cells = [("tn", 0, 0), ("fp", 1, 0), ("fn", 0, 1), ("tp", 1, 1)]
    top = max(1, max(cm.values()))
    pad, cell = 60, (size - 80) / 2
    parts = []
    for key, col, row in cells:
        shade = int(235 - 150 * cm[key] / top)
        parts.append(f'<rect x="{pad + col * cell:.0f}" y="{30 + row * cell:.0f}" width="{cell:.0f}" '
                     f'height="{cell:.0f}" fill="rgb({shade},{shade},255)" stroke="#fff"/>'
                     f'<text x="{pad + (col + .5) * cell:.0f}" y="{30 + (row + .5) * cell + 5:.0f}" '
                     f'font-size="16" text-anchor="middle">{cm[key]}</text>')
    labels = (f'<text x="{pad + cell / 2:.0f}" y="{size - 8}" font-size="10" text-anchor="middle">pred. no tumor</text>'
              f'<text x="{pad + 1.5 * cell:.0f}" y="{size - 8}" font-size="10" text-anchor="middle">pred. tumor</text>'
              f'<text x="4" y="{30 + cell / 2:.0f}" font-size="10">no tumor</text>'
              f'<text x="4" y="{30 + 1.5 * cell:.0f}" font-size="10">tumor</text>'
              f'<text x="{size / 2}" y="16" font-size="12" text-anchor="middle">Confusion matrix</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
            f'aria-label="Confusion matrix">{"".join(parts)}{labels}</svg>')


def _thumbnail(path: str, side: int = 150) -> str | None:
    try:
        image = Image.fromarray(decode_path(path))
    except (ImageDecodeError, OSError):
        return None
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _thumbs(items: list[tuple[str, str]]) -> str:
    cards = []
    for path, caption in items:
        uri = _thumbnail(path)
        image = f'<img src="{uri}" alt="{_e(Path(path).name)}">' if uri else "<div>(not readable here)</div>"
        cards.append(f'<div class="thumb">{image}<div>{_e(caption)}</div></div>')
    return f'<div class="thumbs">{"".join(cards)}</div>'


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def build_report(folder: str | Path, label_review: str | None = None, thumbnails: int = 12) -> str:
    """The HTML text of the report on ``folder``."""
    folder = Path(folder)
    info = runs.read_json(folder / layout.MODEL_INFO, {}) or {}
    card = runs.read_json(folder / layout.MODEL_CARD, {}) or {}
    config = runs.read_config_file(folder)
    summary = runs.read_json(folder / layout.DATA_SUMMARY, {}) or {}
    health = runs.read_json(folder / layout.DATA_HEALTH, {}) or {}
    cv = runs.read_json(folder / layout.CV_SUMMARY, {}) or {}
    test = runs.read_json(folder / layout.evaluation("test"), {}) or {}
    name = "the shipped model" if folder.resolve() == runs.SHIPPED_MODEL_DIR.resolve() else folder.name
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Report: {_e(name)}</title>"
           f"<style>{_STYLE}</style></head><body>",
           f"<h1>Brain-tumor classifier: report on {_e(name)}</h1>",
           '<p class="note"><b>Research software, not a medical device.</b> Its predictions are not a '
           "diagnosis and must not be used for patient care.</p>",
           f"<p>Written {_e(time.strftime('%Y-%m-%d %H:%M %Z'))} from the folder <code>{_e(folder.name)}</code>. "
           "Intervals are 95% group-bootstrap percentile intervals: duplicate groups (patients where "
           "known) are resampled, not images.</p>"]
    out.append("<h2>Model</h2>" + _table(["", ""], [
        ["network", _e(f"{info.get('preset', '?')} width {info.get('width', '?')}")],
        ["input", _e(f"{info.get('image_size', '?')} px, crop to head: {info.get('crop_to_head', False)}")],
        ["ensemble members", _e(info.get("members", 1))],
        ["threshold / temperature", _e(f"{info.get('threshold', 0.5):.3f} / {info.get('temperature', 1.0):.2f}")],
        ["calibrated on", _e(info.get("calibrated_on", "?"))]] + _card_rows(card)))
    if summary or health:
        rows = [[_e(k), _e(v)] for k, v in (
            ("images", summary.get("images")), ("duplicate groups", summary.get("groups")),
            ("largest group", summary.get("largest_group")),
            ("val images with a copy in train, random split", _fmt((summary.get("leak_if_random_split") or {}).get("val"), True)),
            ("val images with a copy in train, this split", _fmt((summary.get("leak_in_this_split") or {}).get("val"), True)))]
        out.append("<h2>Data</h2>" + _table(["", ""], rows))
        if summary.get("splits"):
            out.append(_table(["split", "images", "groups", "tumor", "no tumor"],
                              [[s, v["images"], v["groups"], v["tumor"], v["no_tumor"]]
                               for s, v in summary["splits"].items()]))
        if health:
            out.append("<h3>Data health</h3>" + _table(
                ["issue", "images"], [[_e(k), v] for k, v in health.get("issues", {}).items()]))
    if cv:
        folds = cv.get("folds", [])
        keys = ("accuracy", "roc_auc", "sensitivity", "specificity")
        rows = [[f["fold"], f["images"]] + [_fmt(f.get(k), k != "roc_auc") for k in keys] for f in folds]
        rows.append(["<b>mean ± std</b>", ""] + [
            f"<b>{_fmt(cv['mean'].get(k), k != 'roc_auc')} ± {_fmt(cv['std'].get(k), k != 'roc_auc')}</b>"
            for k in keys])
        pooled = cv.get("pooled")
        if pooled:
            ci = pooled.get("ci") or {}
            rows.append(["<b>all pooled (95% interval)</b>", pooled["images"]] + [
                _e(format_with_ci(pooled.get(k), ci.get(k), percent=k != "roc_auc")) for k in keys])
        out.append(f"<h2>Cross-validation ({cv.get('folds_count')} folds)</h2>"
                   + _table(["fold", "images", "accuracy", "ROC AUC", "sensitivity", "specificity"], rows))
    if test:
        cm = test["confusion_matrix"]
        keys = ("count", "accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc", "brier", "ece")
        rows = [["as labelled"] + [_fmt(test.get(k), k in ("accuracy", "sensitivity", "specificity")) for k in keys]]
        predictions = _read_csv(folder / layout.predictions("test"))
        if label_review and predictions:
            from engine.evaluation.evaluate import rescored_with_review
            reviewed = rescored_with_review([p["path"] for p in predictions], [int(p["label"]) for p in predictions],
                                            [float(p["probability"]) for p in predictions],
                                            float(test["threshold"]), read_review(label_review))
            rows.append(["with reviewed labels"] + [_fmt(reviewed.get(k), k in ("accuracy", "sensitivity", "specificity"))
                                                    for k in keys])
        ci = test.get("ci") or {}
        if ci:
            rows.append(["95% interval", ""] + [_e(format_with_ci(test.get(k), ci.get(k), percent=k != "roc_auc")) if ci.get(k)
                                                else "" for k in keys[1:]])
        bands = test.get("calibration_bands")
        if bands:
            rows.append(["calibration, 95% interval", "", "", "", "", "", "",
                         _e(format_with_ci(bands["brier"], bands["brier_ci"], percent=False)),
                         _e(format_with_ci(bands["ece"], bands["ece_ci"], percent=False))])
        out.append("<h2>Fixed test split</h2>" + _table(
            ["", "images", "accuracy", "sensitivity", "specificity", "ROC AUC", "PR AUC", "Brier", "ECE"], rows))
        curves = test.get("curves") or {}
        figures = [confusion_svg(cm)]
        if curves:
            figures.append(line_chart(f"ROC (AUC {test['roc_auc']:.3f})", curves["roc"]["fpr"], curves["roc"]["tpr"],
                                      "1 - specificity", "sensitivity", diagonal=True))
            figures.append(line_chart(f"Precision-recall (AP {test['pr_auc']:.3f})", curves["pr"]["recall"],
                                      curves["pr"]["precision"], "recall", "precision"))
            figures.append(line_chart("Calibration", curves["calibration"]["mean_predicted"],
                                      curves["calibration"]["fraction_positive"], "mean predicted",
                                      "fraction tumor", diagonal=True))
        out.append(f'<div class="figs">{"".join(figures)}</div>')
        wrong = [p for p in predictions if p.get("predicted") not in (None, "") and int(p["predicted"]) != int(p["label"])]
        wrong.sort(key=lambda p: -abs(float(p["probability"]) - float(test["threshold"])))
        if wrong:
            out.append(f"<h3>Most confident errors ({min(thumbnails, len(wrong))} of {len(wrong)})</h3>" + _thumbs(
                [(relocate(p["path"]), f"{Path(p['path']).name}: labelled {'tumor' if int(p['label']) else 'no tumor'}, "
                  f"p(tumor) {float(p['probability']):.3f}") for p in wrong[:thumbnails]]))
    out.extend(_refer_section(info.get("refer_band"), test.get("refer"), test.get("prediction_sets")))
    out.extend(_shortcut_section(runs.read_json(folder / layout.SHORTCUTS, None)))
    flagged = [r for r in _read_csv(folder / layout.LABEL_ISSUES) if r.get("flagged") == "True"]
    if flagged:
        out.append(f"<h2>Flagged labels ({min(thumbnails, len(flagged))} of {len(flagged)})</h2>"
                   "<p>Confident learning on out-of-fold probabilities; a reviewer decides.</p>" + _thumbs(
                       [(relocate(r["path"]), f"{Path(r['path']).name}: labelled {'tumor' if r['label'] == '1' else 'no tumor'}, "
                         f"score {float(r['score']):.3f}, group {r['group']}") for r in flagged[:thumbnails]]))
    environment = {"python": platform.python_version(), "platform": platform.platform(),
                   "machine": platform.machine()}
    try:
        environment.update({pkg: version(pkg) for pkg in ("numpy", "scikit-learn", "streamlit")})
        environment["tensorflow"] = next((version(p) for p in ("tensorflow-cpu", "tensorflow") if _installed(p)), "?")
    except Exception:  # noqa: BLE001 - the environment is informative only
        pass
    out.append("<h2>Configuration</h2><pre>" + _e(json.dumps(config, indent=2, sort_keys=True)) + "</pre>")
    out.append("<h2>Environment</h2>" + _table(["", ""], [[_e(k), _e(v)] for k, v in environment.items()]))
    out.append("</body></html>")
    return "\n".join(out)


CARD_ROWS = (("cv_dir", "cross-validation", None), ("folds", "folds", None),
             ("test_count", "test images", None), ("cv_training_wall_seconds", "training time (minutes)", 60))


def _card_rows(card: dict) -> list[list[str]]:
    """The model card's figures a reader needs, named and rounded (the rest is in the
    JSON file)."""
    rows = []
    for key, label, divide in CARD_ROWS:
        if card.get(key) is not None:
            value = card[key] / divide if divide else card[key]
            rows.append([_e(label), _e(f"{value:.1f}" if isinstance(value, float) else value)])
    return rows


def _refer_section(band: dict | None, scored: dict | None, sets: dict | None) -> list[str]:
    """The stored refer band and conformal sets, and what they did on the test split."""
    if not band:
        return []
    rows = [["band", _e(f"no verdict within a logit distance of {band['margin']:.2f} of the threshold"),
             _e(f"chosen on {band.get('calibrated_on', 'calibration data')} ({band.get('rule', '')})")]]
    if scored:
        ci = scored.get("ci") or {}
        rows.append(["test: answered", _e(f"{scored['answered']} of {scored['images']} "
                                          f"({format_with_ci(scored['coverage'], scored.get('coverage_ci'))})"),
                     _e(f"accuracy on them {format_with_ci(scored['accuracy'], ci.get('accuracy'))}")])
    if sets and sets.get("per_class"):
        coverage = ", ".join(f"{name.replace('_', ' ')} {format_with_ci(c['coverage'], c.get('coverage_ci'))}"
                             for name, c in sets["per_class"].items())
        rows.append(["conformal sets", _e(f"alpha {sets['alpha']}: both classes for "
                                          f"{100 * sets['both']:.1f}% of test images"),
                     _e(f"coverage per class: {coverage}")])
    curve = (scored or {}).get("risk_coverage")
    figure = ""
    if curve:
        points = curve["curve"]
        figure = '<div class="figs">' + line_chart(
            f"Risk-coverage on the test split (AURC {curve['aurc']:.4f})", [q["coverage"] for q in points],
            [q["accuracy"] for q in points], "share answered", "accuracy on the answered") + "</div>"
    return ["<h2>When to refer</h2>", _table(["", "", ""], rows), figure]


def _shortcut_section(report: dict | None) -> list[str]:
    """The shortcut audit: each cue set's AUC, the model on aligned and conflicting
    images, and the per-slice table (engine.evaluation.shortcut_audit)."""
    if not report:
        return []
    out = ["<h2>Shortcuts: can the label be read without the brain?</h2>", _table(
        ["cue set", "out-of-fold ROC AUC (95% interval)", "strongest cues", "meaning"],
        [[_e(name), _e(format_with_ci(e.get("auc"), e.get("auc_ci"), percent=False)),
          _e(", ".join(c["label"] for c in e.get("top_cues", [])[:3])), _e(e.get("words", ""))]
         for name, e in report["cue_sets"].items()])]
    for kind, part in (report.get("model") or {}).items():
        out.append(f"<h3>The model where the cues agree and where they mislead ({_e(part['source'])})</h3>")
        out.append(_table(["cue set", "aligned images", "aligned accuracy", "conflicting images",
                           "conflicting accuracy", "gap (points)"],
                          [[_e(name), s["aligned"]["count"], _e(format_with_ci(s["aligned"]["accuracy"], s["aligned"]["accuracy_ci"])),
                            s["conflicting"]["count"],
                            _e(format_with_ci(s["conflicting"]["accuracy"], s["conflicting"]["accuracy_ci"])),
                            "—" if s["gap"] is None else f"{100 * s['gap']:+.1f}"]
                           for name, s in part["by_set"].items()]))
        if part.get("slices"):
            out.append("<p>Per-slice results, worst first:</p>" + _table(
                ["by", "bin", "images", "accuracy", "sensitivity", "specificity"],
                [[_e(cue_label(r.get("column"), r.get("label"))), _e(r["bin"]), r["count"],
                  _e(format_with_ci(r["accuracy"], r["ci"]["accuracy"])),
                  _e(format_with_ci(r["sensitivity"], r["ci"]["sensitivity"])),
                  _e(format_with_ci(r["specificity"], r["ci"]["specificity"]))] for r in part["slices"]]))
    return out


def _installed(package: str) -> bool:
    try:
        version(package)
        return True
    except PackageNotFoundError:
        return False


def write_report(folder: str | Path, out: str | Path, label_review: str | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as handle:
        handle.write(build_report(folder, label_review))
    return out
