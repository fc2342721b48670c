"""What a user waits for, measured in a real browser on the shipped model.

    python bench/browser_latency.py [--rounds 3]

Starts the dashboard as scripts/dashboard.sh does (`python -m ui.serve`, or plain
`streamlit run streamlit_app.py` with `--launcher streamlit`) on a free localhost port,
waits until it is started (listening and, for ui.serve, its default model warmed), and
drives Debian's Chromium through Playwright:

- cold Predict page: the first visit to the started server, /predict opened by direct
  URL; the time to the page's title (first drawing), and to the upload box (the model
  loaded);
- warm Predict page: the same URL again on the warm server;
- warm upload of 4 Br35H test slices to their 4 results (the results table and every
  card's probability or "not assessed" drawn);
- warm "Try samples" in a new browser tab: 4 slices drawn from the model's test split
  to their 4 results.

Prints one line per measurement and the median over rounds; each round starts its own
server for the cold figure.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_chromium(playwright):
    """Debian's Chromium (Playwright's own download does not work here), without the
    sandbox (root) and without the network calls this machine blocks."""
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--disable-sync"])


LAUNCHERS = {"serve": ["-m", "ui.serve"], "streamlit": ["-m", "streamlit", "run", "streamlit_app.py"]}


def start_server(launcher: str = "serve", log_path: Path | None = None):
    """Start the dashboard and return once it is *started*: listening and, for
    ``ui.serve``, done warming its default model (what a user who opens the page a few
    seconds after starting it meets). Also returns the seconds that took."""
    port = free_port()
    started = time.perf_counter()
    log_path = log_path or Path(tempfile.gettempdir()) / f"dashboard_{port}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, *LAUNCHERS[launcher], "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    listening = False
    while time.time() < deadline:
        if not listening:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                listening = True
            except OSError:
                pass
        if listening and (launcher != "serve" or "model warmed" in log_path.read_text()):
            return process, f"http://127.0.0.1:{port}", time.perf_counter() - started
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the dashboard did not start: " + log_path.read_text()[-2000:])


def one_round(browser, slices: list[str], launcher: str, log_path: Path) -> dict:
    process, url, start_up = start_server(launcher, log_path)
    try:
        page = browser.new_page()
        page.set_default_timeout(120_000)
        started = time.perf_counter()
        page.goto(f"{url}/predict")
        page.get_by_role("heading", name="Predict").wait_for()
        title = time.perf_counter() - started
        page.get_by_text("Upload one or more images").wait_for()
        cold = time.perf_counter() - started
        started = time.perf_counter()
        page.goto(f"{url}/predict")
        page.get_by_text("Upload one or more images").wait_for()
        warm = time.perf_counter() - started
        page.get_by_text("Upload one or more images").wait_for()
        started = time.perf_counter()
        page.locator("input[type=file]").set_input_files(slices)
        done = page.get_by_text(re.compile(r"probability \d\.\d{3}"))
        done.nth(len(slices) - 1).wait_for(state="attached")
        upload = time.perf_counter() - started
        page.close()
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(f"{url}/predict")
        page.get_by_text("Upload one or more images").wait_for()
        started = time.perf_counter()
        page.get_by_role("button", name="Try samples from the test split").click()
        page.get_by_text(re.compile(r"probability \d\.\d{3}")).nth(3).wait_for(state="attached")
        samples = time.perf_counter() - started
        page.close()
        return {"server started (listening, model warmed)": start_up, "cold: Predict title drawn": title, "cold: Predict ready (model loaded)": cold,
                "warm: Predict ready": warm, "warm: upload of 4 slices to 4 results": upload,
                "warm: Try samples (4) to 4 results": samples}
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--launcher", choices=list(LAUNCHERS), default="serve",
                        help="serve: python -m ui.serve (what scripts/dashboard.sh runs, the default model "
                        "warmed before the first visit); streamlit: plain streamlit run, for comparison")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from engine.data.manifest import read_manifest, rows_for_split
    test = rows_for_split(read_manifest(ROOT / "checkpoints" / layout.MANIFEST), "test")
    slices = [r.path for r in test[::len(test) // 4][:4]]
    results = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for number in range(args.rounds):
            result = one_round(browser, slices, args.launcher, Path(tempfile.gettempdir()) / "browser_latency.log")
            results.append(result)
            print(f"round {number + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()), flush=True)
        browser.close()
    for key in results[0]:
        values = [r[key] for r in results]
        print(f"{key}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
