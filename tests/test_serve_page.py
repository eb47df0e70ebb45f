"""The ``stackgan serve`` page in a real browser: Debian's Chromium, driven by playwright.

Runs when /usr/bin/chromium exists; skips with a reason when it does not, except under CI
(``CI=true``), where a missing browser fails (``.ci/run`` installs it).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from serve_helpers import LiveServer, write_attngan_file, write_generator_files  # noqa: E402

from stackgan_cli.serve.app import create_app  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


def _need_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright is not installed (pip install playwright)")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)


def _loaded_width(image, timeout: float = 30_000) -> int:
    """The natural width of ``image`` once it has loaded. Visible is not loaded: the runs table
    loads its pictures lazily and even a data URL decodes asynchronously, so ``naturalWidth``
    read as soon as the image shows can still be 0."""
    image.page.wait_for_function(
        "image => image.complete && image.naturalWidth > 0",
        arg=image.element_handle(),
        timeout=timeout,
    )
    return image.evaluate("image => image.naturalWidth")


def _decoded(data_url: str) -> np.ndarray:
    payload = data_url.split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


@pytest.mark.slow
def test_type_a_prompt_generate_and_see_the_grid(tmp_path, capsys):
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    files = write_generator_files(tmp_path)
    runs = tmp_path / "runs"
    (runs / "demo-run" / "samples").mkdir(parents=True)
    Image.new("RGB", (40, 20), (200, 30, 30)).save(runs / "demo-run" / "samples" / "epoch_0001.png")
    (runs / "demo-run" / "metrics.jsonl").write_text(
        '{"epoch": 1, "step": 1, "errD": 1.2, "errG": 0.8, "kl": 0.1, "time": 2.0}\n'
    )
    app = create_app(files[2], device="cpu", runs_dir=runs)
    screenshot = tmp_path / "serve-page.png"
    with LiveServer(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/")
            expect(page.locator("#model")).to_contain_text("Stage-II generator, trained on shapes")
            page.fill("#prompts", "a red circle\na blue square")
            page.fill("#n", "3")
            page.fill("#seed", "7")
            page.select_option("#size", "64")
            expect(page.locator("#stages")).to_be_disabled()  # no smaller stage at 64
            page.click("#generate")

            grid = page.locator("#grid")
            expect(grid).to_be_visible(timeout=60_000)
            expect(page.locator("#status")).to_contain_text("6 images at 64×64")
            expect(page.locator("#seed-used")).to_have_text("seed 7")
            width = _loaded_width(grid)
            assert width == 3 * 64 + 4 * 2  # three 64-px images per row, 2-px gaps
            source = grid.get_attribute("src")
            assert source.startswith("data:image/png;base64,")
            assert _decoded(source).std() > 10  # a real picture, not a blank
            assert page.locator("#download").get_attribute("download") == "stackgan-seed-7.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # A bad request shows the server's one-line error.
            page.fill("#n", "200")
            page.click("#generate")
            expect(page.locator("#status")).to_contain_text("at most 256 per request")

            page.click("button[data-view=runs]")
            expect(page.locator("#runs table")).to_contain_text("demo-run")
            expect(page.locator("#runs table")).to_contain_text("config.json is missing")
            sample = page.locator("#runs img").first
            expect(sample).to_be_visible()
            assert _loaded_width(sample) == 40
            assert errors == []
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nscreenshot of the page: {screenshot}")
    assert Image.open(screenshot).size[0] == 1100


@pytest.mark.slow
def test_an_attngan_file_shows_where_each_word_looked(tmp_path, capsys):
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    app = create_app(write_attngan_file(tmp_path), device="cpu", runs_dir=tmp_path / "runs")
    screenshot = tmp_path / "serve-attention.png"
    with LiveServer(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/")
            expect(page.locator("#model")).to_contain_text("AttnGAN")
            expect(page.locator("#attention-field")).to_be_visible()
            page.fill("#prompts", "a red circle on a plain background")
            page.fill("#n", "2")
            page.fill("#seed", "3")
            page.check("#attention")
            page.click("#generate")
            figures = page.locator("#attention-figures img")
            expect(figures).to_have_count(2, timeout=60_000)
            expect(page.locator("#attention-maps")).to_be_visible()
            width = _loaded_width(figures.first)
            pixels = _decoded(figures.first.get_attribute("src"))
            assert pixels.shape[1] == width and pixels.std() > 10
            assert "red circle" in figures.first.get_attribute("alt")
            page.screenshot(path=str(screenshot), full_page=True)
            # Unticked, the next answer carries no figures and the section goes away.
            page.uncheck("#attention")
            page.click("#generate")
            expect(page.locator("#attention-maps")).to_be_hidden(timeout=60_000)
            assert errors == []
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nscreenshot of the page: {screenshot}")
