"""The one parameter schema: every generation field once, with its type, defaults, limits, infotext key and A1111 API
name. GenerationParams (the serialisable parameters both faces fill in), the API request models, the UI's casts and
slider limits, and the infotext writer and parser are all derived from FIELDS; adding a field means one entry here
plus the code that uses it.

Where A1111's UI and API defaults differ (sampler "DPM++ 2M" vs "Euler", 20 vs 50 steps), `api_default` says so.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable


class ParamError(ValueError):
    """Invalid generation parameters; the message names the field and the allowed values."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


MAX_STEPS = 150
MAX_SIDE = 2048
MAX_BATCH = 64
_SAME = object()

# Index-coded choices (the API sends the index, the UI shows the label, the infotext writes the label).
RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]


@dataclass(frozen=True)
class Field:
    name: str                       # attribute name on GenerationParams and on A1111's `p`; also the API field name
    kind: type                      # int, float, str, bool, list, dict or object (images)
    default: Any                    # A1111's UI default (what a user gets), and the default of `p`
    api_default: Any = _SAME        # A1111's API default, when it differs from the UI's
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None       # slider step in the UI; also "multiple of" for sizes
    nullable: bool = False          # None is allowed (means "use the setting" or "not given")
    choices: tuple | None = None    # index-coded choices (value = index)
    infotext: str | None = None     # infotext key ("Size-1"/"Size-2" are written as one "Size: WxH")
    # when the key is written: a predicate over the run state `p` (None = whenever the value is not None)
    infotext_when: Callable[[Any], bool] | None = None
    img2img_only: bool = False
    txt2img_only: bool = False
    img2img_api_default: Any = _SAME  # A1111's img2img API default, when it differs from its txt2img one
    help: str = ""

    def ui_default(self) -> Any:
        return copy.deepcopy(self.default)

    def api(self, img2img: bool = False) -> Any:
        if img2img and self.img2img_api_default is not _SAME:
            return copy.deepcopy(self.img2img_api_default)
        return copy.deepcopy(self.default if self.api_default is _SAME else self.api_default)

    def cast(self, value: Any) -> Any:
        """A widget's or an infotext's value → this field's type (sliders give floats, infotexts give strings)."""
        if value is None:
            return None if self.nullable else self.ui_default()
        if self.kind is bool:
            return value in (True, "True", "true", 1, "1") if isinstance(value, (str, int)) else bool(value)
        if self.kind is int:
            return int(round(float(value)))
        if self.kind is float:
            return float(value)
        if self.kind is str:
            return str(value)
        return value


def _hires(p) -> bool:
    return bool(getattr(p, "enable_hr", False))


def _variation(p) -> bool:
    return getattr(p, "subseed_strength", 0) > 0


def _seed_resize(p) -> bool:
    return p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0


def _masked(p) -> bool:
    return getattr(p, "image_mask", None) is not None or getattr(p, "mask", None) is not None


def _hr_resized(p) -> bool:
    return _hires(p) and bool(p.hr_resize_x or p.hr_resize_y)


