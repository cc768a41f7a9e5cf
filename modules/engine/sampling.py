"""The sampling loop, k-diffusion-sized: scale → denoiser → scheduler step → after-step hooks and progress.

`sample` prepares the diffusers scheduler for a pass (txt2img from noise, or img2img / hires. fix from latents at a
denoising strength) and runs the loop. Sampler knobs the request carries (eta, s_churn, s_tmin, s_tmax, s_noise) go
to the scheduler's step() when it takes them (DDIM takes eta; Euler takes the churn ones), and are otherwise unused.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from modules.engine import samplers
from modules.engine.denoiser import Denoiser
from modules.engine.hooks import AfterStepArgs, ExtraNoiseParams, Hooks, MaskBlendArgs, StepInfo

STEP_KNOBS = ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise")


@dataclass
class Blend:
    """Per-step latent masking for inpainting with ordinary checkpoints: outside the mask the latent follows the
    original image noised to the current step."""
    init_latent: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor  # 1 = repaint


@dataclass
class Pass:
    """What one sampling pass needs besides the denoiser."""
    sampler: samplers.SamplerSpec
    schedule: str
    steps: int
    name: str = "base"                  # "base" or "hires"
    strength: float | None = None       # None: from noise (txt2img); else img2img from the given latents
    noise_multiplier: float = 1.0
    knobs: dict | None = None           # eta, s_churn, ... as given (None values are left out)
    hires_rule: bool = False            # prompt editing counts this pass's own steps from 0 (A1111's hires rule)
    extra_noise: float = 0.0            # img2img/hires: A1111's img2img_extra_noise multiplier


def step_kwargs(scheduler, generators, knobs: dict | None) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generators} if "generator" in params else {}
    for name, value in (knobs or {}).items():
        if value is not None and name in params:
            kwargs[name] = value
    return kwargs


def _sigma_of(scheduler) -> Callable[[object], float]:
    """σ of a timestep from the training schedule (for schedulers that keep no sigma list: DDIM, PLMS, LCM)."""
    alphas = getattr(scheduler, "alphas_cumprod", None)

    def sigma(t) -> float:
        if alphas is None:
            return 0.0
        index = min(max(int(round(float(t))), 0), len(alphas) - 1)
        a = float(alphas[index])
        return ((1 - a) / a) ** 0.5
    return sigma


def sample(model, run: Pass, latents_init, noise, generators, denoiser: Denoiser, hooks: Hooks, *, state=None,
           p=None, blend_mask=None, noise_seed: int | None = None, seeds: list[int] | None = None,
           options: samplers.SamplerOptions | None = None,
           on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    if run.sampler.func is not None:
        from modules.engine import a1111_loop
        return a1111_loop.sample(model, run, latents_init, noise, generators, denoiser, hooks, state=state, p=p,
                                 blend_mask=blend_mask, seeds=seeds, options=options, on_step=on_step)
    scheduler = samplers.prepare(run.sampler, run.schedule, model.scheduler_config(), run.steps, model.device,
                                 model.is_sdxl, noise_seed=noise_seed)
    timesteps = scheduler.timesteps
    if run.strength is None:
        latents = noise * scheduler.init_noise_sigma
        total = run.steps
    else:
        run_steps = max(1, min(int(run.steps * run.strength), run.steps))
        start = (run.steps - run_steps) * scheduler.order
        timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        latents = scheduler.add_noise(latents_init, noise * run.noise_multiplier, timesteps[:1])
        if run.extra_noise > 0:
            extra = ExtraNoiseParams(noise, latents_init, latents)
            hooks.fire("extra_noise", extra)
            latents = extra.xi + extra.noise * run.extra_noise
        total = run_steps + 1  # A1111's sampling_steps for img2img and the hires pass: t_enc + 1
    blend = Blend(latents_init, noise, blend_mask) if blend_mask is not None else None
    kwargs = step_kwargs(scheduler, generators, run.knobs)
    sigma = _sigma_of(scheduler)
    # prompt editing: the step the prompt schedules are read at; multi-evaluation schedulers (Heun, DPM2) repeat
    # timesteps, so the index is scaled to steps
    schedule_steps = total - 1 if run.hires_rule else run.steps
    n = len(timesteps)
    if state is not None:
        state.sampling_steps, state.sampling_step = n, 0
    after_step = hooks.get("after_step")
    mask_blend = hooks.get("mask_blend")
    for i, t in enumerate(timesteps):
        if state is not None and (state.interrupted or state.skipped):
            break
        x_in = scheduler.scale_model_input(latents, t)
        index = getattr(scheduler, "step_index", None)  # k-diffusion-style schedulers know their exact sigma
        sigma_now = float(scheduler.sigmas[index]) if index is not None and hasattr(scheduler, "sigmas") \
            else sigma(t)
        info = StepInfo(i * total // n if run.strength is None else i * (total - 1) // n, total, t, sigma_now,
                        run.name)
        out = denoiser(x_in, info, i * schedule_steps // n)
        latents = scheduler.step(out, t, latents, return_dict=False, **kwargs)[0]
        if blend is not None:
            known = scheduler.add_noise(blend.init_latent, blend.noise, timesteps[i + 1:i + 2]) if i + 1 < n \
                else blend.init_latent
            blended = blend.mask * latents + (1 - blend.mask) * known
            if mask_blend:
                final = i + 1 >= n
                args = MaskBlendArgs(latents, blend.mask, known, None, blended,
                                     None if final else denoiser, None if final else sigma_now)
                for fn in mask_blend:
                    fn(p, args)
                blended = args.blended_latent
            latents = blended
        if state is not None:
            state.sampling_step = i + 1
        if on_step is not None:
            on_step(i, latents)
        if after_step:
            args = AfterStepArgs(latents, info, p)
            for fn in after_step:
                new = fn(args)
                if new is not None:
                    args.latents = new
            latents = args.latents
        if state is not None:
            state.current_latent = latents
    return latents
