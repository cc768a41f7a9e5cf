"""Every tab of the web UI in a real browser against the real server: sampling controls, Interrupt, the checkpoint
dropdown, Send to img2img, painting an inpaint mask, PNG Info → txt2img, Settings that survive a restart, and the
layout on a narrow screen."""
from __future__ import annotations

import numpy as np
import pytest
import requests
from PIL import Image

from modules.engine import image_ops
from tests.support.browser import (browser_page, canvas_pixels, choose, find_image, gallery_image, open_tab, open_ui,
                                   poll, screenshot, set_number, small_txt2img, wait_info)

pytestmark = pytest.mark.browser


def progress(server) -> dict:
    return requests.get(server.api("progress"), params={"skip_current_image": "true"}, timeout=10).json()


# --- tests --------------------------------------------------------------------------------------------------------
def test_sampler_steps_and_seed_reach_the_infotext(server):
    with browser_page() as page:
        open_ui(page, server)
        choose(page, "txt2img_sampling", "Euler")
        text = small_txt2img(page, "a red square", seed=4321, steps=3)
        assert "Sampler: Euler," in text
        assert "Steps: 3," in text
        assert "Seed: 4321," in text
        assert "Size: 64x64" in text


def test_interrupt_a_long_job_from_the_page(server):
    with browser_page() as page:
        open_ui(page, server)
        page.locator("#txt2img_prompt textarea").fill("a long job")
        for elem_id, value in (("txt2img_width", 128), ("txt2img_height", 128), ("txt2img_steps", 150)):
            set_number(page, elem_id, value)
        page.locator("#txt2img_seed input").fill("2468")
        page.locator("#txt2img_generate").click()
        # Interrupt stops the running job; wait until the job is in its sampling loop
        state = poll(lambda: _running_150(server), 120, "the 150-step job never started sampling")
        at_click = state["sampling_step"]
        page.locator("#txt2img_interrupt").click()

        seen = [at_click]

        def finished():
            st = progress(server)["state"]
            if st["job"] == "":
                return True
            seen.append(st["sampling_step"])
            return False
        poll(finished, 120, "the job did not stop after Interrupt")
        # it stopped within a step or two of the click, nowhere near the 150 steps asked for
        assert max(seen) <= at_click + 3, (at_click, max(seen))
        text = wait_info(page, "txt2img", "Seed: 2468", timeout=60_000)
        assert "Steps: 150" in text  # the infotext still records what was asked for, as in A1111
        assert page.locator("#txt2img_gallery img").first.is_visible()
        assert progress(server)["state"]["job"] == ""


def _running_150(server):
    state = progress(server)["state"]
    return state if state["sampling_steps"] == 150 and state["sampling_step"] >= 1 else None


def test_checkpoint_dropdown_switches_the_model(server):
    original = requests.get(server.api("options"), timeout=10).json()["sd_model_checkpoint"]
    titles = [m["title"] for m in requests.get(server.api("sd-models"), timeout=10).json()]
    other = next(t for t in titles if t.startswith("tiny_sd1_b"))
    try:
        with browser_page() as page:
            open_ui(page, server)
            native = page.locator("#txt2img_width input[type=number]").input_value()
            set_number(page, "txt2img_width", 64 if native != "64" else 72)
            choose(page, "setting_sd_model_checkpoint", other)
            # the switch is done when the size sliders go back to the new model's native size
            page.wait_for_function("(v) => document.querySelector('#txt2img_width input[type=number]').value === v",
                                   arg=native, timeout=120_000)
            assert page.locator("#checkpoint_status .sd-error").count() == 0
            assert requests.get(server.api("options"), timeout=10).json()["sd_model_checkpoint"] == other
            text = small_txt2img(page, "a blue square", seed=1357)
            assert "Model: tiny_sd1_b," in text
    finally:  # the other tests share this server and expect the first model
        requests.post(server.api("options"), json={"sd_model_checkpoint": original}, timeout=120).raise_for_status()


def test_send_txt2img_result_to_img2img(server):
    with browser_page() as page:
        open_ui(page, server)
        # a user who looked at the Inpaint sub-tab before: Send to img2img must still run plain img2img
        open_tab(page, "tab_img2img")
        open_tab(page, "img2img_inpaint_tab")
        open_tab(page, "tab_txt2img")
        small_txt2img(page, "a green square", seed=2222)
        page.locator("#txt2img_send_to_img2img").click()
        page.wait_for_function(
            "() => document.getElementById('tab_img2img-button').getAttribute('aria-selected') === 'true'")
        page.locator("#img2img_image img").first.wait_for(state="visible")
        assert page.locator("#img2img_img2img_tab-button").get_attribute("aria-selected") == "true"
        page.locator("#img2img_prompt textarea").fill("a green square, painted")
        set_number(page, "img2img_width", 64)
        set_number(page, "img2img_height", 64)
        set_number(page, "img2img_steps", 2)
        set_number(page, "img2img_denoising_strength", 0.5)
        page.locator("#img2img_seed input").fill("3333")
        page.locator("#img2img_generate").click()
        text = wait_info(page, "img2img", "Seed: 3333")
        assert "Denoising strength: 0.5" in text
        assert "Mask blur" not in text  # plain img2img, not inpainting
        assert gallery_image(page, server, "img2img").size == (64, 64)
        screenshot(page, "img2img_result")


