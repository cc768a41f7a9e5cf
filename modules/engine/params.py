"""The one parameters object that the UI and the API fill in and the engine reads. Defaults live here."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any


class ParamError(ValueError):
    """Invalid generation parameters; the message names the field and the allowed values."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


MAX_STEPS = 150
MAX_SIDE = 2048
MAX_BATCH = 64


@dataclass
class GenerationParams:
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sampler_name: str = "Euler a"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int | None = None          # None: use the CLIP_stop_at_last_layers setting
    tiling: bool = False
    restore_faces: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    override_settings: dict[str, Any] = field(default_factory=dict)
    # hires. fix (txt2img)
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # img2img / inpainting
    init_images: list[Any] = field(default_factory=list)   # PIL images
    mask: Any = None                                        # PIL image, white = repaint
    resize_mode: int = 0            # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale
    mask_blur: int = 4
    inpainting_fill: int = 1        # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = False  # "only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = 1.0
    mode: str = "txt2img"

    def validate(self) -> "GenerationParams":
        for name, value, lo, hi in (("width", self.width, 8, MAX_SIDE), ("height", self.height, 8, MAX_SIDE)):
            if not isinstance(value, int) or value < lo or value > hi or value % 8:
                raise ParamError(name, f"must be a multiple of 8 between {lo} and {hi}, got {value!r}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ParamError("steps", f"must be a whole number from 1 to {MAX_STEPS}, got {self.steps!r}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ParamError("batch_size", f"must be from 1 to {MAX_BATCH}, got {self.batch_size!r}")
        if not 1 <= self.n_iter <= 1000:
            raise ParamError("n_iter", f"must be from 1 to 1000, got {self.n_iter!r}")
        if not 0 <= self.cfg_scale <= 100:
            raise ParamError("cfg_scale", f"must be from 0 to 100, got {self.cfg_scale!r}")
        if not -1 <= self.seed <= 2 ** 32 - 1:
            raise ParamError("seed", f"must be -1 (random) or from 0 to {2 ** 32 - 1}, got {self.seed!r}")
        if not 0 <= self.subseed_strength <= 1:
            raise ParamError("subseed_strength", f"must be from 0 to 1, got {self.subseed_strength!r}")
        if self.denoising_strength is not None and not 0 <= self.denoising_strength <= 1:
            raise ParamError("denoising_strength", f"must be from 0 to 1, got {self.denoising_strength!r}")
        if self.resize_mode not in (0, 1, 2, 3):
            raise ParamError("resize_mode", f"must be 0 (just resize), 1 (crop and resize), 2 (resize and fill) or "
                                            f"3 (latent upscale), got {self.resize_mode!r}")
        if self.inpainting_fill not in (0, 1, 2, 3):
            raise ParamError("inpainting_fill", f"must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent "
                                                f"nothing), got {self.inpainting_fill!r}")
        if self.enable_hr:
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

    def hr_size(self) -> tuple[int, int]:
        """Target size of the hires. fix pass: hr_resize_x/y (one of them 0 keeps the aspect ratio) or scale."""
        if self.hr_resize_x or self.hr_resize_y:
            if self.hr_resize_x and self.hr_resize_y:
                return self.hr_resize_x, self.hr_resize_y
            if self.hr_resize_x:
                return self.hr_resize_x, _round8(self.hr_resize_x * self.height / self.width)
            return _round8(self.hr_resize_y * self.width / self.height), self.hr_resize_y
        return _round8(self.width * self.hr_scale), _round8(self.height * self.hr_scale)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self) if f.name not in ("init_images", "mask")}


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)
