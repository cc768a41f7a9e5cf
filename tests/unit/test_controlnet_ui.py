"""The ControlNet accordion (modules/ui/controlnet_ui.py) built in a gr.Blocks, without a server: element ids and unit
tabs as the extension has them, the unit dict each unit's controls make (parsed by the same parser as the API's),
the Control Type filter, the per-preprocessor sliders, the canvas, the pose JSON box, and infotext paste through the
scripts' paste seam (modules/ui/common.script_paste_values)."""
from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest

from modules import scripts
from modules.controlnet import preprocessors
from modules.controlnet.units import parse_unit
from modules.ui import common, controlnet_ui as cn

TITLES = ["control_demo-shapes_canny [e3b0c442]", "control_v11p_sd15_openpose [cab727d4]",
          "control_sd15_depth [fef5e48e]"]
UNIT_KEYS = {"enabled", "module", "model", "weight", "image", "resize_mode", "low_vram", "processor_res",
             "threshold_a", "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode",
             "hr_option", "save_detected_map", "openpose_json"}
POSE = {"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": [
    32, 10, 1, 32, 20, 1, 24, 20, 1, 20, 30, 1, 18, 40, 1, 40, 20, 1, 44, 30, 1, 46, 40, 1,
    28, 40, 1, 28, 50, 1, 28, 60, 1, 36, 40, 1, 36, 50, 1, 36, 60, 1, 30, 8, 1, 34, 8, 1, 28, 9, 1, 36, 9, 1]}]}


def canny_preview(unit: dict, width: int, height: int) -> np.ndarray:
    """The 💥 dependency: the real canny preprocessor on the unit's image."""
    parsed = parse_unit(unit)
    return preprocessors.get(parsed.module).run(parsed.image.image, 64, 100, 200).image


def deps(count: int = 3, calls: list | None = None) -> cn.ControlNetUIDeps:
    def titles(refresh: bool) -> list[str]:
        if calls is not None:
            calls.append(refresh)
        return TITLES + (["control_v11p_sd15_canny [d14c016b]"] if refresh else [])
    return cn.ControlNetUIDeps(count, titles, canny_preview)