def _gradient(size: int = 64) -> Image.Image:
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = np.arange(size)[None, :] * (256 // size)
    arr[..., 1] = np.arange(size)[:, None] * (256 // size)
    arr[..., 2] = 128
    return Image.fromarray(arr)


def _painted(canvas, left: float, top: float, scale: float, size: int):
    """The painted (white) area of the image, in image pixels, or None while nothing shows painted."""
    shot = canvas_pixels(canvas)
    centres = ((np.arange(size) + 0.5) * scale).astype(int)
    view = shot[int(top) + centres[:, None], int(left) + centres[None, :]]
    mask = np.all(view >= 250, axis=2)
    return (mask,) if mask.any() else None  # a tuple: poll() tests truthiness, which an array does not have


def test_paint_a_mask_and_inpaint(server, tmp_path):
    source = _gradient()
    source.save(tmp_path / "source.png")
    with browser_page() as page:
        open_ui(page, server)
        open_tab(page, "tab_img2img")
        open_tab(page, "img2img_inpaint_tab")
        editor = page.locator("#img2maskimg")
        editor.locator(".pixi-target canvas").wait_for(state="visible")
        editor.locator("input[type=file]").set_input_files(str(tmp_path / "source.png"))
        editor.locator(".empty").wait_for(state="detached")  # the "Upload an image" placeholder goes
        canvas = editor.locator(".pixi-target canvas")
        # Where the image lies on the screen (fitted into the canvas and centred): every pixel of the source has
        # blue 128, which neither the background nor a white brush stroke has.
        left, top, scale = poll(lambda: find_image(canvas, source.width), 60, "the image never showed in the editor")
        box = canvas.bounding_box()
        # paint a short stroke in the top-left corner (the brush is white and wide: it covers a blob around it)
        page.mouse.move(box["x"] + left + 3 * scale, box["y"] + top + 3 * scale)
        page.mouse.down()
        for i in range(1, 4):
            page.mouse.move(box["x"] + left + (3 + i) * scale, box["y"] + top + (3 + i) * scale, steps=2)
        page.mouse.up()
        (painted,) = poll(lambda: _painted(canvas, left, top, scale, source.width), 60, "nothing was painted")
        set_number(page, "img2img_width", 64)
        set_number(page, "img2img_height", 64)
        set_number(page, "img2img_steps", 2)
        set_number(page, "img2img_denoising_strength", 1)
        page.locator("#img2img_seed input").fill("5555")
        page.locator("#img2img_generate").click()
        text = wait_info(page, "img2img", "Seed: 5555")
        assert "Mask blur: 4" in text
        out = np.asarray(gallery_image(page, server, "img2img").convert("RGB")).astype(int)
        screenshot(page, "img2img_inpaint")
    src = np.asarray(source).astype(int)
    changed = np.any(out != src, axis=2)
    # the painted area was repainted ...
    assert changed[painted].mean() > 0.9, changed[painted].mean()
    # ... and everything the server's blurred mask leaves out is the input, pixel for pixel (the mask read off the
    # screen is grown by 2 px for the stroke's soft edge)
    grown = np.pad(painted, 2)
    grown = np.any([grown[2 + dy:2 + dy + 64, 2 + dx:2 + dx + 64] for dy in range(-2, 3) for dx in range(-2, 3)], 0)
    blurred = np.asarray(image_ops.prepare_mask(Image.fromarray((grown * 255).astype(np.uint8)), False, 4))
    outside = blurred == 0
    assert outside.mean() > 0.25, "the stroke covered too much of the image to check anything"
    assert not changed[outside].any(), np.argwhere(changed & outside)[:10]


def test_png_info_sends_parameters_to_txt2img(server):
    seed = 97531
    body = {"prompt": "a purple triangle, (detailed:1.1)", "negative_prompt": "blurry, ugly", "steps": 4,
            "seed": seed, "width": 64, "height": 72, "cfg_scale": 5.5, "sampler_name": "Euler a",
            "save_images": True}
    requests.post(server.api("txt2img"), json=body, timeout=300).raise_for_status()
    saved = sorted(server.data_dir.glob(f"outputs/txt2img-images/**/[0-9][0-9][0-9][0-9][0-9]-{seed}*.png"))
    assert saved, "the server did not save the image"
    with browser_page() as page:
        open_ui(page, server)
        open_tab(page, "tab_pnginfo")
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved[-1]))
        page.wait_for_function(
            "(seed) => document.querySelector('#pnginfo_generation_info textarea').value.includes(`Seed: ${seed}`)",
            arg=seed)
        params = page.locator("#pnginfo_generation_info textarea").input_value()
        assert params.startswith("a purple triangle, (detailed:1.1)\nNegative prompt: blurry, ugly\n")
        screenshot(page, "pnginfo_parameters")
        page.locator("#pnginfo_send_to_txt2img").click()
        page.wait_for_function(
            "() => document.getElementById('tab_txt2img-button').getAttribute('aria-selected') === 'true'")
        page.wait_for_function(
            "() => document.querySelector('#txt2img_prompt textarea').value.startsWith('a purple triangle')")
        assert page.locator("#txt2img_prompt textarea").input_value() == "a purple triangle, (detailed:1.1)"
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry, ugly"
        assert page.locator("#txt2img_steps input[type=number]").input_value() == "4"
        assert page.locator("#txt2img_seed input").input_value() == str(seed)
        assert page.locator("#txt2img_width input[type=number]").input_value() == "64"
        assert page.locator("#txt2img_height input[type=number]").input_value() == "72"
        assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "5.5"
        assert page.locator("#txt2img_sampling input[role=combobox]").input_value() == "Euler a"


