"""The ControlNet accordion of txt2img and img2img, with sd-webui-controlnet's layout and element ids
(CONTROLNET-REFERENCE §1.9), built inside the built-in extension's `Script.ui()`.

Each unit's controls feed one `gr.State` whose value is the unit as the API sends it (§1.5 keys plus
"openpose_json"), so the script's `process()` parses UI and API units with the same code. The state is rebuilt by
one listener per unit on every control's change, with `trigger_mode="always_last"`: rebuilds of a unit never run at
the same time (a slow image upload cannot overwrite a later tick of Enable), and the one that runs last reads every
control as it is then. Pasted infotext (`ControlNet N: "Module: …"`) lands in unit N's controls through
`ScriptRunner.infotext_fields`, which the tabs' paste buttons and PNG Info's Send-to buttons honour.
"""
from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

log = logging.getLogger("sd.controlnet")

# Not "ControlNet v1.1.455": this is not that extension's code and it lacks parts of it (batch mode, IP-Adapter),
# and a user who copied the extension folder, as the walkthrough says, sees that the built-in one serves it.
ACCORDION_LABEL = "ControlNet (built in)"
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS = ("Both", "Low res only", "High res only")
ALL = "All"
MAX_POSE_JSON_BYTES = 5 * 1024 * 1024

@dataclass
class ControlNetUIDeps:
    """What the accordion needs from the built-in extension's script."""
    unit_count: int
    model_titles: Callable[[bool], list[str]]                # refresh? → "stem [hash]" titles (no "None")
    run_preprocessor: Callable[[dict, int, int], np.ndarray]  # (unit dict, width, height) → detected map


def default_unit() -> dict:
    """A unit as the UI starts it: disabled, §1.5's defaults (sliders at -1: the preprocessor's own default)."""
    return {"enabled": False, "module": "none", "model": "None", "weight": 1.0, "image": None,
            "resize_mode": "Crop and Resize", "low_vram": False, "processor_res": -1, "threshold_a": -1,
            "threshold_b": -1, "guidance_start": 0.0, "guidance_end": 1.0, "pixel_perfect": False,
            "control_mode": "Balanced", "hr_option": "Both", "save_detected_map": True, "openpose_json": None}


# --- the catalogue: preprocessors, models, control types ------------------------------------------------------
class Catalog:
    """Preprocessor labels, model titles and the Control Type filter (§1.1), read from the controlnet package. The
    model list changes only on 🔄 (the extension's behaviour); every page shares it."""

    def __init__(self, deps: ControlNetUIDeps):
        self.deps = deps
        self.titles = list(deps.model_titles(False))
        self.types = self._control_types()

    def _control_types(self) -> dict:
        from modules.controlnet.control_types import control_types
        types = control_types(self.titles)
        return types.get("control_types", types)   # the /controlnet/control_types body

    def refresh(self) -> None:
        self.titles = list(self.deps.model_titles(True))
        self.types = self._control_types()

    def type_names(self) -> list[str]:
        return list(self.types)

    def modules(self, control_type: str = ALL) -> list[str]:
        entry = self.types.get(control_type) or self.types[ALL]
        return list(entry["module_list"])

    def models(self, control_type: str = ALL) -> list[str]:
        entry = self.types.get(control_type) or self.types[ALL]
        return list(entry["model_list"])

    def defaults(self, control_type: str) -> tuple[str, str]:
        entry = self.types.get(control_type) or self.types[ALL]
        return entry["default_option"], entry["default_model"]

    @staticmethod
    def preprocessor(name):
        from modules.controlnet import preprocessors
        return preprocessors.get(name) if name else None

    def label_of(self, name: str) -> str | None:
        """A module name or label as the dropdown shows it (labels), or None when no preprocessor has it."""
        pre = self.preprocessor(name)
        return pre.label if pre is not None else None

    def match_model(self, text: str) -> str:
        """A model as the infotext names it → a title of the list: exact title, else the stem (case-insensitive),
        else the shortest title whose stem contains it (§1.6); otherwise the text itself (generation then says
        which model is missing)."""
        if not text or text == "None" or text in self.titles:
            return text or "None"
        stem = text.split(" [")[0].lower()
        stems = {t.split(" [")[0].lower(): t for t in self.titles}
        if stem in stems:
            return stems[stem]
        close = sorted((t for t in self.titles if stem in t.split(" [")[0].lower()), key=len)
        return close[0] if close else text


