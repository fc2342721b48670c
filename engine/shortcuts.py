"""``python -m engine.shortcuts (--data-dir DIR | --manifest FILE) [--model DIR] --out DIR``:
can the label be read without the brain? The shortcut audit of a data set, and of a
model on it, parsed here and written by engine.evaluation.shortcut_audit.write_audit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import layout
from engine.data.manifest import build_manifest, read_manifest
from engine.data.sources import DataLayoutError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.shortcuts",
        description="Shortcut audit: how well acquisition cues (size, format, compression, "
                    "background, DICOM tags) and intensity cues predict the label without the "
                    "brain, on the data's grouped folds; with --model, the model's accuracy where "
                    "the cues agree with the label and where they point the wrong way. Writes "
                    "shortcuts.json and cues.csv.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", help="a data folder (the layouts of engine.train); default: Br35H")
    source.add_argument("--manifest", help="a manifest.csv (a run or CV folder's, or checkpoints/manifest.csv)")
    parser.add_argument("--model", help="a run, a cross-validation or checkpoints/: audit its predictions "
                        "too (a CV's out-of-fold predictions, a run's test split); its manifest is "
                        "used when neither --data-dir nor --manifest is given")
    parser.add_argument("--out", required=True, help="folder for shortcuts.json and cues.csv")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split and folds")
    args = parser.parse_args(argv)
    from engine.evaluation.shortcut_audit import write_audit
    manifest = args.manifest or (Path(args.model) / layout.MANIFEST if args.model and not args.data_dir else None)
    try:
        if manifest:
            rows = read_manifest(manifest)
        else:
            rows, _ = build_manifest(args.data_dir or None, seed=args.seed)
        report = write_audit(args.out, rows, model_dir=args.model, seed=args.seed)
    except (DataLayoutError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, entry in report["cue_sets"].items():
        ci = entry["auc_ci"]
        auc = "n/a" if entry["auc"] is None else f"{entry['auc']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
        top = ", ".join(f"{c['cue']} {c['importance']:.3f}" for c in entry["top_cues"][:3])
        print(f"{name}: out-of-fold AUC {auc}; top cues: {top}")
    for kind, part in (report.get("model") or {}).items():
        for name, sides in part["by_set"].items():
            a, c = sides["aligned"], sides["conflicting"]
            if a["accuracy"] is None or c["accuracy"] is None:
                continue
            print(f"model ({kind}), {name} cues: aligned {a['accuracy']:.3f} on {a['count']}, "
                  f"conflicting {c['accuracy']:.3f} on {c['count']}, gap {sides['gap']:+.3f}")
    print(f"wrote {Path(args.out) / layout.SHORTCUTS} and {Path(args.out) / layout.CUES} "
          f"({report['seconds']:.1f} s, {report['images']} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