def test_settings_persist_across_a_restart(tmp_path, tiny_sd1):
    from tests.support.server import make_data_dir, start_server
    data = make_data_dir(tmp_path, tiny_sd1)
    checkbox = "#setting_samples_save input[type=checkbox]"
    srv = start_server(data)
    try:
        assert requests.get(srv.api("options"), timeout=10).json()["samples_save"] is True
        with browser_page() as page:
            open_ui(page, srv)
            open_tab(page, "tab_settings")
            open_tab(page, "settings_saving_images")
            assert page.locator(checkbox).is_checked()
            page.locator(checkbox).uncheck()
            page.locator("#settings_submit").click()
            page.wait_for_function(
                "() => document.querySelector('#settings_result').innerText.includes('settings changed')")
            assert "1 settings changed: samples_save." in page.locator("#settings_result").inner_text()
            screenshot(page, "settings_applied")
            assert requests.get(srv.api("options"), timeout=10).json()["samples_save"] is False
            # a reload of the page shows the value now in force, not the one the server started with
            page.reload()
            open_ui(page, srv)
            open_tab(page, "tab_settings")
            open_tab(page, "settings_saving_images")
            assert not page.locator(checkbox).is_checked()
    finally:
        srv.stop()
    srv = start_server(data)
    try:
        assert requests.get(srv.api("options"), timeout=10).json()["samples_save"] is False
        with browser_page() as page:
            open_ui(page, srv)
            open_tab(page, "tab_settings")
            open_tab(page, "settings_saving_images")
            assert not page.locator(checkbox).is_checked()
    finally:
        srv.stop()


def test_narrow_viewport_layout(server):
    with browser_page(width=400, height=800) as page:
        open_ui(page, server)
        for selector in ("#txt2img_prompt textarea", "#txt2img_generate"):
            element = page.locator(selector)
            assert element.is_visible(), selector
            box = element.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 400 + 2, (selector, box)
        overflow = page.evaluate("() => document.documentElement.scrollWidth") - 400
        assert overflow <= 4, f"the page is {overflow} px wider than a 400 px screen"
        screenshot(page, "narrow_txt2img")


def test_screenshot_every_tab(server):
    with browser_page() as page:
        open_ui(page, server)
        screenshot(page, "tab_txt2img")
        for tab, ready in (("tab_img2img", "#img2img_image"), ("tab_extras", "#extras_image"),
                           ("tab_pnginfo", "#pnginfo_image"), ("tab_settings", "#settings_submit")):
            open_tab(page, tab)
            page.locator(ready).wait_for(state="visible")
            screenshot(page, tab)


def test_an_unknown_lora_is_reported_under_the_images(server):
    with browser_page() as page:
        open_ui(page, server)
        text = small_txt2img(page, "a red square <lora:nowhere_to_be_found:0.8>", seed=2468)
        assert "<lora:nowhere_to_be_found:0.8>" in text  # the infotext keeps the prompt as written
        message = page.locator("#html_info_txt2img")
        poll(lambda: "Networks not found: nowhere_to_be_found" in message.inner_text(), 30, "no networks message")
