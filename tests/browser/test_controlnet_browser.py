"""ControlNet in the page, driven as a user drives it, on a fresh machine (an empty data folder: the bundled demo model
and its Canny ControlNet): the accordion with the extension's element ids and one tab per unit, a control image
uploaded, Enable, Control Type "Canny" choosing the canny preprocessor and the demo ControlNet, and a generation whose
object follows the control's shape instead of the prompt's position; then the infotext pasted back into a unit."""
from __future__ import annotations

import io
from urllib.parse import urljoin

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support.browser import browser_page, gallery_image, open_ui, screenshot, set_number, wait_info
from tests.support.server import start_server
from tools.demo_model import controlnet as demo_cn, data

pytestmark = pytest.mark.browser

UNIT_ITEMS = ("input_image", "controlnet_enable_checkbox", "controlnet_low_vram_checkbox",
              "controlnet_pixel_perfect_checkbox", "controlnet_preprocessor_preview_checkbox",
              "controlnet_type_filter_radio", "controlnet_preprocessor_dropdown", "controlnet_trigger_preprocessor",
              "controlnet_model_dropdown", "controlnet_refresh_models", "controlnet_control_weight_slider",
              "controlnet_start_control_step_slider", "controlnet_ending_control_step_slider",
              "controlnet_preprocessor_resolution_slider", "controlnet_threshold_A_slider",
              "controlnet_threshold_B_slider", "controlnet_control_mode_radio", "controlnet_resize_mode_radio",
              "controlnet_hr_option_radio")
# the control: a large white square on the right, on black; the prompt puts a red square on the left
CONTROL = data.Obj("white", "square", "large", "right", *data.ANCHORS["right"], data.EXTENT["large"])
PROMPT = "a large red square on the left, blue background"
SEED = 10001


@pytest.fixture(scope="module")
def cn_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("controlnet-page"))
    yield srv
    srv.stop()


def unit(i: int, item: str, tab: str = "txt2img") -> str:
    return f"{tab}_controlnet_ControlNet-{i}_{item}"


def combobox_value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[role=combobox]").input_value()


def test_canny_control_steers_the_generation_and_pastes_back(cn_server, tmp_path):
    count = requests.get(cn_server.url + "/controlnet/settings", timeout=10).json()["control_net_unit_count"]
    assert count == 3   # the setting's default
    control_path = tmp_path / "control.png"
    Image.fromarray(data.render(data.Scene("black", (CONTROL,)))).save(control_path)
    with browser_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_ui(page, cn_server)
        # every unit's element ids are in the page's config (closed accordions and unopened tabs mount late)
        ids = set(page.evaluate("() => window.gradio_config.components.map(c => c.props.elem_id).filter(Boolean)"))
        missing = [unit(i, item, tab) for tab in ("txt2img", "img2img") for i in range(count) for item in UNIT_ITEMS
                   if unit(i, item, tab) not in ids]
        assert missing == [] and {"txt2img_controlnet", "img2img_controlnet"} <= ids

        page.locator("#txt2img_controlnet").get_by_text("ControlNet (built in)", exact=True).click()
        tabs = page.locator("#txt2img_controlnet_tabs button[role=tab]")
        tabs.first.wait_for(state="visible")
        assert [t.strip() for t in tabs.all_inner_texts()] == [f"ControlNet Unit {i}" for i in range(count)]

        editor = page.locator(f"#{unit(0, 'input_image')}")
        editor.locator("input[type=file]").set_input_files(str(control_path))
        editor.locator(".empty").wait_for(state="detached")
        page.locator(f"#{unit(0, 'controlnet_enable_checkbox')} input[type=checkbox]").check()
        page.locator(f"#{unit(0, 'controlnet_type_filter_radio')}").get_by_label("Canny", exact=True).check()
        page.wait_for_function("(id) => document.querySelector(`#${id} input[role=combobox]`).value === 'canny'",
                               arg=unit(0, "controlnet_preprocessor_dropdown"))
        model = combobox_value(page, unit(0, "controlnet_model_dropdown"))
        assert model.startswith("control_demo-shapes_canny [") and model.endswith("]"), model
        # the unit's status line says what it will send once the state holds it
        status = page.locator(f"#{unit(0, 'status')}")
        expected = f"Enabled · Preprocessor: canny · Model: {model} · Image: 64x64"
        page.wait_for_function("([id, text]) => document.getElementById(id).innerText.trim() === text",
                               arg=[unit(0, "status"), expected])
        assert status.inner_text().strip() == expected
        # 💥 runs the preprocessor into the preview (hidden until then): the square's edges, nothing on the left
        preview = page.locator(f"#{unit(0, 'generated_image')}")
        assert not preview.is_visible()
        page.locator(f"#{unit(0, 'controlnet_trigger_preprocessor')}").click()
        preview.locator("img").wait_for(state="visible")
        assert page.locator(f"#{unit(0, 'controlnet_preprocessor_preview_checkbox')} input").is_checked()
        response = requests.get(urljoin(cn_server.url + "/", preview.locator("img").get_attribute("src")), timeout=30)
        edges = np.asarray(Image.open(io.BytesIO(response.content)).convert("L")) > 127
        assert edges.shape == (64, 64) and edges[16:48, 30:64].sum() >= 20 and not edges[:, :28].any()

        page.locator("#txt2img_prompt textarea").fill(PROMPT)
        set_number(page, "txt2img_width", 64)
        set_number(page, "txt2img_height", 64)
        set_number(page, "txt2img_steps", 20)
        page.locator("#txt2img_seed input").fill(str(SEED))
        page.locator("#txt2img_generate").click()
        info = wait_info(page, "txt2img", f"Seed: {SEED}")
        assert "ControlNet 0: " in info and "Module: canny" in info and f"Model: {model}" in info, info
        screenshot(page, "controlnet_txt2img")
        image = np.asarray(gallery_image(page, cn_server, "txt2img").convert("RGB"))
        # the detected map is appended after the image, as the extension does
        assert page.locator("#txt2img_gallery img").count() == 2

        # paste the infotext with its unit renumbered to 2 and another weight: unit 2's controls follow it
        pasted = info.replace("ControlNet 0: ", "ControlNet 2: ").replace("Weight: 1.0", "Weight: 0.45")
        assert "Weight: 0.45" in pasted
        page.locator("#txt2img_prompt textarea").fill(pasted)
        page.locator("#txt2img_paste").click()
        page.wait_for_function("(p) => document.querySelector('#txt2img_prompt textarea').value === p", arg=PROMPT)
        tabs.nth(2).click()
        page.wait_for_function("(id) => document.getElementById(id)?.innerText.includes('Enabled')",
                               arg=unit(2, "status"))
        assert page.locator(f"#{unit(2, 'controlnet_enable_checkbox')} input[type=checkbox]").is_checked()
        assert combobox_value(page, unit(2, "controlnet_preprocessor_dropdown")) == "canny"
        assert combobox_value(page, unit(2, "controlnet_model_dropdown")) == model
        assert page.locator(f"#{unit(2, 'controlnet_control_weight_slider')} input[type=number]").input_value() \
            == "0.45"
        assert errors == []

    target = data.shape_mask(CONTROL) > 0.5
    iou = demo_cn.iou(demo_cn.object_mask(image), target)
    assert iou >= 0.5, f"the generated object does not follow the control (IoU {iou:.2f})"
