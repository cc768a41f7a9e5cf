"""ControlNet during sampling: the units of one job, attached to the engine's `before_unet` hook.

For each UNet call (CONTROLNET-REFERENCE §4.3–4.6): a unit acts when A1111's step fraction of this pass is inside
[guidance_start, guidance_end] and its hr_option admits the pass; a ControlNet runs on the same latent (first 4
channels), timestep and context as the UNet, with the control map at this pass's size; its residuals are scaled per
control mode (soft 0.825^(12−i) scales for "My prompt" and "ControlNet is more important", the latter on the prompt
rows only; shuffle models pooled and prompt-only; canny/mlsd soft in the hires pass) and summed with the other
units' through `UNetCall.add_residuals`. T2I-Adapter features are computed once per pass size and added as
intrablock residuals. Residual scales come from `residual_scales`, the only place they are decided.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass

import torch

from modules.controlnet.hints import UnitControl
from modules.controlnet.units import ControlNetUnit

SOFT = 0.825
T2I_SOFT = (0.25, 0.62, 0.825, 1.0)


@dataclass
class ActiveUnit:
    """An enabled unit, ready: its number among the enabled units, the parsed unit, preprocessor, model, control."""
    number: int
    index: int                      # position in the request (the UI tab)
    unit: ControlNetUnit
    pre: object
    model: object | None            # modules.controlnet.control_models.ControlModel; None for model-free modules
    control: UnitControl


def residual_scales(n: int, weight: float, mode: str, *, kind: str = "controlnet", family: str = "sd1",
                    soft: bool = False, advanced: list[float] | None = None) -> list[float]:
    """Scale of each residual, the middle block's last (n = 13 for SD1/2 ControlNets, 10 for SDXL, 4 for T2I).
    `soft` forces the soft schedule (the hires pass of canny/mlsd)."""
    if advanced is not None:
        if len(advanced) < n:
            raise ValueError(f"advanced_weighting has {len(advanced)} values; this model has {n} residuals")
        return [float(a) for a in advanced[:n]]
    if mode == "Balanced" and not soft:
        return [weight] * n
    if kind == "t2i_adapter":
        base = list(T2I_SOFT)
        return [weight * s for s in (base[-n:] if n <= len(base) else base + [1.0] * (n - len(base)))]
    if family == "sdxl":    # the extension keeps the first 10 of SD's 13: down 0.825^12 … 0.825^4, middle 0.825^3
        return [weight * SOFT ** (12 - i) for i in range(13)][:n]
    # SD1/2: 0.825^12 for the first skip … 1.0 for the middle block (other UNet depths: the same from the middle)
    return [weight * SOFT ** (n - 1 - i) for i in range(n)]


def cond_only(unit: ControlNetUnit, model) -> bool:
    return unit.control_mode == "ControlNet is more important" or bool(getattr(model, "global_pool", False))


def offloader_of(sd_model):
    """The checkpoint's --medvram/--lowvram offloader (modules/models/memory_offload.py), or None."""
    extra = getattr(sd_model, "extra", None)
    return extra.get("offloader") if isinstance(extra, dict) else None


@contextlib.contextmanager
def _on_accelerator(au: ActiveUnit, call):
    """Where the control model runs. Under --medvram/--lowvram it waits in RAM and is on the accelerator only for its
    own forward (through the checkpoint's offloader); so does a unit with Low VRAM on an accelerator (§4.10)."""
    offloader = offloader_of(call.model)
    if offloader is not None:
        with offloader.borrowed(au.model.module):
            au.model.sync_device()
            try:
                yield
            finally:
                au.model.sync_device()
        return
    offload = au.unit.low_vram and call.x.device.type != "cpu"
    if offload:
        au.model.to(call.x.device)
    try:
        yield
    finally:
        if offload:
            au.model.to("cpu")