# --- slider configuration per preprocessor -------------------------------------------------------------------
SLIDER_SLOTS = ("resolution", "slider_a", "slider_b")
SLIDER_LABELS = ("Preprocessor resolution", "Threshold A", "Threshold B")
UNIT_SLIDER_KEYS = ("processor_res", "threshold_a", "threshold_b")


def _slider_specs(pre) -> list:
    return [getattr(pre, slot, None) if pre is not None else None for slot in SLIDER_SLOTS]


def slider_updates(pre, pixel_perfect: bool, values: list | None = None) -> list:
    """gr.update for the resolution and threshold sliders: shown, labelled and ranged by the preprocessor's
    sliders; `values` (pasted ones) are kept when given, else each slider takes the preprocessor's default."""
    out = []
    for i, spec in enumerate(_slider_specs(pre)):
        if spec is None:
            out.append(gr.update(visible=False))
            continue
        value = spec.value if values is None or values[i] is None else values[i]
        visible = not (i == 0 and pixel_perfect)
        out.append(gr.update(label=spec.name, minimum=spec.minimum, maximum=spec.maximum, step=spec.step,
                             value=value, visible=visible))
    return out


class RangedSlider(gr.Slider):
    """A slider whose range follows the preprocessor. Gradio checks a slider's value against the range the server
    last sent; right after a new range goes out, the page may still send the old value (0.5 against a new minimum
    of 1) and Gradio would refuse the event. Here the value passes as it is: the unit is rebuilt again once the page
    holds the new value, and the generation clamps an out-of-range value to the preprocessor's default (§0.4)."""

    def preprocess(self, payload):
        return None if payload is None else float(payload)

    def get_block_name(self):
        return "slider"   # the page's slider, and A1111's .gradio-slider class


def _slider(spec, label: str, elem_id: str) -> gr.Slider:
    """A slider as `spec` (a preprocessor's Slider) has it; hidden, [0, 1] at 0.5 without one (the extension's)."""
    if spec is None:
        return RangedSlider(0, 1, value=0.5, step=0.01, label=label, visible=False, elem_id=elem_id)
    return RangedSlider(spec.minimum, spec.maximum, value=spec.value, step=spec.step, label=spec.name,
                        elem_id=elem_id)


# --- values --------------------------------------------------------------------------------------------------
def editor_image(value) -> dict | None:
    """ImageEditor value (numpy, RGBA) → {"image": H×W×3 uint8, "mask": H×W uint8 or None}, or None when empty.

    The image is the upload composited onto white (the extension's rule for RGBA); the mask is wherever the brush
    painted, on any layer. Strokes on an empty canvas give a black image with the strokes as the mask (the
    extension's "canvas scribble": the drawing becomes the control)."""
    if not value:
        return None
    background = value.get("background")
    layers = [np.asarray(layer) for layer in value.get("layers") or [] if layer is not None]
    if background is None:
        painted = [layer for layer in layers if layer.ndim == 3 and layer.shape[2] == 4 and layer[..., 3].any()]
        if not painted:
            return None
        image = np.zeros((*painted[0].shape[:2], 3), np.uint8)
    else:
        image = _rgb(np.asarray(background))
    mask = np.zeros(image.shape[:2], np.uint8)
    for layer in layers:
        if layer.ndim == 3 and layer.shape[2] == 4 and layer.shape[:2] == mask.shape:
            np.maximum(mask, layer[..., 3], out=mask)
    return {"image": image, "mask": mask if mask.any() else None}


