"""A1111's token merging (ToMe) for one sampling pass, off unless a ratio is set.

Token merging merges similar image tokens before each transformer block's self-attention and splits them again
after it (tomesd, Bolya & Hoffman 2023), so attention works on fewer tokens: faster at large sizes, at some cost in
detail. We use the tomesd package itself (as A1111 does) on our diffusers UNet, patched for the pass and restored
after it, with A1111's arguments (no random partition, 2×2 strides, self-attention only).

Settings (A1111's keys): token_merging_ratio (txt2img first pass; img2img when token_merging_ratio_img2img is 0),
token_merging_ratio_img2img, token_merging_ratio_hr (the hires. fix pass; 0 = the first pass's ratio). The job's
infotext gets "Token merging ratio" (and "Token merging ratio hr") when a ratio is used, as A1111 writes them.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("sd.speed")


@dataclass(frozen=True)
class SpeedOptions:
    token_merging_ratio: float = 0.0
    token_merging_ratio_img2img: float = 0.0
    token_merging_ratio_hr: float = 0.0
    # set by the job when the request/override names token_merging_ratio itself (A1111: it then wins in img2img)
    ratio_overridden: bool = False

    def ratio(self, mode: str, hires: bool = False) -> float:
        """A1111's StableDiffusionProcessing.get_token_merging_ratio."""
        if hires:
            return self.token_merging_ratio_hr or self.token_merging_ratio
        if mode == "img2img":
            if self.ratio_overridden and self.token_merging_ratio:
                return self.token_merging_ratio
            return self.token_merging_ratio_img2img or self.token_merging_ratio
        return self.token_merging_ratio


def _ratio(value, key: str) -> float:
    try:
        ratio = float(value or 0.0)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number from 0 to 0.9, got {value!r}") from None
    if not 0.0 <= ratio <= 0.9:
        raise ValueError(f"{key}: expected a number from 0 to 0.9 (A1111's slider range), got {ratio}")
    return ratio


def from_settings(get: Callable[[str, object], object], overrides: dict | None = None) -> SpeedOptions:
    return SpeedOptions(*(_ratio(get(k, 0.0), k) for k in ("token_merging_ratio", "token_merging_ratio_img2img",
                                                          "token_merging_ratio_hr")),
                        ratio_overridden="token_merging_ratio" in (overrides or {}))


@contextlib.contextmanager
def token_merging(model, ratio: float):
    """ToMe on `model.unet` for the duration of the block (nothing when ratio is 0)."""
    if not ratio:
        yield
        return
    import tomesd
    unet = model.unet
    tomesd.apply_patch(unet, ratio=ratio, max_downsample=1, sx=2, sy=2, use_rand=False, merge_attn=True,
                       merge_crossattn=False, merge_mlp=False)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)


def record(p, speed: SpeedOptions, ratio: float, hires: bool) -> None:
    """A1111's infotext keys: "Token merging ratio" (the first pass's ratio) and "Token merging ratio hr" (only
    when token_merging_ratio_hr itself is set)."""
    if ratio and not hires:
        p.extra_generation_params["Token merging ratio"] = ratio
    if hires and speed.token_merging_ratio_hr:
        p.extra_generation_params["Token merging ratio hr"] = speed.token_merging_ratio_hr
