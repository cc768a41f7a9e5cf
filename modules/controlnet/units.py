"""A ControlNet unit: sd-webui-controlnet's fields (CONTROLNET-REFERENCE §1.5), parsed from what the API, the UI
and other scripts send.

Accepted forms of one unit: a dict (the API form; the UI sends the same dict), a `ControlNetUnit`, or the March 2023
positional list of 15 values. How lenient we are, compared with the extension:

* every field name, legacy alias (`mask_image`, `lowvram`, `guidance`, `input_image`, `guessmode`, …) and image
  form of §1.5 is accepted; `resize_mode` and `control_mode` also as 0/1/2 (the extension rejected ints);
* a unit that cannot be used — unknown module, weight outside 0..2, start after end, an unreadable image, an
  unknown resize or control mode — is an error naming the unit and the field (a 422 from the API), where the
  extension silently generated without ControlNet;
* `enabled` defaults to false as in the extension, except that a dict that omits it but names a model or an image
  is enabled (the form Forge clients send); an explicit `"enabled": false` always disables;
* keys nobody knows are ignored and listed in the job's comments (the extension ignored them silently).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from modules.engine.params import ParamError

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize", "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill", "Envelope (Outer Fit)": "Resize and Fill",
}
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS = ("Both", "Low res only", "High res only")
UNION_TYPES = ("OpenPose", "Depth", "Soft Edge", "Hard Edge", "Normal Map", "Segmentation", "Tile", "Inpaint",
               "Unknown")
# fields clients send that change nothing here (UI state, batch mode, IP-Adapter/PuLID/AnimateDiff extras, options
# of 2023 that no longer exist)
IGNORED_FIELDS = frozenset({
    "is_ui", "input_mode", "batch_images", "output_dir", "loopback", "batch_mask_dir", "batch_input_gallery",
    "batch_mask_gallery", "generated_image", "mask_image_for_batch", "animatediff_batch", "batch_modifiers",
    "batch_image_dir", "use_preview_as_input", "hr_image", "pulid_mode", "ipadapter_input", "guessmode",
    "guess_mode", "invert_image", "rgbbgr_mode", "union_control_type",
})
# the 15-value positional form of March 2023 (the extension's old API order)
LEGACY_POSITIONAL = ("enabled", "module", "model", "weight", "image", "invert_image", "resize_mode", "lowvram",
                     "processor_res", "threshold_a", "threshold_b", "guidance_start", "guidance_end", "guess_mode",
                     "pixel_perfect")


@dataclass
class ControlImage:
    """An image given to a unit: RGB uint8 H×W×3, and the mask (uint8 H×W, 255 = the first channel's white) if any."""
    image: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class ControlNetUnit:
    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: ControlImage | None = None
    resize_mode: str = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: str = "Balanced"
    hr_option: str = "Both"
    save_detected_map: bool = True
    inpaint_crop_input_image: bool = True
    advanced_weighting: list[float] | None = None
    effective_region_mask: np.ndarray | None = None     # H×W float 0..1
    openpose_json: Any = None                           # our addition: a pose document drawn instead of an image
    unknown_fields: list[str] = field(default_factory=list)

    @property
    def uses_model(self) -> bool:
        return self.model not in ("", "None", None)


FIELD_NAMES = frozenset(f.name for f in fields(ControlNetUnit)) - {"unknown_fields"}
ALIASES = {"mask_image": "mask", "lowvram": "low_vram", "guidance": "guidance_end", "input_image": "image"}


def parse_units(values, unit_count: int, where: str = "alwayson_scripts.controlnet.args") -> list[ControlNetUnit]:
    """The units of a request (None entries are disabled units). More units than `unit_count` is an error: the
    extension dropped them silently."""
    values = list(values or [])
    if len(values) > unit_count:
        raise ParamError(where, f"{len(values)} ControlNet units given, but the setting control_net_unit_count "
                                f"allows {unit_count} (Settings → ControlNet)")
    return [parse_unit(v, i, where) for i, v in enumerate(values)]


def parse_unit(value, index: int = 0, where: str = "alwayson_scripts.controlnet.args") -> ControlNetUnit:
    at = f"{where}[{index}]"
    if value is None:
        return ControlNetUnit()
    if isinstance(value, ControlNetUnit):
        return replace(value)
    if not isinstance(value, dict) and hasattr(value, "__dict__") and hasattr(value, "module"):
        value = {k: v for k, v in vars(value).items() if not k.startswith("_")}   # a unit object of another script
    if isinstance(value, (list, tuple)) and len(value) == len(LEGACY_POSITIONAL):
        value = dict(zip(LEGACY_POSITIONAL, value))
    if not isinstance(value, dict):
        raise ParamError(at, "a ControlNet unit must be an object with the fields enabled, module, model, weight, "
                             "image, … (or the 15-value list of the 2023 API)")
    data = {}
    for key, v in value.items():
        name = ALIASES.get(key, key)
        if name in data and key in ALIASES and name == "mask":
            raise ParamError(f"{at}.mask_image", "give either mask or mask_image, not both")
        data[name] = v
    unit = ControlNetUnit()
    unit.unknown_fields = sorted(k for k in data if k not in FIELD_NAMES and k != "mask" and k not in IGNORED_FIELDS)
    unit.module = _text(data.get("module"), "none", f"{at}.module")
    unit.model = _text(data.get("model"), "None", f"{at}.model")
    unit.image = parse_image(data.get("image"), data.get("mask"), f"{at}.image")
    unit.openpose_json = data.get("openpose_json")
    if "enabled" in data:
        unit.enabled = _bool(data["enabled"], f"{at}.enabled")
    else:
        unit.enabled = unit.uses_model or unit.image is not None
    unit.weight = _number(data.get("weight"), 1.0, f"{at}.weight", 0.0, 2.0)
    unit.resize_mode = _choice(data.get("resize_mode"), "Crop and Resize", RESIZE_MODES, f"{at}.resize_mode",
                               RESIZE_ALIASES)
    unit.control_mode = _choice(data.get("control_mode"), "Balanced", CONTROL_MODES, f"{at}.control_mode")
    unit.hr_option = _choice(data.get("hr_option"), "Both", HR_OPTIONS, f"{at}.hr_option")
    unit.low_vram = _bool(data.get("low_vram", False), f"{at}.low_vram")
    unit.pixel_perfect = _bool(data.get("pixel_perfect", False), f"{at}.pixel_perfect")
    unit.save_detected_map = _bool(data.get("save_detected_map", True), f"{at}.save_detected_map")
    unit.inpaint_crop_input_image = _bool(data.get("inpaint_crop_input_image", True),
                                          f"{at}.inpaint_crop_input_image")
    unit.processor_res = int(_number(data.get("processor_res"), -1, f"{at}.processor_res"))
    unit.threshold_a = _number(data.get("threshold_a"), -1, f"{at}.threshold_a")
    unit.threshold_b = _number(data.get("threshold_b"), -1, f"{at}.threshold_b")
    unit.guidance_start = _number(data.get("guidance_start"), 0.0, f"{at}.guidance_start", 0.0, 1.0)
    unit.guidance_end = _number(data.get("guidance_end"), 1.0, f"{at}.guidance_end", 0.0, 1.0)
    if unit.enabled and unit.guidance_start > unit.guidance_end:
        raise ParamError(f"{at}.guidance_start", f"the starting control step ({unit.guidance_start}) is after the "
                                                 f"ending control step ({unit.guidance_end})")
    weighting = data.get("advanced_weighting")
    if weighting is not None:
        if not isinstance(weighting, (list, tuple)) or not all(isinstance(w, (int, float)) for w in weighting):
            raise ParamError(f"{at}.advanced_weighting", "must be a list of numbers (one scale per residual)")
        unit.advanced_weighting = [float(w) for w in weighting]
    region = data.get("effective_region_mask")
    if region is not None:
        unit.effective_region_mask = to_array(region, f"{at}.effective_region_mask")[..., 0].astype(np.float32) / 255
    if unit.enabled:
        _check_module(unit, at)
    return unit


def _check_module(unit: ControlNetUnit, at: str) -> None:
    from modules.controlnet import preprocessors
    pre = preprocessors.get(unit.module)
    if pre is None:
        names = [p.label for p in preprocessors.all_preprocessors()]
        raise ParamError(f"{at}.module", f"unknown preprocessor {unit.module!r}; GET /controlnet/module_list lists "
                                         f"them ({', '.join(names[:12])}, …)")


def parse_image(image, mask, where: str) -> ControlImage | None:
    """§1.5's image forms: an image, {"image", "mask"}, [image, mask], a list of such dicts (the first is used);
    each image a base64 string / data: URI, a PIL image or an array. RGBA is composited onto white."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return None if mask is None else ControlImage(np.zeros((8, 8, 3), np.uint8), to_mask(mask, where + ".mask"))
    if isinstance(image, dict):
        if "image" not in image:
            raise ParamError(where, 'an image object needs the key "image" (and optionally "mask")')
        mask = image.get("mask", mask)
        image = image["image"]
    elif isinstance(image, (list, tuple)) and image and not _is_pixel_rows(image):
        if isinstance(image[0], dict):      # multi-input (IP-Adapter): the first input is the one used
            return parse_image(image[0], mask, f"{where}[0]")
        if len(image) == 2:
            image, mask = image
        elif len(image) == 1:
            image = image[0]
        else:
            raise ParamError(where, "a list image must be [image, mask]")
    rgb = to_rgb(image, where)
    m = to_mask(mask, where + ".mask") if mask is not None else None
    if m is not None and m.shape != rgb.shape[:2]:
        raise ParamError(where + ".mask", f"the mask is {m.shape[1]}x{m.shape[0]} but the image is "
                                          f"{rgb.shape[1]}x{rgb.shape[0]}; they must have the same size")
    return ControlImage(rgb, m)


def _is_pixel_rows(value) -> bool:
    """A nested list of pixel values (an array sent as JSON) rather than [image, mask]."""
    return isinstance(value[0], (list, tuple)) and bool(value[0]) and isinstance(value[0][0], (int, float, list))


def to_array(value, where: str) -> np.ndarray:
    """Any accepted image value → uint8 H×W×C array (C = 1, 3 or 4)."""
    from PIL import Image
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            raise ParamError(where, "image URLs are not fetched; send the image as base64")
        from modules.engine.image_decode import decode_base64_image
        value = decode_base64_image(value, where)
    if isinstance(value, Image.Image):
        if value.mode not in ("RGB", "RGBA", "L"):
            value = value.convert("RGBA" if "A" in value.mode or "transparency" in value.info else "RGB")
        value = np.asarray(value)
    try:
        arr = np.asarray(value)
    except Exception:
        raise ParamError(where, "is not an image") from None
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f" and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255
        arr = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise ParamError(where, f"is not an image (array of shape {tuple(arr.shape)})")
    return arr


def to_rgb(value, where: str) -> np.ndarray:
    arr = to_array(value, where)
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:   # composited onto white, as the extension does (a transparent pose PNG stays readable)
        alpha = arr[..., 3:4].astype(np.float32) / 255
        return (arr[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def to_mask(value, where: str) -> np.ndarray:
    """The mask's first channel (an RGBA mask from a sketch canvas: its alpha where the colour is black)."""
    arr = to_array(value, where)
    if arr.shape[2] == 4 and not arr[..., :3].any():
        return np.ascontiguousarray(arr[..., 3])
    return np.ascontiguousarray(arr[..., 0])


def _text(value, default: str, where: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ParamError(where, "must be a string")
    return value.strip() or default


def _bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ParamError(where, "must be true or false")


def _number(value, default: float, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        try:
            value = float(value) if isinstance(value, str) else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise ParamError(where, "must be a number")
    if lo is not None and not lo <= value <= hi:
        raise ParamError(where, f"must be between {lo} and {hi} (got {value})")
    return float(value)


def _choice(value, default: str, choices: tuple[str, ...], where: str, aliases: dict | None = None) -> str:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    if isinstance(value, str):
        if value in choices:
            return value
        if aliases and value in aliases:
            return aliases[value]
        for c in choices:   # case-insensitive, as a courtesy
            if c.lower() == value.lower():
                return c
    raise ParamError(where, f"must be one of {list(choices)} (got {value!r})")
