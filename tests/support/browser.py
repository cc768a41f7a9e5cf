"""Headless Chromium (Debian's package) driven by Playwright, for the UI tests, and the helpers they share."""
from __future__ import annotations

import io
import os
import time
from contextlib import contextmanager
from urllib.parse import urljoin

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
# Without these flags Chromium keeps trying to reach Google's services, which this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")


@contextmanager
def browser_page(width: int = 1280, height: int = 800):
    require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# --- page helpers shared by the browser tests ---------------------------------------------------------------
GENERATE_TIMEOUT = 240_000  # ms; CPU generation shares two cores with whatever else runs on the machine


def open_ui(page, server) -> None:
    page.goto(server.url + "/")
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")
    # the checkpoint dropdown is refreshed by a load event; let it settle before anything touches it
    page.locator("#setting_sd_model_checkpoint [data-testid=status-tracker].hide").wait_for(state="attached")


def open_tab(page, tab_id: str) -> None:
    button = page.locator(f"#{tab_id}-button")
    button.click()
    page.wait_for_function("(id) => document.getElementById(id + '-button').getAttribute('aria-selected') === 'true'",
                           arg=tab_id)


def set_number(page, elem_id: str, value) -> None:
    """A slider's number box (or a gr.Number): type the value and commit it with Enter."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_function("([id, v]) => document.querySelector(`#${id} input[type=number]`).value === v",
                           arg=[elem_id, str(value)])


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a gr.Dropdown by its exact text."""
    box = page.locator(f"#{elem_id} input[role=combobox]")
    box.click()
    listbox = box.get_attribute("aria-controls")
    page.locator(f"#{listbox} [role=option][aria-label=\"{option}\"]").click()
    page.wait_for_function("([id, v]) => document.querySelector(`#${id} input[role=combobox]`).value === v",
                           arg=[elem_id, option])


def wait_info(page, tab: str, needle: str, timeout: float = GENERATE_TIMEOUT) -> str:
    """Wait until the tab's generation info contains `needle` (or an error shows up, which fails the test)."""
    page.wait_for_function(
        """([tab, needle]) => {
             const info = document.querySelector(`#generation_info_${tab} textarea`);
             return (info && info.value.includes(needle)) || document.querySelector(`#html_info_${tab} .sd-error`);
           }""", arg=[tab, needle], timeout=timeout)
    error = page.locator(f"#html_info_{tab} .sd-error")
    assert error.count() == 0, f"{tab} failed: {error.inner_text()}"
    return page.locator(f"#generation_info_{tab} textarea").input_value()


def gallery_image(page, server, tab: str) -> Image.Image:
    """The first image of a tab's gallery, downloaded through the URL the page shows it from."""
    img = page.locator(f"#{tab}_gallery img").first
    img.wait_for(state="visible")
    response = requests.get(urljoin(server.url + "/", img.get_attribute("src")), timeout=30)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def poll(condition, timeout: float, message: str):
    """Call `condition` until it returns something truthy; the sleep is a polling interval, not synchronisation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message)


def small_txt2img(page, prompt: str, seed: int, steps: int = 2, size: int = 64) -> str:
    page.locator("#txt2img_prompt textarea").fill(prompt)
    set_number(page, "txt2img_width", size)
    set_number(page, "txt2img_height", size)
    set_number(page, "txt2img_steps", steps)
    page.locator("#txt2img_seed input").fill(str(seed))
    page.locator("#txt2img_generate").click()
    return wait_info(page, "txt2img", f"Seed: {seed}")


def canvas_pixels(canvas) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)


def find_image(canvas, size: int):
    """(left, top, screen pixels per image pixel) of the gradient image inside the editor's canvas, or None."""
    match = np.abs(canvas_pixels(canvas)[..., 2] - 128) <= 4
    if match.sum() < size * size:
        return None
    # grey toolbar icons and labels also have blue ~128: keep only rows/columns that the image fills for the most part
    cols, rows = match.sum(0), match.sum(1)
    xs, ys = np.nonzero(cols >= 0.8 * cols.max())[0], np.nonzero(rows >= 0.8 * rows.max())[0]
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    if abs(width - height) > 2:  # still drawing
        return None
    return float(xs.min()), float(ys.min()), width / size