class ControlNetHook:
    """The `before_unet` hook of one job."""

    def __init__(self, units: list[ActiveUnit], vae_factor: int, hires_enabled: bool):
        self.units, self.factor, self.hires_enabled = units, vae_factor, hires_enabled
        self.features: dict[tuple, list[torch.Tensor]] = {}

    def active(self, au: ActiveUnit, step) -> bool:
        u = au.unit
        if self.hires_enabled:
            if step.pass_name == "hires" and u.hr_option == "Low res only":
                return False
            if step.pass_name != "hires" and u.hr_option == "High res only":
                return False
        return u.guidance_start <= step.fraction <= u.guidance_end

    def __call__(self, call) -> None:
        height, width = call.x.shape[-2] * self.factor, call.x.shape[-1] * self.factor
        for au in self.units:
            if au.model is None or not self.active(au, call.step):
                continue
            soft = call.step.pass_name == "hires" and any(k in au.unit.module for k in ("canny", "mlsd"))
            with _on_accelerator(au, call):
                if au.model.kind == "controlnet":
                    self._controlnet(au, call, width, height, soft)
                elif au.model.kind == "t2i_adapter":
                    self._adapter(au, call, width, height, soft)

    def _rows(self, au: ActiveUnit, call) -> list[int] | None:
        return call.cond_rows if cond_only(au.unit, au.model) else None

    def _controlnet(self, au: ActiveUnit, call, width: int, height: int, soft: bool) -> None:
        model = au.model
        rows = self._rows(au, call)
        if rows is not None and not rows:   # a UNet batch of negative-prompt rows only, and a prompt-only unit
            return
        x = call.x[:, :4]
        context, added = call.context, call.added_cond
        if rows is not None:    # prompt rows only: run the ControlNet on those rows, zeros elsewhere
            x, context = x[rows], context[rows]
            added = {k: v[rows] for k, v in added.items()} if added else added
        hint = au.control.tensor_at(width, height, model.hint_channels, x.device, model.dtype)
        hint = hint.expand(x.shape[0], *hint.shape[1:])
        timestep = call.timestep
        if torch.is_tensor(timestep) and timestep.dim() > 0 and timestep.shape[0] == call.x.shape[0] and rows:
            timestep = timestep[rows]
        down, mid = model.controlnet_residuals(x, timestep, context, hint, added)
        outs = list(down) + [mid]
        scales = residual_scales(len(outs), au.unit.weight, au.unit.control_mode, family=model.family, soft=soft,
                                 advanced=au.unit.advanced_weighting)
        outs = [o * s for o, s in zip(outs, scales)]
        if model.global_pool:
            outs = [o.mean(dim=(2, 3), keepdim=True) for o in outs]
        if au.unit.effective_region_mask is not None:
            outs = [o * _region(au.unit.effective_region_mask, o) for o in outs]
        if rows is not None:
            outs = [_scatter(o, rows, call.x.shape[0]) for o in outs]
        call.add_residuals(down=outs[:-1], mid=outs[-1])

    def _adapter(self, au: ActiveUnit, call, width: int, height: int, soft: bool) -> None:
        model = au.model
        key = (au.number, height, width)
        if key not in self.features:
            hint = au.control.tensor_at(width, height, model.hint_channels, call.x.device, model.dtype)
            self.features[key] = [f.detach() for f in model.adapter_features(hint)]
        feats = self.features[key]
        scales = residual_scales(len(feats), au.unit.weight, au.unit.control_mode, kind="t2i_adapter", soft=soft,
                                 advanced=au.unit.advanced_weighting)
        feats = [f * s for f, s in zip(feats, scales)]
        if au.unit.effective_region_mask is not None:
            feats = [f * _region(au.unit.effective_region_mask, f) for f in feats]
        call.add_residuals(intrablock=feats, rows=self._rows(au, call))


def _scatter(t: torch.Tensor, rows: list[int], n: int) -> torch.Tensor:
    out = t.new_zeros((n, *t.shape[1:]))
    out[rows] = t
    return out


def _region(mask, like: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(mask, dtype=like.dtype, device=like.device)[None, None]
    return torch.nn.functional.interpolate(m, size=like.shape[-2:], mode="bilinear", align_corners=False)