class Built:
    """The accordion in a Blocks, as a tab builds it: width/height/Hires. fix first, inside a script runner."""

    def __init__(self, tab="txt2img", is_img2img=False, count=3, calls=None):
        self.runner = scripts.ScriptRunner()
        self.runner.prepare_ui()
        previous, scripts.scripts_current = scripts.scripts_current, self.runner
        try:
            with gr.Blocks() as self.demo:
                self.width = gr.Slider(64, 2048, value=64, elem_id=f"{tab}_width")
                self.height = gr.Slider(64, 2048, value=64, elem_id=f"{tab}_height")
                self.hires = None if is_img2img else gr.Checkbox(False, elem_id=f"{tab}_enable_hr")
                self.states = cn.build(tab, is_img2img, deps(count, calls))
        finally:
            scripts.scripts_current = previous

    def by_id(self, elem_id: str):
        found = [b for b in self.demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
        assert len(found) == 1, f"{elem_id}: {len(found)} blocks"
        return found[0]

    def handler(self, component, event: str, output=None):
        """The function an event of a component runs (the one that fills `output`, when given)."""
        for fn in self.demo.fns.values():
            if (component._id, event) in [tuple(t) for t in fn.targets] and (output is None or output in fn.outputs):
                return fn
        raise AssertionError(f"no {event} handler on {component.elem_id}")


def unit_id(i, item, tab="txt2img"):
    return f"{tab}_controlnet_ControlNet-{i}_{item}"


def run(fn, values: dict):
    """Call a handler with values for its inputs (by component), as Gradio would after preprocessing."""
    return fn.fn(*[values[c._id] for c in fn.inputs])


def defaults(built: Built, fn) -> dict:
    return {c._id: c.value for c in fn.inputs}


def rgba(arr: np.ndarray, alpha: int = 255) -> np.ndarray:
    return np.dstack([arr, np.full(arr.shape[:2], alpha, np.uint8)])


def square_image() -> np.ndarray:
    img = np.zeros((64, 64, 3), np.uint8)
    img[20:44, 36:60] = 255
    return img


# --- layout ----------------------------------------------------------------------------------------------------
def test_accordion_tabs_and_element_ids():
    built = Built()
    assert len(built.states) == 3 and all(isinstance(s, gr.State) for s in built.states)
    group = built.by_id("txt2img_controlnet")
    assert isinstance(group, gr.Column)     # not a Group: Gradio 6 renders a Group's id twice
    acc = built.by_id("controlnet")
    assert isinstance(acc, gr.Accordion) and acc.open is False and acc.label == cn.ACCORDION_LABEL
    tabs = [b for b in built.demo.blocks.values() if isinstance(b, gr.Tab)]
    assert [t.label for t in tabs] == ["ControlNet Unit 0", "ControlNet Unit 1", "ControlNet Unit 2"]
    for i in range(3):
        for item, kind in (("input_image", gr.ImageEditor), ("controlnet_enable_checkbox", gr.Checkbox),
                           ("controlnet_low_vram_checkbox", gr.Checkbox),
                           ("controlnet_pixel_perfect_checkbox", gr.Checkbox),
                           ("controlnet_preprocessor_preview_checkbox", gr.Checkbox),
                           ("controlnet_type_filter_radio", gr.Radio),
                           ("controlnet_preprocessor_dropdown", gr.Dropdown),
                           ("controlnet_trigger_preprocessor", gr.Button),
                           ("controlnet_model_dropdown", gr.Dropdown), ("controlnet_refresh_models", gr.Button),
                           ("controlnet_control_weight_slider", gr.Slider),
                           ("controlnet_start_control_step_slider", gr.Slider),
                           ("controlnet_ending_control_step_slider", gr.Slider),
                           ("controlnet_preprocessor_resolution_slider", gr.Slider),
                           ("controlnet_threshold_A_slider", gr.Slider), ("controlnet_threshold_B_slider", gr.Slider),
                           ("controlnet_control_mode_radio", gr.Radio), ("controlnet_resize_mode_radio", gr.Radio),
                           ("controlnet_hr_option_radio", gr.Radio), ("generated_image", gr.Image),
                           ("openpose_json_text", gr.Code)):
            assert isinstance(built.by_id(unit_id(i, item)), kind), item
    radio = built.by_id(unit_id(0, "controlnet_type_filter_radio"))
    names = [c[0] for c in radio.choices]
    assert names[0] == "All" and "Canny" in names and "OpenPose" in names and radio.value == "All"
    weight = built.by_id(unit_id(0, "controlnet_control_weight_slider"))
    assert (weight.minimum, weight.maximum, weight.step, weight.value) == (0, 2, 0.05, 1)
    model = built.by_id(unit_id(0, "controlnet_model_dropdown"))
    assert [c[0] for c in model.choices] == ["None"] + TITLES and model.value == "None"
    assert built.by_id(unit_id(0, "controlnet_hr_option_radio")).visible is False   # Hires. fix is off
    # the API's defaults: a disabled unit per slot
    assert [s.value for s in built.states] == [cn.default_unit()] * 3
    assert set(cn.default_unit()) == UNIT_KEYS


def test_one_unit_has_no_tabs():
    built = Built(count=1)
    assert not [b for b in built.demo.blocks.values() if isinstance(b, (gr.Tab, gr.Tabs))]
    assert len(built.states) == 1
    built.by_id("txt2img_controlnet_ControlNet_controlnet_enable_checkbox")


def test_img2img_hides_image_resize_and_preview_until_independent_image():
    built = Built("img2img", True)
    panel_image = built.by_id(unit_id(0, "input_image", "img2img"))
    independent = built.by_id(unit_id(0, "controlnet_same_img2img_checkbox", "img2img"))
    assert independent.value is False
    resize = built.by_id(unit_id(0, "controlnet_resize_mode_radio", "img2img"))
    trigger = built.by_id(unit_id(0, "controlnet_trigger_preprocessor", "img2img"))
    assert resize.visible is False and trigger.visible is False
    fn = built.handler(independent, "change", resize)
    assert [u["visible"] for u in run(fn, {independent._id: True})] == [True] * 4
    # without the independent image the unit sends none (the lead's code then takes the img2img image)
    rebuild = built.handler(panel_image, "change", built.states[0])
    values = defaults(built, rebuild)
    values[panel_image._id] = {"background": rgba(square_image()), "layers": [], "composite": None}
    values[built.by_id(unit_id(0, "controlnet_enable_checkbox", "img2img"))._id] = True
    unit, status = run(rebuild, values)
    assert unit["image"] is None and status == "Enabled · Preprocessor: none · Model: None · Uses the img2img image"
    values[independent._id] = True
    unit, _ = run(rebuild, values)
    assert np.array_equal(unit["image"]["image"], square_image())


# --- the unit dict ---------------------------------------------------------------------------------------------
def test_controls_make_the_api_unit_dict():
    built = Built()
    enable = built.by_id(unit_id(1, "controlnet_enable_checkbox"))
    rebuild = built.handler(enable, "change", built.states[1])
    assert rebuild.trigger_mode == "always_last"
    # every control of the unit triggers the same rebuild
    for item in ("input_image", "controlnet_low_vram_checkbox", "controlnet_model_dropdown",
                 "controlnet_threshold_A_slider", "controlnet_control_mode_radio", "openpose_json_text"):
        assert built.handler(built.by_id(unit_id(1, item)), "change", built.states[1]) is rebuild
    values = defaults(built, rebuild)
    ids = {item: built.by_id(unit_id(1, item))._id for item in (
        "input_image", "controlnet_enable_checkbox", "controlnet_preprocessor_dropdown", "controlnet_model_dropdown",
        "controlnet_control_weight_slider", "controlnet_threshold_A_slider", "controlnet_threshold_B_slider",
        "controlnet_preprocessor_resolution_slider", "controlnet_control_mode_radio", "controlnet_hr_option_radio")}
    stroke = np.zeros((64, 64, 4), np.uint8)
    stroke[5:9, 5:30] = (255, 255, 255, 255)
    values.update({ids["input_image"]: {"background": rgba(square_image()), "layers": [stroke], "composite": None},
                   ids["controlnet_enable_checkbox"]: True, ids["controlnet_preprocessor_dropdown"]: "canny",
                   ids["controlnet_model_dropdown"]: TITLES[0], ids["controlnet_control_weight_slider"]: 0.75,
                   ids["controlnet_threshold_A_slider"]: 80, ids["controlnet_threshold_B_slider"]: 160,
                   ids["controlnet_preprocessor_resolution_slider"]: 256,
                   ids["controlnet_control_mode_radio"]: "My prompt is more important",
                   ids["controlnet_hr_option_radio"]: "Low res only"})
    unit, status = run(rebuild, values)
    assert set(unit) == UNIT_KEYS
    assert (unit["enabled"], unit["module"], unit["model"], unit["weight"]) == (True, "canny", TITLES[0], 0.75)
    assert (unit["processor_res"], unit["threshold_a"], unit["threshold_b"]) == (256, 80, 160)
    assert unit["control_mode"] == "My prompt is more important" and unit["hr_option"] == "Low res only"
    assert unit["image"]["mask"][6, 10] == 255 and unit["image"]["mask"][30, 40] == 0
    assert status == f"Enabled · Preprocessor: canny · Model: {TITLES[0]} · Image: 64x64"
    # the API's parser reads it as it reads an API unit
    parsed = parse_unit(unit, 1)
    assert parsed.enabled and parsed.module == "canny" and parsed.weight == 0.75
    assert np.array_equal(parsed.image.image, square_image()) and parsed.image.mask[6, 10] == 255
    # a preprocessor without threshold sliders sends -1 for them (its own defaults)
    values[ids["controlnet_preprocessor_dropdown"]] = "openpose"
    unit, _ = run(rebuild, values)
    assert (unit["threshold_a"], unit["threshold_b"]) == (-1, -1) and unit["processor_res"] == 256
    values[ids["controlnet_enable_checkbox"]] = False
    assert run(rebuild, values)[1] == "Unit off"


def test_editor_values():
    assert cn.editor_image(None) is None
    assert cn.editor_image({"background": None, "layers": [np.zeros((8, 8, 4), np.uint8)], "composite": None}) is None
    # a half-transparent upload is composited onto white (the extension's rule)
    half = rgba(np.zeros((4, 4, 3), np.uint8), 128)
    got = cn.editor_image({"background": half, "layers": [], "composite": None})
    assert got["mask"] is None and got["image"].shape == (4, 4, 3) and 125 <= int(got["image"][0, 0, 0]) <= 129
    # strokes on an empty canvas: a black image, the strokes as the mask (the "canvas scribble")
    stroke = np.zeros((16, 16, 4), np.uint8)
    stroke[3, :] = (255, 255, 255, 255)
    got = cn.editor_image({"background": None, "layers": [stroke], "composite": None})
    assert not got["image"].any() and got["mask"][3].all() and not got["mask"][4].any()


# --- control type, preprocessor sliders, models --------------------------------------------------------------
def test_control_type_filters_and_picks_defaults():
    built = Built()
    radio = built.by_id(unit_id(0, "controlnet_type_filter_radio"))
    fn = built.handler(radio, "input")
    module, model, res, a, b = run(fn, {radio._id: "Canny", built.by_id(
        unit_id(0, "controlnet_pixel_perfect_checkbox"))._id: False})
    assert module["value"] == "canny" and module["choices"][0] == "none" and "openpose_full" not in module["choices"]
    assert model == {"__type__": "update", "choices": ["None", TITLES[0]], "value": TITLES[0]}
    canny = preprocessors.get("canny")
    assert (a["label"], a["value"], a["minimum"], a["maximum"]) == (canny.slider_a.name, canny.slider_a.value,
                                                                    canny.slider_a.minimum, canny.slider_a.maximum)
    assert res["visible"] and a["visible"] and b["visible"]
    module, model, *_ = run(fn, {radio._id: "OpenPose", built.by_id(
        unit_id(0, "controlnet_pixel_perfect_checkbox"))._id: True})
    assert module["value"] == "openpose_full" and model["value"] == TITLES[1]   # the "11" model first
    module, model, res, a, b = run(fn, {radio._id: "All", built.by_id(
        unit_id(0, "controlnet_pixel_perfect_checkbox"))._id: False})
    assert module["value"] == "none" and model["value"] == "None" and model["choices"] == ["None"] + TITLES
    none = preprocessors.get("none")
    assert res["visible"] is (none.resolution is not None) and not a["visible"] and not b["visible"]


def test_preprocessor_pick_sets_its_sliders_and_pixel_perfect_hides_resolution():
    built = Built()
    dropdown = built.by_id(unit_id(0, "controlnet_preprocessor_dropdown"))
    pp = built.by_id(unit_id(0, "controlnet_pixel_perfect_checkbox"))
    res, a, b = run(built.handler(dropdown, "input"), {dropdown._id: "canny", pp._id: True})
    assert res["visible"] is False and a["visible"] and b["value"] == preprocessors.get("canny").slider_b.value
    resolution = built.by_id(unit_id(0, "controlnet_preprocessor_resolution_slider"))
    toggle = built.handler(pp, "change", resolution)
    assert run(toggle, {pp._id: False, dropdown._id: "canny"})["visible"] is True
    assert run(toggle, {pp._id: True, dropdown._id: "canny"})["visible"] is False
    assert run(toggle, {pp._id: False, dropdown._id: "inpaint_only"})["visible"] is False   # it has no resolution


def test_refresh_rescans_models():
    calls = []
    built = Built(calls=calls)
    button = built.by_id(unit_id(0, "controlnet_refresh_models"))
    fn = built.handler(button, "click")
    radio = built.by_id(unit_id(0, "controlnet_type_filter_radio"))
    model = built.by_id(unit_id(0, "controlnet_model_dropdown"))
    update = run(fn, {radio._id: "Canny", model._id: TITLES[0]})
    assert calls[-1] is True
    assert update["choices"] == ["None", TITLES[0], "control_v11p_sd15_canny [d14c016b]"]
    assert update["value"] == TITLES[0]          # the chosen model is still there: kept


def test_hires_checkbox_shows_the_hires_option():
    built = Built()
    hr = built.by_id(unit_id(2, "controlnet_hr_option_radio"))
    fns = [fn for fn in built.demo.fns.values()
           if (built.hires._id, "change") in [tuple(t) for t in fn.targets] and hr in fn.outputs]
    assert len(fns) == 1
    assert fns[0].fn(True)["visible"] is True and fns[0].fn(False)["visible"] is False


def test_preview_runs_the_preprocessor_on_the_current_controls():
    built = Built()
    trigger = built.by_id(unit_id(0, "controlnet_trigger_preprocessor"))
    fn = built.handler(trigger, "click")
    values = defaults(built, fn)
    values[built.by_id(unit_id(0, "input_image"))._id] = {"background": rgba(square_image()), "layers": [],
                                                          "composite": None}
    values[built.by_id(unit_id(0, "controlnet_preprocessor_dropdown"))._id] = "canny"
    detected, group, allow, message = run(fn, values)
    assert message == "" and group["visible"] is True and allow is True
    edges = detected[..., 0] > 0
    # the square's outline (rows 20–43, columns 36–59), give or take a pixel; nothing inside or away from it
    assert edges[19:21, 45].any() and edges[30, 35:37].any() and not edges[30, 45] and not edges[5, 5]
    # a failure is a message under the unit, naming the problem
    values[built.by_id(unit_id(0, "input_image"))._id] = None
    *_, message = run(fn, values)
    assert "sd-error" in message


# --- openpose JSON -------------------------------------------------------------------------------------------
def test_pose_json_box_previews_and_goes_into_the_unit(tmp_path):
    built = Built()
    code = built.by_id(unit_id(0, "openpose_json_text"))
    draw = built.handler(code, "change", built.by_id(unit_id(0, "openpose_preview")))
    preview, message = run(draw, {code._id: json.dumps(POSE)})
    assert message == "" and preview.shape == (64, 64, 3)
    assert tuple(preview[20, 32]) != (0, 0, 0)           # the neck joint is drawn in its colour
    preview, message = run(draw, {code._id: '{"people": [}'})
    assert preview is None and "line 1" in message
    preview, message = run(draw, {code._id: ""})
    assert preview is None and message == ""
    # upload a .json: its text lands in the box
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(POSE), encoding="utf-8")
    upload = built.by_id(unit_id(0, "openpose_json_file"))
    text, message = run(built.handler(upload, "upload"), {upload._id: str(path)})
    assert json.loads(text) == POSE and message == ""
    rebuild = built.handler(code, "change", built.states[0])
    values = defaults(built, rebuild)
    values[code._id] = text
    unit, status = run(rebuild, values)
    assert unit["openpose_json"] == POSE and unit["image"] is None
    assert parse_unit(dict(unit, enabled=True)).openpose_json == POSE