def _rgb(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255
        return (arr[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def pose_value(text: str | None) -> tuple[Any, str | None]:
    """The Openpose JSON box → (what the unit sends as "openpose_json", an error message or None). Empty → None.
    Text that is not JSON is sent as it is: the generation's parser then names the field."""
    if not text or not text.strip():
        return None, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return text, f"Openpose JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"


def unit_value(catalog: Catalog | None, image, enabled, low_vram, pixel_perfect, module, model, weight,
               guidance_start, guidance_end, processor_res, threshold_a, threshold_b, control_mode, resize_mode,
               hr_option, save_detected_map, pose_text, independent=True) -> dict:
    """The controls of one unit → the unit dict (§1.5). Sliders the preprocessor does not have are sent as -1 (its
    default); img2img without "Upload independent control image" sends no image (the img2img image is used)."""
    pre = catalog.preprocessor(module) if catalog is not None else None
    specs = _slider_specs(pre)
    sliders = [float(v) if spec is not None and v is not None else -1
               for spec, v in zip(specs, (processor_res, threshold_a, threshold_b))]
    pose, _error = pose_value(pose_text)
    unit = default_unit()
    unit.update({
        "enabled": bool(enabled), "module": module or "none", "model": model or "None",
        "weight": float(weight), "image": editor_image(image) if independent else None,
        "resize_mode": resize_mode, "low_vram": bool(low_vram), "guidance_start": float(guidance_start),
        "guidance_end": float(guidance_end), "pixel_perfect": bool(pixel_perfect), "control_mode": control_mode,
        "hr_option": hr_option, "save_detected_map": bool(save_detected_map), "openpose_json": pose,
    })
    unit.update(dict(zip(UNIT_SLIDER_KEYS, sliders)))
    return unit


def status_text(unit: dict, is_img2img: bool) -> str:
    """One line saying what the unit will do, parts joined by " · " (each part is translated on its own)."""
    if not unit["enabled"]:
        return "Unit off"
    parts = ["Enabled", f"Preprocessor: {unit['module']}", f"Model: {unit['model']}"]
    if unit["openpose_json"] is not None:
        parts.append("Pose from JSON")
    elif unit["image"] is not None:
        h, w = unit["image"]["image"].shape[:2]
        parts.append(f"Image: {w}x{h}")
    elif is_img2img:
        parts.append("Uses the img2img image")
    else:
        parts.append("No image yet")
    return html.escape(" · ".join(parts))


def parse_infotext_unit(text: str) -> dict:
    """`Module: canny, Model: x [h], Weight: 1.0, …` → {"module": "canny", "weight": 1.0, …}: the engine's parser of
    the extension's infotext (modules/controlnet/infotext.py)."""
    from modules.controlnet.infotext import parse_unit_text
    return parse_unit_text(text)


# --- the page ------------------------------------------------------------------------------------------------
def _find(elem_id: str):
    """A component already built in the Blocks being built (the tab's width, height, Hires. fix checkbox)."""
    from gradio.context import Context
    root = Context.root_block
    if root is None:
        return None
    for block in root.blocks.values():
        if getattr(block, "elem_id", None) == elem_id:
            return block
    return None


class UnitUI:
    """One unit's controls and its state."""

    def __init__(self, tab: str, index: int | None, is_img2img: bool, catalog: Catalog):
        self.tab, self.is_img2img, self.catalog = tab, is_img2img, catalog
        self.index = index or 0
        self.prefix = f"{tab}_controlnet_" + ("ControlNet" if index is None else f"ControlNet-{index}")
        self._build()

    def _id(self, item: str) -> str:
        return f"{self.prefix}_{item}"

    def _build(self) -> None:
        i2i = self.is_img2img
        self.independent = None
        if i2i:
            self.independent = gr.Checkbox(label="Upload independent control image", value=False,
                                           elem_id=self._id("controlnet_same_img2img_checkbox"))
        with gr.Group(visible=not i2i) as self.image_panel:
            with gr.Row(equal_height=True):
                self.image = gr.ImageEditor(
                    label="Control image", type="numpy", image_mode="RGBA", format="png",
                    sources=["upload", "clipboard"], elem_id=self._id("input_image"), height=320,
                    canvas_size=(512, 512), brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                    elem_classes=["cnet-image"])
                # a Group, not a Column: built from an extension's ui(), visible=False becomes "hidden", which
                # Gradio 6 honours for a Group but not for a Column
                with gr.Group(visible=False, elem_classes=["cnet-generated-image-group"]) as self.preview_group:
                    self.preview = gr.Image(label="Preprocessor Preview", interactive=False, type="numpy",
                                            format="png", elem_id=self._id("generated_image"), height=320)
        with gr.Row():
            self.enabled = gr.Checkbox(label="Enable", value=False, elem_id=self._id("controlnet_enable_checkbox"))
            self.low_vram = gr.Checkbox(label="Low VRAM", value=False,
                                        elem_id=self._id("controlnet_low_vram_checkbox"))
            self.pixel_perfect = gr.Checkbox(label="Pixel Perfect", value=False,
                                             elem_id=self._id("controlnet_pixel_perfect_checkbox"))
            self.allow_preview = gr.Checkbox(label="Allow Preview", value=False, visible=not i2i,
                                             elem_id=self._id("controlnet_preprocessor_preview_checkbox"))
            self.save_map = gr.Checkbox(label="Save detected map", value=True,
                                        elem_id=self._id("controlnet_save_detected_map_checkbox"))
        self.status = gr.HTML(status_text(default_unit(), i2i), elem_id=self._id("status"),
                              elem_classes=["cnet-status"])
        # a radio, or a dropdown with the extension's setting "[Experimental] Use dropdown for control type"
        kind = gr.Dropdown if _setting("controlnet_control_type_dropdown", False) else gr.Radio
        self.control_type = kind(self.catalog.type_names(), value=ALL, label="Control Type",
                                 elem_id=self._id("controlnet_type_filter_radio"),
                                 elem_classes=["controlnet_control_type_filter_group"])
        with gr.Row(equal_height=True):
            self.module = gr.Dropdown(self.catalog.modules(), value="none", label="Preprocessor",
                                      elem_id=self._id("controlnet_preprocessor_dropdown"), scale=4)
            self.trigger = gr.Button("💥", elem_id=self._id("controlnet_trigger_preprocessor"), scale=0,
                                     min_width=40, visible=not i2i)
            self.model = gr.Dropdown(self.catalog.models(), value="None", label="Model", allow_custom_value=True,
                                     elem_id=self._id("controlnet_model_dropdown"), scale=4)
            self.refresh = gr.Button("🔄", elem_id=self._id("controlnet_refresh_models"), scale=0, min_width=40)
        self.weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight",
                                elem_id=self._id("controlnet_control_weight_slider"))
        with gr.Row():
            self.start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                                   elem_id=self._id("controlnet_start_control_step_slider"))
            self.end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step",
                                 elem_id=self._id("controlnet_ending_control_step_slider"))
        with gr.Row():   # as the first preprocessor ("none") has them
            first = _slider_specs(self.catalog.preprocessor("none"))
            items = ("controlnet_preprocessor_resolution_slider", "controlnet_threshold_A_slider",
                     "controlnet_threshold_B_slider")
            self.resolution, self.threshold_a, self.threshold_b = (
                _slider(spec, label, self._id(item)) for spec, label, item in zip(first, SLIDER_LABELS, items))
        self.control_mode = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode",
                                     elem_id=self._id("controlnet_control_mode_radio"))
        self.resize_mode = gr.Radio(list(RESIZE_MODES), value="Crop and Resize", label="Resize Mode",
                                    visible=not i2i, elem_id=self._id("controlnet_resize_mode_radio"))
        self.hr_option = gr.Radio(list(HR_OPTIONS), value="Both", label="Hires-Fix Option", visible=False,
                                  elem_id=self._id("controlnet_hr_option_radio"))
        with gr.Accordion("Openpose JSON", open=False, elem_id=self._id("openpose_json")):
            with gr.Row():
                with gr.Column():
                    self.pose_file = gr.File(label="Upload a pose JSON", file_types=[".json"], type="filepath",
                                             elem_id=self._id("openpose_json_file"), height=90)
                    self.pose_text = gr.Code(language="json", label="Pose keypoints (JSON)", lines=8,
                                             elem_id=self._id("openpose_json_text"))
                self.pose_preview = gr.Image(label="Pose preview", interactive=False, type="numpy", format="png",
                                             elem_id=self._id("openpose_preview"), height=260)
        self.message = gr.HTML("", elem_id=self._id("message"))
        self.state = gr.State(default_unit())

    # the controls whose values make the unit, in unit_value's order
    def value_controls(self) -> list:
        controls = [self.image, self.enabled, self.low_vram, self.pixel_perfect, self.module, self.model, self.weight,
                    self.start, self.end, self.resolution, self.threshold_a, self.threshold_b, self.control_mode,
                    self.resize_mode, self.hr_option, self.save_map, self.pose_text]
        return controls + ([self.independent] if self.independent is not None else [])

    def wire(self, width, height, hires) -> None:
        catalog, i2i = self.catalog, self.is_img2img
        sliders = [self.resolution, self.threshold_a, self.threshold_b]

        def rebuild(*values):
            unit = unit_value(catalog, *values)
            return unit, status_text(unit, i2i)
        controls = self.value_controls()
        gr.on([c.change for c in controls], rebuild, controls, [self.state, self.status], queue=False,
              trigger_mode="always_last", show_progress="hidden")

        def pick_type(control_type, pixel_perfect):
            module, model = catalog.defaults(control_type)
            return (gr.update(choices=catalog.modules(control_type), value=module),
                    gr.update(choices=catalog.models(control_type), value=model),
                    *slider_updates(catalog.preprocessor(module), pixel_perfect))
        self.control_type.input(pick_type, [self.control_type, self.pixel_perfect],
                                [self.module, self.model, *sliders], queue=False, show_progress="hidden")
        self.module.input(lambda module, pp: slider_updates(catalog.preprocessor(module), pp),
                          [self.module, self.pixel_perfect], sliders, queue=False, show_progress="hidden")

        def pixel_perfect_changed(pp, module):
            pre = catalog.preprocessor(module)
            return gr.update(visible=bool(getattr(pre, "resolution", None)) and not pp)
        self.pixel_perfect.change(pixel_perfect_changed, [self.pixel_perfect, self.module], self.resolution,
                                  queue=False, show_progress="hidden")

        self.model.input(_pairing_hint, [self.model, self.module], self.message, queue=False,
                         show_progress="hidden")

        def refresh(control_type, current):
            catalog.refresh()
            choices = catalog.models(control_type)
            value = current if current in choices else catalog.defaults(control_type)[1]
            return gr.update(choices=choices, value=value)
        self.refresh.click(refresh, [self.control_type, self.model], self.model, queue=False)

        self.allow_preview.change(lambda on: gr.update(visible=on), self.allow_preview, self.preview_group,
                                  queue=False, show_progress="hidden")
        self.trigger.click(self._run_preview, [width, height] + controls,
                           [self.preview, self.preview_group, self.allow_preview, self.message])
        if self.independent is not None:
            self.independent.change(lambda on: (gr.update(visible=on),) * 4, self.independent,
                                    [self.image_panel, self.resize_mode, self.trigger, self.allow_preview],
                                    queue=False, show_progress="hidden")
        if hires is not None:
            hires.change(lambda on: gr.update(visible=bool(on)), hires, self.hr_option, queue=False,
                         show_progress="hidden")
        self.pose_file.upload(_read_pose_file, self.pose_file, [self.pose_text, self.message], queue=False)
        self.pose_text.change(_draw_pose, self.pose_text,
                              [self.pose_preview, self.message], queue=False, trigger_mode="always_last",
                              show_progress="hidden")

    def _run_preview(self, width, height, *values):
        """💥: the unit as the controls are now (enabled for the check), through the script's preprocessor."""
        from modules.ui.common import error_html
        unit = dict(unit_value(self.catalog, *values), enabled=True)
        try:
            detected = self.catalog.deps.run_preprocessor(unit, int(width), int(height))
        except Exception as exc:  # noqa: BLE001 - shown under the unit; the page goes on
            log.info("ControlNet preview failed: %s", exc)
            return gr.update(), gr.update(), gr.update(), error_html(str(exc))
        return detected, gr.update(visible=True), True, ""

    # --- infotext paste ------------------------------------------------------------------------------------------
    def paste_fields(self) -> list[tuple]:
        """(component, callable(params)) pairs for ScriptRunner.infotext_fields: `ControlNet <index>` fills this
        unit (and enables it); the Control Type goes back to All so the pasted preprocessor and model are listed."""
        key = f"ControlNet {self.index}"
        catalog = self.catalog

        def fields(params):
            if key not in params or not _paste_enabled():
                return None
            return parse_infotext_unit(params[key])

        def simple(name, convert=lambda v: v, choices=None):
            def get(params):
                got = fields(params)
                if got is None or name not in got:
                    return None
                value = convert(got[name])
                return value if choices is None or value in choices else None
            return get

        def module(params):
            got = fields(params)
            label = catalog.label_of(str(got.get("module", "none"))) if got is not None else None
            return None if label is None else gr.update(choices=catalog.modules(), value=label)

        def model(params):
            got = fields(params)
            if got is None or "model" not in got:
                return None
            return gr.update(choices=catalog.models(), value=catalog.match_model(str(got["model"])))

        def slider(i):
            def get(params):
                got = fields(params)
                if got is None:
                    return None
                pre = catalog.preprocessor(str(got.get("module", "none")))
                values = [got.get(k) for k in UNIT_SLIDER_KEYS]
                values = [v if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values]
                return slider_updates(pre, bool(got.get("pixel_perfect", False)), values)[i]
            return get

        return [
            (self.enabled, lambda params: True if fields(params) is not None else None),
            (self.control_type, lambda params: ALL if fields(params) is not None else None),
            (self.module, module), (self.model, model),
            (self.weight, simple("weight", float)),
            (self.start, simple("guidance_start", float)), (self.end, simple("guidance_end", float)),
            (self.pixel_perfect, simple("pixel_perfect", bool)),
            (self.control_mode, simple("control_mode", str, CONTROL_MODES)),
            (self.resize_mode, simple("resize_mode", str, RESIZE_MODES)),
            (self.resolution, slider(0)), (self.threshold_a, slider(1)), (self.threshold_b, slider(2)),
        ]