FIELDS: list[Field] = [
    Field("prompt", str, ""),
    Field("negative_prompt", str, ""),
    Field("styles", list, []),
    Field("seed", int, -1, minimum=-1, maximum=2 ** 32 - 1, infotext="Seed"),
    Field("subseed", int, -1, minimum=-1, maximum=2 ** 32 - 1, infotext="Variation seed", infotext_when=_variation),
    Field("subseed_strength", float, 0.0, minimum=0, maximum=1, step=0.01, infotext="Variation seed strength",
          infotext_when=_variation),
    Field("seed_resize_from_w", int, -1, minimum=-1, maximum=MAX_SIDE, step=8, infotext="Seed resize from-1",
          infotext_when=_seed_resize),
    Field("seed_resize_from_h", int, -1, minimum=-1, maximum=MAX_SIDE, step=8, infotext="Seed resize from-2",
          infotext_when=_seed_resize),
    Field("sampler_name", str, "DPM++ 2M", api_default=None, nullable=True, infotext="Sampler",
          help="A1111's API falls back to sampler_index ('Euler') when sampler_name is empty"),
    Field("scheduler", str, "Automatic", api_default=None, nullable=True, infotext="Schedule type"),
    Field("steps", int, 20, api_default=50, minimum=1, maximum=MAX_STEPS, step=1, infotext="Steps"),
    Field("cfg_scale", float, 7.0, minimum=0, maximum=100, step=0.5, infotext="CFG scale"),
    Field("width", int, 512, minimum=8, maximum=MAX_SIDE, step=8, infotext="Size-1"),
    Field("height", int, 512, minimum=8, maximum=MAX_SIDE, step=8, infotext="Size-2"),
    Field("batch_size", int, 1, minimum=1, maximum=MAX_BATCH, step=1),
    Field("n_iter", int, 1, minimum=1, maximum=1000, step=1),
    Field("clip_skip", int, None, nullable=True, minimum=1, maximum=12, infotext="Clip skip",
          infotext_when=lambda p: (p.clip_skip or 1) > 1, help="None: the CLIP_stop_at_last_layers setting"),
    Field("tiling", bool, False, api_default=None, nullable=True, infotext="Tiling", infotext_when=lambda p: p.tiling),
    Field("restore_faces", bool, None, nullable=True,
          help="None: the face_restoration setting (A1111 moved the checkbox to Settings → Face restoration)"),
    # Sampler knobs, as A1111 reads them (None: the setting): eta for the ancestral/SDE samplers (eta_ancestral) and
    # DDIM (eta_ddim); s_churn, s_tmin, s_tmax, s_noise for Euler, Heun and DPM2; s_min_uncond ("Negative Guidance
    # minimum sigma") for all (modules/engine/a1111_loop.py).
    Field("eta", float, None, nullable=True, minimum=0, maximum=1),
    Field("s_churn", float, None, nullable=True),
    Field("s_tmin", float, None, nullable=True),
    Field("s_tmax", float, None, nullable=True),
    Field("s_noise", float, None, nullable=True),
    Field("s_min_uncond", float, None, nullable=True),
    # denoising_strength: None → 0.7 for the hires. fix pass, 0.75 for img2img (A1111's UI defaults)
    Field("denoising_strength", float, None, nullable=True, minimum=0, maximum=1, step=0.01,
          infotext="Denoising strength", infotext_when=lambda p: getattr(p, "is_img2img", False) or _hires(p),
          img2img_api_default=0.75),
    Field("do_not_save_samples", bool, False),
    Field("do_not_save_grid", bool, False),
    Field("override_settings", dict, {}),
    # hires. fix (txt2img)
    Field("enable_hr", bool, False, txt2img_only=True),
    Field("hr_scale", float, 2.0, minimum=1, maximum=8, step=0.05, infotext="Hires upscale", txt2img_only=True,
          infotext_when=lambda p: _hires(p) and not _hr_resized(p)),
    Field("hr_upscaler", str, "Latent", api_default=None, nullable=True, infotext="Hires upscaler",
          infotext_when=_hires, txt2img_only=True),
    Field("hr_second_pass_steps", int, 0, minimum=0, maximum=MAX_STEPS, step=1, infotext="Hires steps",
          infotext_when=lambda p: _hires(p) and p.hr_second_pass_steps > 0, txt2img_only=True),
    Field("hr_resize_x", int, 0, minimum=0, maximum=MAX_SIDE * 2, step=8, infotext="Hires resize-1",
          infotext_when=_hr_resized, txt2img_only=True),
    Field("hr_resize_y", int, 0, minimum=0, maximum=MAX_SIDE * 2, step=8, infotext="Hires resize-2",
          infotext_when=_hr_resized, txt2img_only=True),
    Field("hr_sampler_name", str, None, nullable=True, infotext="Hires sampler", txt2img_only=True,
          infotext_when=lambda p: _hires(p) and bool(p.hr_sampler_name)),
    Field("hr_scheduler", str, None, nullable=True, infotext="Hires schedule type", txt2img_only=True,
          infotext_when=lambda p: _hires(p) and bool(p.hr_scheduler)),
    Field("hr_prompt", str, "", infotext="Hires prompt", infotext_when=lambda p: _hires(p) and bool(p.hr_prompt),
          txt2img_only=True),
    Field("hr_negative_prompt", str, "", infotext="Hires negative prompt", txt2img_only=True,
          infotext_when=lambda p: _hires(p) and bool(p.hr_negative_prompt)),
    # img2img / inpainting
    Field("init_images", list, [], img2img_only=True),           # PIL images (base64 strings in the API)
    Field("mask", object, None, nullable=True, img2img_only=True),  # PIL image, white = repaint
    Field("resize_mode", int, 0, choices=tuple(RESIZE_MODES), img2img_only=True),
    Field("mask_blur", int, 4, api_default=None, minimum=0, maximum=64, step=1, infotext="Mask blur",
          infotext_when=_masked, img2img_only=True, help="the API also takes A1111's mask_blur_x / mask_blur_y"),
    Field("inpainting_fill", int, 1, api_default=0, choices=tuple(MASKED_CONTENT), infotext="Masked content",
          infotext_when=_masked, img2img_only=True),
    Field("inpaint_full_res", bool, False, choices=tuple(INPAINT_AREAS), infotext="Inpaint area",
          infotext_when=lambda p: _masked(p) and p.inpaint_full_res, img2img_only=True),
    Field("inpaint_full_res_padding", int, 32, api_default=0, minimum=0, maximum=256, step=4,
          infotext="Masked area padding", infotext_when=lambda p: _masked(p) and p.inpaint_full_res,
          img2img_only=True),
    Field("inpainting_mask_invert", int, 0, choices=tuple(MASK_MODES), img2img_only=True),
    Field("initial_noise_multiplier", float, 1.0, api_default=None, nullable=True, minimum=0, maximum=1.5,
          img2img_only=True, infotext="Noise multiplier", infotext_when=lambda p: p.initial_noise_multiplier != 1.0),
]
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
BY_INFOTEXT: dict[str, Field] = {f.infotext: f for f in FIELDS if f.infotext}
IMAGE_FIELDS = ("init_images", "mask")
HR_DENOISING_DEFAULT = 0.7      # A1111's UI default of the hires. fix pass
IMG2IMG_DENOISING_DEFAULT = 0.75