# --- infotext paste ----------------------------------------------------------------------------------------------
INFOTEXT = ('a red circle\nSteps: 2, Seed: 5, Size: 64x64, ControlNet 1: "Module: canny, Model: '
            'control_demo-shapes_canny [00000000], Weight: 0.55, Resize Mode: Just Resize, Processor Res: 256, '
            'Threshold A: 90, Threshold B: 180, Guidance Start: 0.1, Guidance End: 0.8, Pixel Perfect: False, '
            'Control Mode: ControlNet is more important"')


def test_infotext_pastes_into_the_unit_it_names():
    built = Built()
    targets = built.runner.infotext_fields
    assert targets, "build() registers the units' paste fields with the runner"
    updates = dict(zip([c._id for c, _ in targets], common.script_paste_values(INFOTEXT, targets)))

    def value(item, unit=1):
        return updates[built.by_id(unit_id(unit, item))._id]
    assert value("controlnet_enable_checkbox")["value"] is True
    assert value("controlnet_type_filter_radio")["value"] == "All"
    assert value("controlnet_preprocessor_dropdown")["value"] == "canny"
    # the hash differs: the model is found by its stem
    assert value("controlnet_model_dropdown")["value"] == TITLES[0]
    assert value("controlnet_control_weight_slider")["value"] == 0.55
    assert value("controlnet_start_control_step_slider")["value"] == 0.1
    assert value("controlnet_ending_control_step_slider")["value"] == 0.8
    assert value("controlnet_resize_mode_radio")["value"] == "Just Resize"
    assert value("controlnet_control_mode_radio")["value"] == "ControlNet is more important"
    threshold = value("controlnet_threshold_A_slider")
    assert threshold["value"] == 90 and threshold["label"] == preprocessors.get("canny").slider_a.name
    assert value("controlnet_preprocessor_resolution_slider")["value"] == 256
    # units the infotext does not name keep what they have
    assert value("controlnet_enable_checkbox", 0) == {"__type__": "update"}
    assert value("controlnet_preprocessor_dropdown", 2) == {"__type__": "update"}