def _pairing_hint(model: str, module: str) -> str:
    """A model picked by hand: name the preprocessor that makes the maps it was trained on (§3.4), unless that one,
    or "none" (a ready map), is chosen already."""
    from modules.controlnet.control_types import suggest_preprocessor
    suggested = suggest_preprocessor(model or "")
    if suggested is None or module in (suggested, "none"):
        return ""
    return f'<div class="cnet-hint">{html.escape(f"Suggested preprocessor for this model: {suggested}")}</div>'


def _setting(key: str, default):
    """One of the extension's settings (its default where no runtime is bound: unit tests)."""
    from modules import shared
    return shared.opts.data.get(key, default) if shared.bound() else default


def _paste_enabled() -> bool:
    """The extension's setting "Paste ControlNet parameters in infotext" (on unless turned off)."""
    return bool(_setting("control_net_sync_field_args", True))


def _read_pose_file(path):
    from modules.ui.common import error_html
    if not path:
        return gr.update(), ""
    file = Path(path)
    if file.stat().st_size > MAX_POSE_JSON_BYTES:
        return gr.update(), error_html(f"{file.name}: a pose JSON over {MAX_POSE_JSON_BYTES // 2**20} MB is not "
                                       "read")
    try:
        return file.read_text(encoding="utf-8-sig"), ""
    except (OSError, UnicodeDecodeError) as exc:
        return gr.update(), error_html(f"{file.name}: {exc}")


