"""``python -m engine.audit CV_DIR``: rank images by how likely their label is wrong,
parsed here and run by ``engine.evaluation.audit.audit``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.evaluation.audit import audit
from engine import layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.audit",
                                     description="Rank images by how likely their label is wrong.")
    parser.add_argument("cv_dir", help="a folder written by python -m engine.cv")
    parser.add_argument("--top", type=int, default=15, help="rows to print")
    args = parser.parse_args(argv)
    try:
        rows = audit(args.cv_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    flagged = sum(r["flagged"] for r in rows)
    groups = len({r["group"] for r in rows if r["flagged"]})
    print(f"{len(rows)} images ranked; {flagged} flagged by confident learning in {groups} "
          f"duplicate groups; written to {Path(args.cv_dir) / layout.LABEL_ISSUES}")
    for row in rows[:args.top]:
        print(f"{row['score']:.3f}  label {row['label']} -> suggested {row['suggested_label']}  "
              f"group {row['group']}  {row['source']}  {row['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
