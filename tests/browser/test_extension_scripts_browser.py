"""A1111 extension scripts in the page, driven as a user drives them: the sample extensions (ours, in
tests/support/sample_extensions) on a real server. The always-on Recorder's controls change what txt2img makes, the
img2img Script dropdown shows the selectable Sample tiler's slider and runs it, the extension's tab and its setting are
on the page, a broken extension does not break it, and Reload UI brings all of it back."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.support.browser import (browser_page, choose, gallery_image, open_tab, open_ui, screenshot, set_number,
                                   wait_info)
from tests.support.server import make_data_dir, start_server

pytestmark = pytest.mark.browser

SAMPLES = Path(__file__).resolve().parent.parent / "support" / "sample_extensions"
# A1111's hints.js defines the global `titles`; extensions merge their tooltips into it (sd-dynamic-prompts does)
HINTS_JS = 'titles = {...titles, "Recorder enabled": "Turns the sample recorder on"};\n'


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("ext-scripts-page"), tiny_sd1)
    for name in ("sample-recorder", "sample-broken"):
        shutil.copytree(SAMPLES / name, data / "extensions" / name)
    hints = data / "extensions" / "sample-hints" / "javascript" / "hints.js"
    hints.parent.mkdir(parents=True)
    hints.write_text(HINTS_JS, encoding="utf-8")
    srv = start_server(data)
    yield srv
    srv.stop()


def page_errors(page) -> list:
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_recorder_controls_change_prompt_seed_and_infotext(ext_server):
    with browser_page() as page:
        errors = page_errors(page)
        open_ui(page, ext_server)
        area = page.locator("#txt2img_script_container")
        enabled = page.locator("#script_txt2img_recorder_enabled input[type=checkbox]")
        assert enabled.count() == 0 or not enabled.is_visible()   # in a closed accordion
        area.get_by_text("Recorder", exact=True).click()         # the script's own gr.Accordion
        enabled.wait_for(state="visible")
        assert not enabled.is_checked()
        page.wait_for_function("""() => [...document.querySelectorAll('#script_txt2img_recorder_enabled span')]
                                       .some(s => s.title === 'Turns the sample recorder on')""")
        suffix = page.locator("#script_txt2img_recorder_suffix textarea")
        assert suffix.input_value() == ", recorded"               # the script's default
        enabled.check()
        suffix.fill(", in the browser")
        area.get_by_label("Seed offset").fill("5")                # a control without an elem_id
        page.locator("#txt2img_prompt textarea").fill("a red circle")
        set_number(page, "txt2img_width", 64)
        set_number(page, "txt2img_height", 64)
        set_number(page, "txt2img_steps", 2)
        page.locator("#txt2img_seed input").fill("100")
        page.locator("#txt2img_generate").click()
        info = wait_info(page, "txt2img", "Seed: 105")             # seed + the offset the script added
        assert info.startswith("a red circle, in the browser\n"), info
        assert "Recorder suffix: in the browser" in info
        assert gallery_image(page, ext_server, "txt2img").convert("RGB").getpixel((0, 0)) == (255, 0, 255)
        screenshot(page, "extension_recorder_txt2img")
        assert errors == []


def test_selectable_tiler_in_img2img(ext_server, tmp_path):
    Image.new("RGB", (128, 64), (200, 30, 30)).save(tmp_path / "init.png")
    with browser_page() as page:
        errors = page_errors(page)
        open_ui(page, ext_server)
        open_tab(page, "tab_img2img")
        area = page.locator("#img2img_script_container")
        tiles = area.get_by_label("number input for Tiles")
        assert tiles.count() == 0 or not tiles.is_visible()       # hidden until the script is picked
        box = page.locator("#img2img_script input[role=combobox]")
        box.click()
        options = page.locator(f"#{box.get_attribute('aria-controls')} [role=option]")
        options.first.wait_for(state="visible")
        # A1111's own scripts (root scripts/) first, then the extensions'
        assert [t.replace("✓", "").strip() for t in options.all_inner_texts()] == [
            "None", "Loopback", "Outpainting mk2", "Poor man's outpainting", "Prompt matrix",
            "Prompts from file or textbox", "SD upscale", "X/Y/Z plot", "Sample tiler"]
        options.get_by_text("Sample tiler").click()
        page.wait_for_function("() => document.querySelector('#img2img_script input').value === 'Sample tiler'")
        tiles.wait_for(state="visible")
        assert tiles.input_value() == "2"
        tiles.fill("4")
        tiles.press("Enter")
        page.locator("#img2img_image input[type=file]").set_input_files(str(tmp_path / "init.png"))
        page.locator("#img2img_image img").first.wait_for(state="visible")
        set_number(page, "img2img_steps", 2)
        set_number(page, "img2img_denoising_strength", 0.5)
        page.locator("#img2img_seed input").fill("7")
        page.locator("#img2img_generate").click()
        info = wait_info(page, "img2img", "Seed: 7")
        assert "Size: 32x64" in info, info                        # the last of 4 tiles, each 128/4 wide
        assert gallery_image(page, ext_server, "img2img").size == (128, 64)   # stitched back to the init size
        assert page.locator("#img2img_gallery img").count() == 1
        screenshot(page, "extension_tiler_img2img")
        choose(page, "img2img_script", "None")
        tiles.wait_for(state="hidden")
        assert errors == []


def test_extension_tab_and_setting(ext_server):
    with browser_page() as page:
        open_ui(page, ext_server)
        open_tab(page, "tab_sample_recorder")
        assert page.locator("#tab_sample_recorder-button").inner_text().strip() == "Recorder"
        text = page.locator("#sample_recorder_text")
        text.wait_for(state="visible")
        assert text.inner_text().strip() == "Sample recorder tab"

        open_tab(page, "tab_settings")
        open_tab(page, "settings_sample_recorder")
        assert page.locator("#settings_sample_recorder-button").inner_text().strip() == "Sample recorder"
        mark = page.locator("#setting_sample_recorder_mark")
        mark.wait_for(state="visible")
        assert "a setting added by an extension" in mark.inner_text()
        assert mark.get_by_label("off", exact=True).is_checked()
        mark.get_by_label("on", exact=True).check()
        page.locator("#settings_submit").click()
        page.wait_for_function(
            "() => document.querySelector('#settings_result').innerText.includes('settings changed')")
        assert "1 settings changed: sample_recorder_mark." in page.locator("#settings_result").inner_text()
        assert requests.get(ext_server.api("options"), timeout=10).json()["sample_recorder_mark"] == "on"
        assert '"sample_recorder_mark": "on"' in (ext_server.data_dir / "config.json").read_text()
        page.reload()                                              # a new page shows the value in force
        open_ui(page, ext_server)
        open_tab(page, "tab_settings")
        open_tab(page, "settings_sample_recorder")
        assert page.locator("#setting_sample_recorder_mark").get_by_label("on", exact=True).is_checked()


def test_broken_extension_leaves_the_page_working(ext_server):
    listed = {e["name"]: e for e in requests.get(ext_server.api("extensions"), timeout=10).json()}
    assert "fails on purpose at import" in listed["sample-broken"]["errors"]["import"]
    with browser_page() as page:
        errors = page_errors(page)
        open_ui(page, ext_server)
        tabs = page.locator("button[role=tab]").all_inner_texts()
        for label in ("txt2img", "img2img", "Recorder", "Extensions", "Settings"):
            assert label in [t.strip() for t in tabs], tabs
        # the broken script's controls and tab are left out; the rest of the scripts area is there
        assert page.locator("#txt2img_script_container").get_by_text("Recorder", exact=True).is_visible()
        assert page.locator("#txt2img_script").is_visible()
        assert "Traceback" not in page.locator("body").inner_text()
        assert errors == []


def test_reload_ui_brings_scripts_and_tab_back(ext_server):
    with browser_page() as page:
        open_ui(page, ext_server)
        open_tab(page, "tab_settings")
        with page.expect_navigation(timeout=180_000):
            page.locator("#settings_restart_gradio").click()      # Reload UI: POST /internal/reload-ui, then reload
        open_ui(page, ext_server)
        area = page.locator("#txt2img_script_container")
        area.get_by_text("Recorder", exact=True).click()
        page.locator("#script_txt2img_recorder_enabled input[type=checkbox]").wait_for(state="visible")
        open_tab(page, "tab_sample_recorder")
        page.locator("#sample_recorder_text").wait_for(state="visible")
        open_tab(page, "tab_img2img")
        choose(page, "img2img_script", "Sample tiler")
        page.locator("#img2img_script_container").get_by_label("number input for Tiles").wait_for(state="visible")
    log = (ext_server.data_dir / "extensions" / "sample-recorder" / "reload.log").read_text()
    assert "before_reload" in log and "script_unloaded" in log    # the scripts really were unloaded and re-run
