"""Speed options for one sampling pass, each off unless set: A1111's token merging (ToMe) and our feature cache.

Token merging merges similar image tokens before each transformer block's self-attention and splits them again
after it (tomesd, Bolya & Hoffman 2023), so attention works on fewer tokens: faster at large sizes, at some cost in
detail. We use the tomesd package itself (as A1111 does) on our diffusers UNet, patched for the pass and restored
after it, with A1111's arguments (no random partition, 2×2 strides, self-attention only).

Settings (A1111's keys): token_merging_ratio (txt2img first pass; img2img when token_merging_ratio_img2img is 0),
token_merging_ratio_img2img, token_merging_ratio_hr (the hires. fix pass; 0 = the first pass's ratio). The job's
infotext gets "Token merging ratio" (and "Token merging ratio hr") when a ratio is used, as A1111 writes them.

Feature cache (our setting `feature_cache_interval`, in the spirit of DeepCache, Ma et al. 2023): neighbouring
sampling steps produce nearly the same deep UNet features, so only every N-th UNet call runs the whole network;
the calls in between run the outermost level (conv_in, the first down block, the last up block, conv_out) and
reuse the deeper blocks' outputs from the last full call. 0 or 1 = off; 2–10 allowed. A call whose input or text
shapes differ from the cached ones runs in full. Infotext "Feature cache interval: N". ControlNet residuals of the
reused levels are those of the last full call.
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
    feature_cache_interval: int = 0
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


def _interval(value) -> int:
    try:
        n = int(value or 0)
    except (TypeError, ValueError):
        raise ValueError(f"feature_cache_interval: expected a whole number from 0 to 10, got {value!r}") from None
    if not 0 <= n <= 10:
        raise ValueError(f"feature_cache_interval: expected a whole number from 0 to 10 (0 = off), got {n}")
    return n


def from_settings(get: Callable[[str, object], object], overrides: dict | None = None) -> SpeedOptions:
    ratios = (_ratio(get(k, 0.0), k) for k in ("token_merging_ratio", "token_merging_ratio_img2img",
                                                "token_merging_ratio_hr"))
    return SpeedOptions(*ratios, feature_cache_interval=_interval(get("feature_cache_interval", 0)),
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
    when token_merging_ratio_hr itself is set); ours: "Feature cache interval"."""
    if speed.feature_cache_interval >= 2:
        p.extra_generation_params["Feature cache interval"] = speed.feature_cache_interval
    if ratio and not hires:
        p.extra_generation_params["Token merging ratio"] = ratio
    if hires and speed.token_merging_ratio_hr:
        p.extra_generation_params["Token merging ratio hr"] = speed.token_merging_ratio_hr


@contextlib.contextmanager
def feature_cache(model, interval: int):
    """The feature cache (see the module's doc) on `model.unet` for the duration of the block."""
    unet = model.unet
    deep = [*unet.down_blocks[1:], *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks[:-1]]
    if interval < 2 or not deep:
        yield
        return
    state = {"calls": 0, "key": None, "reuse": False, "cache": {}}

    def decide(_module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        context = args[2] if len(args) > 2 else kwargs.get("encoder_hidden_states")
        key = (tuple(sample.shape), sample.dtype, tuple(context.shape) if context is not None else None)
        state["reuse"] = (state["calls"] % interval != 0 and key == state["key"]
                          and len(state["cache"]) == len(deep))
        if not state["reuse"]:
            state["key"] = key
            state["cache"].clear()
        state["calls"] += 1

    # our own wrapper, not a library's: DeepCache's packages patch whole pipelines; we only swap the deep blocks'
    # forward for this pass (a forward hook cannot skip a module's computation)
    def wrap(index, original):
        def forward(*args, **kwargs):
            if state["reuse"]:
                return state["cache"][index]
            out = original(*args, **kwargs)
            state["cache"][index] = out
            return out
        return forward

    handle = unet.register_forward_pre_hook(decide, with_kwargs=True)
    previous = [block.__dict__.get("forward") for block in deep]   # another wrapper of the instance, if any
    for i, block in enumerate(deep):
        block.forward = wrap(i, block.forward)
    try:
        yield
    finally:
        handle.remove()
        for block, before in zip(deep, previous):
            if before is None:
                del block.forward  # back to the class's forward
            else:
                block.forward = before
        state["cache"].clear()


def option_templates() -> dict:
    """The settings (Settings → Optimizations): A1111's token merging keys and labels, and our feature cache."""
    from modules.options import OptionInfo
    section = "Optimizations"
    return {
        "token_merging_ratio": OptionInfo(0.0, "Token merging ratio", section, minimum=0.0, maximum=0.9,
                                          infotext="Token merging ratio"),
        "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img", section, minimum=0.0,
                                                  maximum=0.9),
        "token_merging_ratio_hr": OptionInfo(0.0, "Token merging ratio for high-res pass", section, minimum=0.0,
                                             maximum=0.9, infotext="Token merging ratio hr"),
        "feature_cache_interval": OptionInfo(0, "Feature cache: run the whole UNet every N steps (0 = off)", section,
                                             minimum=0, maximum=10, infotext="Feature cache interval"),
    }