def test_paste_seam_casts_plain_keys_like_a1111():
    with gr.Blocks():
        box = gr.Checkbox(True)
        steps = gr.Slider(1, 150, value=20)
        name = gr.Textbox("x")
    targets = [(box, "Recorder enabled"), (steps, "Recorder steps"), (name, lambda params: params.get("Nope")),
               (name, lambda params: 1 / 0)]
    text = "p\nSteps: 2, Recorder enabled: False, Recorder steps: 7"
    got = common.script_paste_values(text, targets)
    assert got == [{"__type__": "update", "value": False}, {"__type__": "update", "value": 7.0},
                   {"__type__": "update"}, {"__type__": "update"}]
    assert common.script_paste_values(text, []) == []


@pytest.mark.parametrize("text, expected", [
    ("Module: canny, Weight: 1.0, Pixel Perfect: True, Processor Res: 512, Unknown: x",
     {"module": "canny", "weight": 1.0, "pixel_perfect": True, "processor_res": 512}),
    ("garbage", {}),
])
def test_parse_infotext_unit(text, expected):
    assert cn.parse_infotext_unit(text) == expected


def test_control_type_as_dropdown_with_the_setting(monkeypatch):
    monkeypatch.setattr(cn, "_setting", lambda key, default: True if key == "controlnet_control_type_dropdown"
                        else default)
    built = Built(count=1)
    control_type = built.by_id("txt2img_controlnet_ControlNet_controlnet_type_filter_radio")
    assert isinstance(control_type, gr.Dropdown) and control_type.value == "All"
    module, *_ = run(built.handler(control_type, "input"), {control_type._id: "Canny", built.by_id(
        "txt2img_controlnet_ControlNet_controlnet_pixel_perfect_checkbox")._id: False})
    assert module["value"] == "canny"


def test_picking_a_model_names_its_preprocessor():
    built = Built()
    model = built.by_id(unit_id(0, "controlnet_model_dropdown"))
    module = built.by_id(unit_id(0, "controlnet_preprocessor_dropdown"))
    hint = built.handler(model, "input")
    assert "Suggested preprocessor for this model: openpose_full" in run(hint, {model._id: TITLES[1],
                                                                                module._id: "canny"})
    assert run(hint, {model._id: TITLES[1], module._id: "openpose_full"}) == ""
    assert run(hint, {model._id: TITLES[1], module._id: "none"}) == ""      # a ready pose image
    assert run(hint, {model._id: "None", module._id: "canny"}) == ""