def _field_list() -> list:
    out = []
    for f in FIELDS:
        default = f.default
        out.append((f.name, Any, dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d))))
    out.append(("mode", str, dataclasses.field(default="txt2img")))
    return out


def _validate(self) -> "GenerationParams":
    for name in ("width", "height"):
        value = getattr(self, name)
        if not isinstance(value, int) or not 8 <= value <= MAX_SIDE or value % 8:
            raise ParamError(name, f"must be a multiple of 8 between 8 and {MAX_SIDE}, got {value!r}")
    checked = ("steps", "batch_size", "n_iter", "cfg_scale", "seed", "subseed", "subseed_strength",
               "denoising_strength", "mask_blur", "initial_noise_multiplier", "eta")
    for name in checked:
        f, value = BY_NAME[name], getattr(self, name)
        if value is None and f.nullable:
            continue
        if f.kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ParamError(name, f"must be a whole number from {f.minimum:g} to {f.maximum:g}, got {value!r}")
        if not isinstance(value, (int, float)) or not f.minimum <= value <= f.maximum:
            raise ParamError(name, f"must be from {f.minimum:g} to {f.maximum:g}, got {value!r}")
    for name in ("resize_mode", "inpainting_fill", "inpainting_mask_invert"):
        choices, value = BY_NAME[name].choices, getattr(self, name)
        if value not in range(len(choices)):
            listed = ", ".join(f"{i} ({c})" for i, c in enumerate(choices))
            raise ParamError(name, f"must be one of {listed}, got {value!r}")
    if self.enable_hr and self.mode == "txt2img":
        if not 1 <= self.hr_scale <= 8 and not (self.hr_resize_x or self.hr_resize_y):
            raise ParamError("hr_scale", f"must be from 1 to 8, got {self.hr_scale!r}")
        for name in ("hr_resize_x", "hr_resize_y"):
            value = getattr(self, name)
            if value and (value % 8 or not 64 <= value <= MAX_SIDE * 2):
                raise ParamError(name, f"must be 0 or a multiple of 8 from 64 to {MAX_SIDE * 2}, got {value!r}")
        if not 0 <= self.hr_second_pass_steps <= MAX_STEPS:
            raise ParamError("hr_second_pass_steps", f"must be from 0 to {MAX_STEPS}, got "
                                                     f"{self.hr_second_pass_steps!r}")
    if self.mode == "img2img" and not self.init_images:
        raise ParamError("init_images", "img2img needs at least one init image")
    return self


def hr_size(p) -> tuple[int, int]:
    """Target size of the hires. fix pass: hr_resize_x/y (one of them 0 keeps the aspect ratio) or scale."""
    if p.hr_resize_x or p.hr_resize_y:
        if p.hr_resize_x and p.hr_resize_y:
            return p.hr_resize_x, p.hr_resize_y
        if p.hr_resize_x:
            return p.hr_resize_x, _round8(p.hr_resize_x * p.height / p.width)
        return _round8(p.hr_resize_y * p.width / p.height), p.hr_resize_y
    return _round8(p.width * p.hr_scale), _round8(p.height * p.hr_scale)


def _to_dict(self) -> dict[str, Any]:
    """The fields without the images (for infotext-free echoes and logs)."""
    return {f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in IMAGE_FIELDS}


GenerationParams = dataclasses.make_dataclass(
    "GenerationParams", _field_list(), namespace={
        "__doc__": "The serialisable generation parameters: one attribute per schema field (FIELDS), plus `mode`.",
        "__module__": __name__, "validate": _validate, "hr_size": hr_size, "to_dict": _to_dict})


def from_values(values: dict, mode: str | None = None) -> "GenerationParams":
    """Field name → value (from a widget, a request or an infotext) → GenerationParams, each value cast to its
    field's type; unknown names are a ParamError naming them."""
    unknown = [k for k in values if k not in BY_NAME and k != "mode"]
    if unknown:
        raise ParamError(unknown[0], f"unknown generation parameter; known: {sorted(BY_NAME)}")
    kwargs = {k: (BY_NAME[k].cast(v) if k in BY_NAME and BY_NAME[k].kind in (int, float, bool, str) else v)
              for k, v in values.items()}
    if mode is not None:
        kwargs["mode"] = mode
    return GenerationParams(**kwargs)


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)
