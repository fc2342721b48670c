"""``python -m engine.report DIR --out report.html``: a run, a cross-validation or
``checkpoints`` as one self-contained HTML file, parsed here and written by
``engine.evaluation.report.write_report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import layout
from engine.evaluation.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.report",
                                     description="Write a study (model card, data health, folds, test "
                                     "split, figures, errors, flagged labels, configuration) as one "
                                     "self-contained HTML file that opens offline.")
    parser.add_argument("folder", help="a run folder, a cross-validation folder or checkpoints")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--label-review", help="also score the test split with this review file's labels")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not (folder / layout.MODEL_INFO).exists() and not (folder / layout.CONFIG).exists():
        print(f"error: {folder} is not a run, cross-validation or model folder", file=sys.stderr)
        return 2
    path = write_report(folder, args.out, args.label_review)
    print(f"report written to {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
