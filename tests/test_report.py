"""python -m engine.report on the shipped model: one self-contained HTML file that
Chromium opens offline without page errors or requests, with the cross-validation table
and the figures."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.xdist_group("browser")
def test_report_of_the_shipped_model_opens_in_chromium_without_errors(tmp_path):
    out = tmp_path / "R.html"
    done = subprocess.run([sys.executable, "-m", "engine.report", "checkpoints", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    # With a review file, the test split is scored with the reviewed labels too.
    import csv
    with open(ROOT / "checkpoints" / "predictions_test.csv", newline="") as handle:
        first = next(csv.DictReader(handle))
    review = tmp_path / "review.csv"
    review.write_text("path,decision\n" + f"{first['path']},exclude\n")
    reviewed = subprocess.run([sys.executable, "-m", "engine.report", "checkpoints", "--out", str(tmp_path / "Rr.html"),
                               "--label-review", str(review)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reviewed.returncode == 0, reviewed.stderr[-2000:]
    assert "with reviewed labels" in (tmp_path / "Rr.html").read_text() and "with reviewed labels" not in text
    # Self-contained: no external script, stylesheet, font or image.
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script" not in text and "@import" not in text and "url(" not in text
    from playwright.sync_api import sync_playwright
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        page = browser.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(out.as_uri())
        assert page.get_by_role("heading", name=re.compile("Cross-validation")).is_visible()
        fold_table = page.locator("table", has_text="mean ± std")
        # header, five folds, mean ± std, all pooled with 95% intervals
        assert fold_table.locator("tr").count() == 1 + 5 + 1 + 1
        assert page.locator("tr", has_text="all pooled").inner_text().count("–") >= 4  # four intervals
        assert page.get_by_role("heading", name=re.compile("Shortcuts")).is_visible()
        import json
        scored = json.loads((ROOT / "checkpoints" / "eval_test.json").read_text())["refer"]
        assert page.get_by_role("heading", name="When to refer").is_visible()
        assert page.get_by_text(f"{scored['answered']} of {scored['images']}").is_visible()  # the stored band, scored
        assert page.locator("table", has_text="conflicting accuracy").count() == 2  # out-of-fold and test
        assert "/root/" not in text and "site-packages" not in text  # no folder of this machine
        assert page.locator("svg").count() >= 3  # confusion, ROC, PR, calibration
        assert page.locator("img").count() >= 1  # errors and flagged labels, inline
        assert page.get_by_text("not a medical device").is_visible()
        page.pdf(path=str(tmp_path / "R.pdf"))  # the same Chromium prints it
        browser.close()
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert (tmp_path / "R.pdf").stat().st_size > 10_000
