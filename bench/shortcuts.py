"""Does a recipe train the shortcut away? Each recipe as a 5-fold cross-validation on the
shipped folds, scored by the shortcut audit (engine.evaluation.shortcut_audit): pooled
out-of-fold accuracy and ROC AUC with group-bootstrap intervals, and the accuracy on the
images whose acquisition / intensity cues agree with the label ("aligned") and on those
where they point the wrong way ("conflicting"), with the gap between them.

    python bench/shortcuts.py                       # the screening recipes, 1 seed, 96 px
    python bench/shortcuts.py --seeds 1 2 --recipes baseline rebal
    python bench/shortcuts.py --table-only          # rescore finished folders, train nothing
    python bench/shortcuts.py --write-docs          # and replace the table in docs/benchmarks.md
    python bench/shortcuts.py --full --twin-model runs/v6_model --recipes v6-twins crop-aug-twins --seeds 42 2
                                                    # the finalists at full size on the twin-merged split
    python bench/shortcuts.py --full --split v9 --twin-model "" --twin-groups checkpoints/manifest.csv \
        --recipes v8-recipe crop-aug --seeds 42 2  # the same two on v9's split (its groups kept)
    python bench/shortcuts.py --full --split v14 --twin-model "" --twin-groups checkpoints/manifest.csv \
        --twin-pairs reviews/br35h_same_slice.csv --keep-split runs/cv5_v14/manifest.csv \
        --recipes crop-aug crop-aug-strong --seeds 42 2  # on the flip-aware split (v14's folds)

Every CV goes to runs/bench_shortcuts/<recipe>-s<seed>/ (a finished folder is reused, so
an interrupted benchmark continues). The screening size (96 px, 12 epochs, the shipped
recipe otherwise) is sized for 2 CPU cores: about 15 minutes per CV. ``--full`` trains the
finalists at the shipped size (128 px, 18 epochs) on the split that also merges the twins
of ``--twin-model`` (engine.training.twins): about 20 to 30 minutes per CV. The shipped
ensemble (checkpoints/, 128 px, 18 epochs) is scored from its own files as the first row.
Several seeds of a recipe are averaged (a seed alone moves a CV's errors by a quarter).
Every recipe states all of its settings on top of ``--shipped-recipe`` (V8: the head crop
and the intensity jitters off), so the table means the same whatever is shipped now.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine import layout, runs  # noqa: E402
from engine.data.cues import measure_cues  # noqa: E402
from engine.data.manifest import read_manifest  # noqa: E402
from engine.evaluation.shortcut_audit import write_audit  # noqa: E402

OUT = ROOT / "runs" / "bench_shortcuts"
# v8's recipe from --shipped-recipe, whatever the shipped recipe is now
V8 = ["--no-crop-to-head", "--resolution-jitter", "0", "--gamma", "0", "--contrast", "0"]
SCREENING = ["--shipped-recipe", *V8, "--image-size", "96", "--epochs", "12", "--folds", "5", "--skip-test"]
AUGMENT = ["--resolution-jitter", "0.5", "--gamma", "0.3", "--contrast", "0.2"]
RECIPES = {
    "baseline": [],
    "crop": ["--crop-to-head"],
    "rebal": ["--cue-rebalance"],
    "crop-aug": ["--crop-to-head", *AUGMENT],
    "crop-aug-rebal": ["--crop-to-head", *AUGMENT, "--cue-rebalance"],
}
FULL = ["--shipped-recipe", *V8, "--folds", "5", "--skip-test"]
FINALISTS = {  # trained with --full only: the shipped size, on the twin-merged split
    "v6-twins": [],
    "crop-aug-twins": ["--crop-to-head", *AUGMENT],
    "v8-recipe": [],  # the same two, named for --split v9
    "crop-aug": ["--crop-to-head", *AUGMENT],
    # against the intensity gap left on the flip-aware split (v14): stronger grey-level jitter
    "crop-aug-strong": ["--crop-to-head", "--resolution-jitter", "0.5", "--gamma", "0.6", "--contrast", "0.4",
                        "--brightness", "0.1"],
}
DESCRIPTIONS = {
    "baseline": "shipped recipe at screening size",
    "crop": "crop to the head box, pad square (aspect kept)",
    "rebal": "loss weights: label independent of the acquisition-cue score",
    "crop-aug": "crop + resolution jitter 0.5, gamma 0.3, contrast 0.2",
    "crop-aug-rebal": "crop + resolution jitter, gamma, contrast + cue rebalancing",
    "v6-twins": "the shipped recipe, 128 px, 18 epochs, twins merged",
    "crop-aug-twins": "crop + resolution jitter, gamma, contrast, 128 px, 18 epochs, twins merged",
    "v8-recipe": "v8's recipe, 128 px, 18 epochs",
    "crop-aug": "crop + resolution jitter, gamma, contrast, 128 px, 18 epochs",
    "crop-aug-strong": "crop + resolution jitter 0.5, gamma 0.6, contrast 0.4, brightness 0.1, 128 px, 18 epochs",
}
DOCS_HEADING = "## Does a recipe train the shortcut away? `bench/shortcuts.py`"
FULL_DOCS_HEADING = "## The finalists at full size, twins merged: `bench/shortcuts.py --full`"


def folder_of(name: str, seed: int, split: str = "") -> Path:
    return OUT / f"{name}{'-' + split if split else ''}-s{seed}"


def train(name: str, seed: int, twin_model: str | None = None, twin_groups: str = "",
          split: str = "", twin_pairs: str = "", keep_split: str = "") -> tuple[Path, float | None]:
    folder = folder_of(name, seed, split)
    if (folder / layout.CV_SUMMARY).exists():
        return folder, None
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    twins = (["--twin-model", twin_model] if twin_model else []) + (["--twin-groups", twin_groups] if twin_groups else [])
    twins += (["--twin-pairs", twin_pairs] if twin_pairs else []) + (["--keep-split", keep_split] if keep_split else [])
    size = [*FULL, *twins] if name in FINALISTS else SCREENING
    command = [sys.executable, "-m", "engine.cv", *size, "--init-seed", str(seed), *{**RECIPES, **FINALISTS}[name],
               "--run-dir", str(folder)]
    with open(folder.with_suffix(".log"), "w") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    return folder, time.time() - started


def score(folder: Path, cue_rows: dict) -> dict:
    """The audit of one CV folder (its own shortcuts.json if present, else written now
    from the shared cue measurements)."""
    report = runs.read_json(folder / layout.SHORTCUTS, None)
    if not report or "model" not in report:
        rows = [r for r in read_manifest(folder / layout.MANIFEST) if r.usable]
        report = write_audit(folder, rows, model_dir=folder,
                             cue_rows=[cue_rows.get(r.path) or {"path": r.path} for r in rows])
    status = runs.read_json(folder / layout.STATUS, {}) or {}
    minutes = (status["ended"] - status["started"]) / 60 if status.get("started") and status.get("ended") else None
    return figures(report, runs.read_json(folder / layout.CV_SUMMARY, {}), minutes)


def figures(report: dict, summary: dict, minutes: float | None) -> dict:
    """One table row's figures from a shortcuts.json with its model part and the CV's
    cv_summary.json."""
    oof = report["model"]["oof"]
    result = {"accuracy": oof["accuracy"], "auc": summary.get("pooled_oof_roc_auc")}
    for cue_set, sides in oof["by_set"].items():
        result[f"{cue_set}/aligned"] = sides["aligned"]["accuracy"]
        result[f"{cue_set}/conflicting"] = sides["conflicting"]["accuracy"]
        result[f"{cue_set}/gap"] = sides["gap"]
    seconds = summary.get("cv_training_wall_seconds")
    result["minutes"] = seconds / 60 if seconds else minutes
    return result


def _pct(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| recipe | seeds | OOF accuracy % | OOF ROC AUC | acquisition: aligned / conflicting (gap) | "
             "intensity: aligned / conflicting (gap) | minutes per CV |",
             "|---|---|---|---|---|---|---|"]
    for name, per_seed in results.items():
        mean = {k: float(np.mean([s[k] for s in per_seed if s.get(k) is not None]))
                if any(s.get(k) is not None for s in per_seed) else None for k in per_seed[0]}
        spread = ""
        if len(per_seed) > 1:
            spread = f" ± {100 * np.std([s['accuracy'] for s in per_seed], ddof=1):.1f}"
        cells = [f"{name} ({DESCRIPTIONS.get(name, 'shipped ensemble, 128 px, 18 epochs')})", str(len(per_seed)),
                 _pct(mean["accuracy"]) + spread, "–" if mean["auc"] is None else f"{mean['auc']:.4f}"]
        for cue_set in ("acquisition", "intensity"):
            cells.append(f"{_pct(mean[f'{cue_set}/aligned'])} / {_pct(mean[f'{cue_set}/conflicting'])} "
                         f"({_pct(mean[f'{cue_set}/gap'])})")
        cells.append("–" if mean.get("minutes") is None else f"{mean['minutes']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(text: str, command: str, heading: str = DOCS_HEADING) -> None:
    docs = ROOT / "docs" / "benchmarks.md"
    body = docs.read_text()
    section = (f"{heading}\n\n`{command}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores. "
               "Out-of-fold figures of 5-fold CVs on the shipped folds (with --full: on the split "
               "the command names: twins merged, groups or folds kept); each image at its fold's "
               "cross-fitted threshold. Aligned / conflicting: accuracy where the cue set's "
               "out-of-fold decision agrees with the label / points the wrong way; gap in points. "
               "Several seeds: mean (± std of accuracy over seeds).\n\n" + text + "\n")
    if heading in body:
        start = body.index(heading)
        end = body.find("\n## ", start + len(heading))
        body = body[:start] + section + (body[end + 1:] if end != -1 else "")
    else:
        body = body.rstrip() + "\n\n" + section
    docs.write_text(body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=None, choices=[*RECIPES, *FINALISTS],
                        help="default: the screening recipes, or with --full the finalists")
    parser.add_argument("--full", action="store_true", help="the finalists at the shipped size, twins merged")
    parser.add_argument("--twin-model", default="checkpoints",
                        help="with --full: the model whose twins are merged (the table's runs: v6, the model "
                             "shipped before them)")
    parser.add_argument("--twin-groups", default="", help="with --full: keep the groups of this manifest "
                        "(engine.training.twins.kept_groups), e.g. the shipped model's own split")
    parser.add_argument("--twin-pairs", default="", help="with --full: pairs a person confirmed to be one slice "
                        "(e.g. reviews/br35h_same_slice.csv)")
    parser.add_argument("--keep-split", default="", help="with --full: freeze this manifest's test split and folds "
                        "(every recipe and seed on the same folds)")
    parser.add_argument("--split", default="", help="a name for the split, put in the CV folders' names "
                        "(runs/bench_shortcuts/<recipe>-<split>-s<seed>)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--table-only", action="store_true", help="score finished folders only")
    parser.add_argument("--write-docs", action="store_true", help="replace the table in docs/benchmarks.md")
    parser.add_argument("--no-shipped", action="store_true", help="leave out the shipped ensemble's row")
    args = parser.parse_args(argv)
    args.recipes = args.recipes or list(FINALISTS if args.full else RECIPES)
    shipped_rows = [r for r in read_manifest(ROOT / "checkpoints" / layout.MANIFEST) if r.usable]
    started = time.time()
    cue_rows = {c["path"]: c for c in measure_cues([r.path for r in shipped_rows])}
    print(f"cues of {len(cue_rows)} images measured in {time.time() - started:.0f} s", flush=True)
    results: dict[str, list[dict]] = {}
    if not args.no_shipped:
        shipped_out = OUT / "shipped"
        write_audit(shipped_out, shipped_rows, model_dir=ROOT / "checkpoints",
                    cue_rows=[cue_rows[r.path] for r in shipped_rows])
        report = runs.read_json(shipped_out / layout.SHORTCUTS, {})
        card = runs.read_json(ROOT / "checkpoints" / layout.MODEL_CARD, {}) or {}
        wall = card.get("cv_training_wall_seconds")
        results["shipped"] = [figures(report, runs.read_json(ROOT / "checkpoints" / layout.CV_SUMMARY, {}),
                                      wall / 60 if wall else None)]
    for name in args.recipes:
        for seed in args.seeds:
            folder = folder_of(name, seed, args.split)
            if not args.table_only:
                folder, seconds = train(name, seed, args.twin_model, args.twin_groups, args.split,
                                        args.twin_pairs, args.keep_split)
                if seconds:
                    print(f"{name} seed {seed}: trained in {seconds / 60:.1f} min", flush=True)
            if not (folder / layout.CV_SUMMARY).exists():
                print(f"{name} seed {seed}: no finished CV in {folder}", flush=True)
                continue
            results.setdefault(name, []).append(score(folder, cue_rows))
    text = table(results)
    print(text)
    if args.write_docs:
        write_docs(text, "python bench/shortcuts.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                   (FULL_DOCS_HEADING + (f" ({args.split} split)" if args.split else "")) if args.full
                   else DOCS_HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