def _draw_pose(text):
    """The box's pose, drawn as the unit will use it (the skeleton of §6.2) at the document's canvas size."""
    from modules.ui.common import error_html
    value, error = pose_value(text)
    if value is None:
        return None, ""
    if error:
        return None, error_html(error)
    from modules.controlnet.openpose import draw, pose_json
    try:
        docs = pose_json.parse_documents(value)
    except ValueError as exc:
        return None, error_html(f"Openpose JSON: {exc}")
    if not docs:
        return None, error_html("Openpose JSON: no pose document in it")
    return draw.draw(docs[0]), ""


def build(tab: str, is_img2img: bool, deps: ControlNetUIDeps) -> list:
    """The accordion, inside the Script's ui(); returns one gr.State per unit (the unit dict at generation time).
    Registers the units' infotext paste fields with the runner being built (scripts.scripts_current), so the
    Script need not set infotext_fields itself."""
    from modules import scripts
    catalog = Catalog(deps)
    count = max(1, int(deps.unit_count))
    # the generation size for 💥 (a fixed 512 where the tab has no size sliders: unit tests)
    width, height = (_find(f"{tab}_{side}") for side in ("width", "height"))
    width, height = (gr.State(512) if c is None else c for c in (width, height))
    hires = None if is_img2img else _find(f"{tab}_enable_hr")
    units: list[UnitUI] = []
    # the id on a Column: Gradio 6 writes a Group's elem_id on two nested elements (a duplicate id in the page)
    with gr.Column(elem_id=f"{tab}_controlnet"), gr.Group():
        with gr.Accordion(ACCORDION_LABEL, open=False, elem_id="controlnet"):
            if count > 1:
                with gr.Tabs(elem_id=f"{tab}_controlnet_tabs"):
                    for i in range(count):
                        with gr.Tab(f"ControlNet Unit {i}", elem_id=f"{tab}_controlnet_unit_{i}_tab",
                                    elem_classes=["cnet-unit-tab"]):
                            units.append(UnitUI(tab, i, is_img2img, catalog))
            else:
                with gr.Column():
                    units.append(UnitUI(tab, None, is_img2img, catalog))
    for unit in units:
        unit.wire(width, height, hires)
    runner = scripts.scripts_current
    if runner is not None:
        for unit in units:
            runner.infotext_fields += unit.paste_fields()
    return [unit.state for unit in units]
