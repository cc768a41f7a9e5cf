"""The web UI in a real browser: type a prompt, press Generate, see the image and its infotext."""
from __future__ import annotations

import pytest

from tests.support.browser import browser_page, screenshot

pytestmark = pytest.mark.browser


def test_type_prompt_generate_and_see_image(server):
    with browser_page() as page:
        page.goto(server.url + "/")
        page.locator("#txt2img_prompt textarea").fill("a yellow circle in the center")
        # small images keep the test fast on CPU
        for slider, value in (("#txt2img_width", "64"), ("#txt2img_height", "64"), ("#txt2img_steps", "3")):
            box = page.locator(f"{slider} input[type=number]")
            box.fill(value)
            box.press("Enter")
        page.locator("#txt2img_seed input").fill("321")
        page.locator("#txt2img_generate").click()
        image = page.locator("#txt2img_gallery img").first
        image.wait_for(state="visible", timeout=120_000)
        info = page.locator("#generation_info_txt2img textarea")
        page.wait_for_function(
            "() => document.querySelector('#generation_info_txt2img textarea').value.includes('Seed: 321')")
        text = info.input_value()
        assert text.startswith("a yellow circle in the center\n")
        assert "Steps: 3" in text and "Size: 64x64" in text
        assert page.evaluate("(img) => img.naturalWidth", image.element_handle()) == 64
        screenshot(page, "txt2img")


def test_bad_size_shows_readable_error(server):
    with browser_page() as page:
        page.goto(server.url + "/")
        page.locator("#txt2img_prompt textarea").fill("x")
        box = page.locator("#txt2img_width input[type=number]")
        box.fill("100")
        box.press("Enter")
        page.locator("#txt2img_generate").click()
        error = page.locator("#html_info_txt2img .sd-error")
        error.wait_for(state="visible", timeout=60_000)
        assert "width" in error.inner_text() and "multiple of 8" in error.inner_text()
        assert "Traceback" not in page.content()


def test_no_model_state_is_explained(tmp_path):
    from tests.support.server import start_server
    srv = start_server(tmp_path, "--no-demo-model", wait_model=False)
    try:
        with browser_page() as page:
            page.goto(srv.url + "/")
            banner = page.locator("#no_model_banner")
            banner.wait_for(state="visible")
            assert "put a .safetensors file in models/Stable-diffusion" in banner.inner_text()
            page.locator("#txt2img_prompt textarea").fill("a cat")
            page.locator("#txt2img_generate").click()
            error = page.locator("#html_info_txt2img .sd-error")
            error.wait_for(state="visible")
            assert "no model yet" in error.inner_text()
    finally:
        srv.stop()
