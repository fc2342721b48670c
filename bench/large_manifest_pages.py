"""The dashboard on a hospital-sized study: page loads in a real browser with a
cross-validation whose manifest has about N rows.

    python bench/large_manifest_pages.py [--rows 100000] [--rounds 2] [--folder DIR]

Builds (once, under --folder, default runs/_large_manifest) a runs folder holding one
cross-validation made from the shipped-recipe CV of this machine (runs/cv5_shipped_v6,
or --source DIR): its images are repeated as symbolic links (copy_K/...) until the
manifest has N rows, and its manifest, out-of-fold and test predictions, label audit and
data issues are repeated with them (groups renumbered per copy, so nothing merges).
Then starts `streamlit run` on that runs folder and opens Home, Runs, Evaluate, Errors,
Label review and Data with Chromium (Playwright), the CV chosen by URL: the time from
navigation until the page's script has finished (the app root's script state
"notRunning" for 0.3 s, not counted), first on a fresh server (cold: files parsed) and then again (warm: cached).
Prints one line per page and round.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import sys
import time

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))

PAGES = [("home", "", "Brain-tumor classifier dashboard"), ("runs", "runs", "Runs"),
         ("evaluate", "evaluate", "Evaluate"), ("errors", "errors", "Errors"),
         ("label review", "label_review", "Label review"), ("data", "data", "Data health"), ("map", "map", "Map")]
TABLES = (layout.MANIFEST, layout.predictions("oof"), layout.predictions("test"), layout.OOF_PREDICTIONS,
          layout.LABEL_ISSUES, layout.DATA_ISSUES, layout.MAP)


def build(source: Path, target: Path, rows: int) -> Path:
    """The runs root with one CV of about ``rows`` manifest rows; reused when present."""
    runs_root = target / "runs"
    cv = runs_root / "large-cv"
    stamp = target / f"built_{rows}"
    if stamp.exists():
        return runs_root
    shutil.rmtree(target, ignore_errors=True)
    cv.mkdir(parents=True)
    with open(source / layout.MANIFEST, newline="") as handle:
        base = list(csv.DictReader(handle))
    copies = math.ceil(rows / len(base))
    groups = max(int(r["group"]) for r in base) + 1
    from engine.data.sources import relocate
    originals = sorted({relocate(r["path"]) for r in base})
    common = os.path.commonpath(originals)
    for k in range(copies):  # the images, as links
        for path in originals:
            link = target / "data" / f"copy_{k}" / os.path.relpath(path, common)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)

    def moved(path: str, k: int) -> str:
        path = relocate(path)
        return str(target / "data" / f"copy_{k}" / os.path.relpath(path, common)) if path.startswith(common) else path

    import numpy as np
    rng = np.random.default_rng(0)
    for name in TABLES:
        if not (source / name).exists():
            continue
        with open(source / name, newline="") as handle:
            reader = csv.DictReader(handle)
            fields, records = reader.fieldnames, list(reader)
        with open(cv / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for k in range(copies):
                for record in records:
                    record = dict(record, path=moved(record["path"], k))
                    if "group" in record and record["group"] not in ("", "-1"):
                        record["group"] = str(int(record["group"]) + k * groups)
                    if name == layout.MAP and k:  # each copy a little apart, as another site's slices would be
                        record["x"] = f"{float(record['x']) + rng.normal(0, 1.5):.4f}"
                        record["y"] = f"{float(record['y']) + rng.normal(0, 1.5):.4f}"
                    writer.writerow(record)
    for item in source.iterdir():  # everything else as it is
        if item.name not in TABLES and not (cv / item.name).exists():
            (cv / item.name).symlink_to(item.resolve())
    summary = json.loads((source / layout.DATA_SUMMARY).read_text())
    summary["images"] = len(base) * copies
    (cv / layout.DATA_SUMMARY).unlink()
    (cv / layout.DATA_SUMMARY).write_text(json.dumps(summary))
    stamp.write_text(str(len(base) * copies))
    print(f"built {cv}: {len(base) * copies} manifest rows ({copies} copies of {len(base)})", flush=True)
    return runs_root


def settle(page, timeout: float = 300.0) -> None:
    """Wait until the page's script run has ended: Streamlit's app root reports the
    script state "notRunning" (attribute data-test-script-state) for 0.3 s."""
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        if state != "notRunning":
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= 0.3:
            return
        time.sleep(0.05)
    raise TimeoutError("the page kept running")


def lasso(page) -> float:
    """Draw a lasso over the middle quarter of the map and time it to the drawn selection."""
    import re
    plot = page.locator(".js-plotly-plot .nsewdrag").first
    box = plot.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] / 8, box["height"] / 8
    started = time.perf_counter()
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry + 2)):
        page.mouse.move(x, y, steps=4)
    page.mouse.up()
    page.get_by_text(re.compile(r"Selection: [\d,]+ images")).wait_for()
    settle(page)
    return time.perf_counter() - started - 0.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--source", default=str(ROOT / "checkpoints"),
                        help="a CV folder (or the shipped model) whose tables are copied to the study's size")
    parser.add_argument("--folder", default=str(ROOT / "runs" / "_large_manifest"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from browser_latency import launch_chromium, start_server
    runs_root = build(Path(args.source), Path(args.folder), args.rows)
    os.environ["BRAIN_RUNS_DIR"] = str(runs_root)
    results: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for number in range(args.rounds):
            process, url, _ = start_server()
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(300_000)
                for visit in ("cold", "warm"):
                    for name, path, title in PAGES:
                        started = time.perf_counter()
                        page.goto(f"{url}/{path}?model=large-cv")
                        page.get_by_role("heading", name=title).first.wait_for()
                        settle(page)
                        seconds = time.perf_counter() - started - 0.3
                        results.setdefault(f"{visit} {name}", []).append(seconds)
                        print(f"round {number + 1} {visit} {name}: {seconds:.2f} s", flush=True)
                        if name == "map":
                            seconds = lasso(page)
                            results.setdefault(f"{visit} map: lasso to the selection drawn", []).append(seconds)
                            print(f"round {number + 1} {visit} map lasso: {seconds:.2f} s", flush=True)
                page.close()
            finally:
                process.terminate()
                process.wait(timeout=20)
        browser.close()
    for key, values in results.items():
        print(f"{key}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
