"""Eight browser sessions at once upload and predict against one `streamlit run`
server on localhost: each gets its own correct result, and the server's memory stays
bounded (the model is loaded once, not per session)."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
from PIL import Image

from conftest import blob_image
from test_browser import CHROMIUM, server  # noqa: F401 - the shared server fixture

SESSIONS = 8


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_images(folder) -> list:
    paths = []
    for index in range(SESSIONS):
        rng = np.random.default_rng(100 + index)
        path = folder / f"session{index}.png"
        Image.fromarray(blob_image(rng, tumor=index % 2 == 0, size=64)).save(path)
        paths.append(path)
    return paths


async def one_session(browser, url: str, image) -> float:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(180_000)
    await page.goto(f"{url}/predict?model=fixture-run")
    await page.get_by_text("Upload one or more images").wait_for()
    await page.locator("input[type=file]").set_input_files(str(image))
    result = page.get_by_text(re.compile(r"probability \d\.\d{3}")).first
    await result.wait_for(state="attached")  # hidden in an expander when not assessed (OOD)
    caption = await page.get_by_text(image.name).first.inner_text()
    text = await result.text_content()
    await context.close()
    assert image.name in caption
    return float(re.search(r"probability (\d\.\d{3})", text).group(1))


async def run_sessions(url: str, images) -> list[float]:
    from playwright.async_api import async_playwright
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(one_session(browser, url, image) for image in images)), timeout=600)
        finally:
            await browser.close()


def test_eight_sessions_predict_concurrently_with_bounded_memory(server, tmp_path):  # noqa: F811
    from engine.serving.inference import load_model, predict_files
    images = make_images(tmp_path)
    # Warm the server with one session so the model is loaded before measuring.
    first = asyncio.run(run_sessions(server["url"], images[:1]))[0]
    before = rss_mb(server["pid"])
    got = asyncio.run(run_sessions(server["url"], images))
    after = rss_mb(server["pid"])
    model = load_model(server["runs"] / "fixture-run")
    expected = [r.probability for r in predict_files(model, [(p.name, p.read_bytes()) for p in images])]
    assert got == pytest.approx([round(e, 3) for e in expected], abs=0.0015)
    assert got[0] == pytest.approx(first, abs=0.0015)
    assert after - before < 400, f"server memory grew {after - before:.0f} MB for {SESSIONS} sessions"
