"""The Checkpoint Merger tab in a real browser against the real server: a missing field is reported, a weighted-sum
merge shows its result, the new model appears in the top bar's checkpoint dropdown, loads and generates."""
from __future__ import annotations


import pytest
import requests

from tests.support.browser import browser_page, choose, open_tab, open_ui, poll, screenshot, set_number

pytestmark = pytest.mark.browser

SLOW = 240_000  # ms; CPU work shares two cores with whatever else runs on the machine
MERGED = "zz_browser_merge"  # sorts after the fixture's models, so it never becomes anyone's default








def _options_of(page, elem_id: str) -> list[str]:
    box = page.locator(f"#{elem_id} input[role=combobox]")
    box.click()
    listbox = page.locator(f"#{box.get_attribute('aria-controls')}")
    listbox.wait_for(state="visible")
    names = [o.get_attribute("aria-label") for o in listbox.locator("[role=option]").all()]
    box.evaluate("el => el.blur()")
    listbox.wait_for(state="detached")
    return names




def _merge_and_wait(page, expect: str) -> str:
    """Click Merge and wait for this click's outcome: the expected text, or an error other than the one already
    shown (the box also holds Gradio's timer while the event runs, so only the message itself is compared)."""
    result = page.locator("#modelmerger_result")
    result.evaluate("el => { const e = el.querySelector('.sd-error'); el.dataset.before = e ? e.innerText : ''; }")
    page.locator("#modelmerger_merge").click()
    page.wait_for_function("""(expect) => {
        const el = document.getElementById('modelmerger_result');
        const error = el.querySelector('.sd-error');
        return el.innerText.includes(expect) || (error && error.innerText !== el.dataset.before); }""",
                           arg=expect, timeout=SLOW)
    return result.inner_text()




def _titles(server) -> dict[str, str]:
    return {m["model_name"]: m["title"] for m in requests.get(server.api("sd-models"), timeout=60).json()}


def test_merge_in_the_browser_then_load_and_generate(server):
    original = requests.get(server.api("options"), timeout=60).json()["sd_model_checkpoint"]
    titles = _titles(server)
    target = server.data_dir / "models" / "Stable-diffusion" / f"{MERGED}.safetensors"
    try:
        with browser_page() as page:
            open_ui(page, server)
            open_tab(page, "tab_modelmerger")
            choose(page, "modelmerger_primary_model_name", titles["tiny_sd1"])
            choose(page, "modelmerger_secondary_model_name", titles["tiny_sd1_b"])

            # Add difference without C: a message naming the field, and nothing written
            page.locator("#modelmerger_interp_method label", has_text="Add difference").click()
            files_before = sorted(target.parent.iterdir())
            text = _merge_and_wait(page, "Tertiary model (C): Add difference needs model C")
            assert page.locator("#modelmerger_result .sd-error").count() == 1, text
            assert sorted(target.parent.iterdir()) == files_before

            page.locator("#modelmerger_interp_method label", has_text="Weighted sum").click()
            set_number(page, "modelmerger_interp_amount", 0.5)
            page.locator("#modelmerger_custom_name input, #modelmerger_custom_name textarea").fill(MERGED)
            page.locator("#modelmerger_save_as_half input").check()
            message = _merge_and_wait(page, "Checkpoint saved to")
            assert page.locator("#modelmerger_result .sd-error").count() == 0, message
            assert f"Checkpoint saved to {target}" in message
            assert target.is_file()
            screenshot(page, "modelmerger")

            # the result is in the lists: A/B/C and the top bar's checkpoint dropdown
            new_title = _titles(server)[MERGED]
            assert new_title in message
            assert new_title in _options_of(page, "modelmerger_primary_model_name")
            # the current model was not disturbed by the merge
            assert requests.get(server.api("options"), timeout=60).json()["sd_model_checkpoint"] == original

            choose(page, "setting_sd_model_checkpoint", new_title)  # an option of the top bar's dropdown now
            poll(lambda: requests.get(server.api("options"), timeout=60).json()["sd_model_checkpoint"] == new_title,
                 180, "the merged model did not load")
            assert page.locator("#checkpoint_status .sd-error").count() == 0

            # a fresh page on the switched model: the switch's late update of the size sliders (to the model's
            # native 512) cannot overwrite the 64x64 typed below (a 512x512 image of the tiny fixture takes minutes)
            open_ui(page, server)
            page.locator("#txt2img_prompt textarea").fill("a merged square")
            set_number(page, "txt2img_width", 64)
            set_number(page, "txt2img_height", 64)
            set_number(page, "txt2img_steps", 2)
            page.locator("#txt2img_seed input").fill("8642")
            page.locator("#txt2img_generate").click()
            page.wait_for_function(
                """() => { const info = document.querySelector('#generation_info_txt2img textarea');
                           return (info && info.value.includes('Seed: 8642'))
                                  || document.querySelector('#html_info_txt2img .sd-error'); }""", timeout=SLOW)
            assert page.locator("#html_info_txt2img .sd-error").count() == 0
            text = page.locator("#generation_info_txt2img textarea").input_value()
            assert f"Model: {MERGED}," in text
            assert "Size: 64x64" in text
            assert page.locator("#txt2img_gallery img").first.is_visible()
    finally:  # the other tests share this server and expect the first model and the fixture's files only
        target.unlink(missing_ok=True)  # first, so a server that stopped answering cannot leave it to the next tests
        requests.post(server.api("options"), json={"sd_model_checkpoint": original}, timeout=180).raise_for_status()
        requests.post(server.api("refresh-checkpoints"), timeout=60)
