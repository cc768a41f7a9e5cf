"""The one parameters object that the UI and the API fill in and the engine reads. Defaults live here."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
