"""The denoiser: one sampling step's model evaluation, with its hook points.

It owns the rows of the UNet batch — A1111's layout: the prompt rows (one per image, or one per AND part) first,
then one negative-prompt row per image — the classifier-free-guidance combine (composable diffusion for AND), the
image conditioning of 9-channel inpainting UNets and SDXL's added conditioning. Hooks (modules/engine/hooks.py)
are called in this order: cfg_denoiser → before_unet → UNet → cfg_denoised → combine → cfg_after_cfg. When no hook
is registered none of their parameter objects is built, so the plain path costs nothing over a bare UNet call.
"""
from __future__ import annotations

import torch

from modules.engine.conditioning import StepConditioner
from modules.engine.hooks import (AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams, Hooks, StepInfo,
                                  UNetCall)


def sdxl_added_cond(model, pooled: torch.Tensor, width: int, height: int) -> dict:
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=model.dtype, device=model.device)
    return {"text_embeds": pooled.to(model.dtype), "time_ids": time_ids.repeat(pooled.shape[0], 1)}


class Denoiser:
    def __init__(self, model, conds: StepConditioner, cfg_scale: float, width: int, height: int, hooks: Hooks,
                 p=None, image_cond: torch.Tensor | None = None):
        self.model, self.conds, self.cfg_scale = model, conds, cfg_scale
        self.width, self.height, self.hooks, self.p = width, height, hooks, p
        self.image_cond = image_cond
        self.inner_model = model.unet
        self.last_uncond: torch.Tensor | None = None

    def cond_only(self, x: torch.Tensor, step: StepInfo, prompt_step: int) -> torch.Tensor:
        """A1111's "Negative Guidance minimum sigma": the negative-prompt rows are left out of the UNet batch and the
        prompt's prediction stands in for them (guidance scale 1 for a plain prompt), saving their UNet work."""
        return self(x, step, prompt_step, skip_uncond=True)

    def __call__(self, x: torch.Tensor, step: StepInfo, prompt_step: int, skip_uncond: bool = False) -> torch.Tensor:
        """x: the scheduler-scaled latents, one row per image → the guided model output, one row per image.
        skip_uncond: run the prompt rows only (see cond_only)."""
        model, hooks = self.model, self.hooks
        batch = self.conds.batch(prompt_step)
        rows = batch.image_of_row
        n_cond = batch.n_cond
        x_in = x[rows]
        image_cond = self.image_cond[rows] if self.image_cond is not None else None
        context, pooled, uncond_context = batch.context, batch.pooled, batch.uncond_context
        if batch.padded and isinstance(getattr(self.p, "extra_generation_params", None), dict):
            self.p.extra_generation_params["Pad conds"] = True
        if hooks.has("cfg_denoiser"):
            x_in, image_cond, context, pooled, uncond_context = self._cfg_denoiser(
                x_in, image_cond, context, pooled, n_cond, step, uncond_context)
        unet_x = torch.cat([x_in, image_cond.to(x_in.dtype)], dim=1) if image_cond is not None else x_in
        skip_uncond = skip_uncond and batch.uncond_rows is not None
        if skip_uncond:  # as A1111: after the cfg_denoiser callbacks, the negative-prompt rows are dropped
            unet_x, context, rows, uncond_context = unet_x[:n_cond], context[:n_cond], rows[:n_cond], None
            pooled = pooled[:n_cond] if pooled is not None else None
        added = sdxl_added_cond(model, pooled, self.width, self.height) if model.is_sdxl else None
        if uncond_context is None:
            call = UNetCall(unet_x, step.timestep, context, added, list(range(n_cond)),
                            list(range(n_cond, len(rows))), rows, step, self.p, model)
            hooks.fire("before_unet", call)
            out = self._unet(call)
        else:
            # prompt and negative prompt of different token lengths: two UNet batches, as A1111 runs them
            outs = []
            for part, ctx, n_c in ((slice(0, n_cond), context, n_cond), (slice(n_cond, None), uncond_context, 0)):
                sub_x = unet_x[part]
                sub_added = {k: v[part] for k, v in added.items()} if added else None
                call = UNetCall(sub_x, step.timestep, ctx, sub_added, list(range(n_c)),
                                list(range(n_c, sub_x.shape[0])), rows[part], step, self.p, model)
                hooks.fire("before_unet", call)
                outs.append(self._unet(call))
            out = torch.cat(outs)
        if skip_uncond:  # the first prompt row of each image stands in for its negative-prompt row
            out = torch.cat([out, out[[parts[0][0] for parts in batch.cond_rows]]])
        if hooks.has("cfg_denoised"):
            hooks.fire("cfg_denoised", CFGDenoisedParams(out, step.sampling_step, step.total, self.inner_model))
        # DDIM CFG++ steps along the unconditional prediction
        self.last_uncond = out[batch.uncond_rows] if batch.uncond_rows is not None else None
        combined = batch.combine(out, self.cfg_scale)
        if hooks.has("cfg_after_cfg"):
            params = AfterCFGCallbackParams(combined, step.sampling_step, step.total)
            hooks.fire("cfg_after_cfg", params)
            combined = params.x
        return combined

    def _unet(self, call: UNetCall) -> torch.Tensor:
        dtype = self.model.dtype
        kwargs = dict(call.extra_kwargs)
        down, mid = call.down_block_additional_residuals, call.mid_block_additional_residual
        if down is not None or mid is not None:
            # diffusers adds either only when both are given: the missing one becomes zeros (scalars broadcast)
            zero = torch.zeros((), dtype=dtype, device=call.x.device)
            down = [zero] * self._n_skips() if down is None else down
            kwargs["down_block_additional_residuals"] = [r.to(dtype) for r in down]
            kwargs["mid_block_additional_residual"] = zero if mid is None else mid.to(dtype)
        if call.down_intrablock_additional_residuals is not None:
            kwargs["down_intrablock_additional_residuals"] = [
                r.to(dtype) for r in call.down_intrablock_additional_residuals]
        with torch.no_grad():
            return self.model.unet(call.x.to(dtype), call.timestep, encoder_hidden_states=call.context.to(dtype),
                                   added_cond_kwargs=call.added_cond, return_dict=False, **kwargs)[0].float()

    def _n_skips(self) -> int:
        """How many skip connections the UNet's down path makes (conv_in, each resnet, each downsampler)."""
        return 1 + sum(len(b.resnets) + (1 if getattr(b, "downsamplers", None) else 0)
                       for b in self.model.unet.down_blocks)

    def _cfg_denoiser(self, x_in, image_cond, context, pooled, n_cond: int, step: StepInfo, uncond_context=None):
        """A1111's on_cfg_denoiser: conds as A1111 passes them (SDXL: {"crossattn", "vector"}), read back after."""
        def split(ctx, rows: slice):
            if pooled is None:
                return ctx
            return {"crossattn": ctx, "vector": pooled[rows]}
        if uncond_context is None:
            cond_ctx, uncond_ctx = context[:n_cond], (context[n_cond:] if context.shape[0] > n_cond else None)
        else:
            cond_ctx, uncond_ctx = context, uncond_context
        sigma = torch.full((x_in.shape[0],), float(step.sigma), device=x_in.device)
        params = CFGDenoiserParams(x_in, image_cond, sigma, step.sampling_step, step.total,
                                   split(cond_ctx, slice(0, n_cond)),
                                   split(uncond_ctx, slice(n_cond, None)) if uncond_ctx is not None else None, self)
        self.hooks.fire("cfg_denoiser", params)
        parts = [params.text_cond] + ([params.text_uncond] if params.text_uncond is not None else [])
        if pooled is not None:
            pooled = torch.cat([c["vector"] for c in parts])
            parts = [c["crossattn"] for c in parts]
        if len(parts) == 2 and parts[0].shape[1] != parts[1].shape[1]:
            return params.x, params.image_cond, parts[0], pooled, parts[1]
        return params.x, params.image_cond, torch.cat(parts), pooled, None
