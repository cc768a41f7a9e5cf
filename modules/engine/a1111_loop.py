"""A sampling pass run as A1111 v1.10.1 runs it: A1111's σ list (or timestep grid), initial noise x·σ0, the UNet fed
x·c_in at the continuous t of each σ, CFG, the sampler function, step noise from the images' seeded generators
(Brownian trees seeded with the image seeds for the SDE samplers), img2img's t_enc rule.

The samplers themselves are in k_sampling; this module adapts our Denoiser (which returns the guided ε or v of the
UNet rows) to the k-diffusion denoiser view (x → denoised x0) and runs the hooks, progress and interrupts.
"""
from __future__ import annotations

from typing import Callable

import torch

from modules.engine import k_sampling as ks
from modules.engine import rng, samplers
from modules.engine.hooks import AfterStepArgs, ExtraNoiseParams, MaskBlendArgs, StepInfo


def _knob(p_value, default):
    return default if p_value is None else p_value


def img2img_steps(steps: int, strength: float) -> tuple[int, int]:
    """A1111's (steps, t_enc) for img2img and the hires pass (img2img_fix_steps off)."""
    return steps, int(min(strength, 0.999) * steps)


def schedule_of(model) -> ks.DiscreteSchedule:
    cached = getattr(model, "_a1111_schedule", None)
    if cached is None:
        cached = ks.DiscreteSchedule(ks.ldm_alphas_cumprod(model.scheduler_config()))
        try:
            model._a1111_schedule = cached
        except AttributeError:
            pass
    return cached


def sample(model, run, latents_init, noise, generators, denoiser, hooks, *, state=None, p=None, blend_mask=None,
           seeds: list[int] | None = None, options: samplers.SamplerOptions | None = None,
           on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    spec = run.sampler
    opts = options or samplers.SamplerOptions()
    knobs = run.knobs or {}
    extra = getattr(p, "extra_generation_params", None)
    extra = extra if isinstance(extra, dict) else {}
    sched = schedule_of(model)
    if spec.func == "lcm":
        sched = ks.LCMSchedule(sched.alphas_cumprod)
    device = noise.device
    v_pred = model.scheduler_config().get("prediction_type") == "v_prediction"
    seeds = list(seeds) if seeds is not None else list(range(noise.shape[0]))
    img2img = run.strength is not None

    def step_noise(_sigma=None, _sigma_next=None) -> torch.Tensor:
        return torch.stack([rng.draw(g, noise.shape[1:]).to(device) for g in generators])

    # the pass's σ list / timestep grid and the starting latents
    if spec.kind == "timesteps":
        eta = _knob(knobs.get("eta"), opts.eta_ddim)
        if eta != 0.0:
            extra["Eta DDIM"] = eta
        discard = opts.always_discard_next_to_last_sigma
        if discard:
            extra["Discard penultimate sigma"] = True
        if img2img:
            steps, t_enc = img2img_steps(run.steps, run.strength)
            grid = ks.a1111_timesteps(steps + discard)
            a = sched.alphas_cumprod[grid[t_enc]]
            x = latents_init * a.sqrt() + noise * run.noise_multiplier * (1 - a).sqrt()
            grid = grid[:t_enc]
            total = t_enc + 1
        else:
            grid = ks.a1111_timesteps(run.steps + discard)
            x = noise
            total = run.steps
    else:
        eta = _knob(knobs.get("eta"), opts.eta_ancestral)
        steps, t_enc = img2img_steps(run.steps, run.strength) if img2img else (run.steps, None)
        sigmas = samplers.k_sigmas(spec, run.schedule, steps, sched, opts, model.is_sdxl, extra)
        if img2img:
            sigma_sched = sigmas[steps - t_enc - 1:]
            x = latents_init + noise * run.noise_multiplier * sigma_sched[0]
            total = t_enc + 1
        else:
            sigma_sched = sigmas
            x = noise * ((1.0 + sigmas[0] ** 2) ** 0.5 if opts.sgm_noise_multiplier else sigmas[0])
            if opts.sgm_noise_multiplier:
                extra["SGM noise multplier"] = True  # sic: A1111's key
            total = run.steps
        if spec.ancestral or spec.brownian or spec.func == "restart":
            if eta != 1.0 and spec.func not in ("restart",):
                extra["Eta"] = eta
    if img2img and run.extra_noise > 0:
        params = ExtraNoiseParams(noise, latents_init, x)
        hooks.fire("extra_noise", params)
        x = params.xi + params.noise * run.extra_noise

    # A1111 passes s_churn/s_tmin/s_tmax/s_noise only to Euler, Heun and DPM2
    churn_knobs = spec.func in ("euler", "heun", "dpm_2")
    s_churn = _knob(knobs.get("s_churn"), opts.s_churn) if churn_knobs else 0.0
    s_tmin = _knob(knobs.get("s_tmin"), opts.s_tmin) if churn_knobs else 0.0
    s_tmax = (_knob(knobs.get("s_tmax"), opts.s_tmax) or float("inf")) if churn_knobs else float("inf")
    s_noise = _knob(knobs.get("s_noise"), opts.s_noise) if churn_knobs else 1.0
    if churn_knobs:
        for key, value, default in (("Sigma churn", s_churn, 0.0), ("Sigma tmin", s_tmin, 0.0),
                                    ("Sigma noise", s_noise, 1.0)):
            if value != default:
                extra[key] = value
    s_min_uncond = _knob(getattr(p, "s_min_uncond", None), opts.s_min_uncond) or 0.0
    if s_min_uncond:
        extra["NGMS"] = s_min_uncond

    keep = None if blend_mask is None else 1 - blend_mask   # A1111's p.mask: 1 = keep the original
    mask_blend = hooks.get("mask_blend")
    after_step = hooks.get("after_step")
    calls = 0
    where = {"i": 0}
    if state is not None:
        state.sampling_steps, state.sampling_step = total, 0

    def call_unet(x_in, t, sigma: float):
        nonlocal calls
        info = StepInfo(where["i"], total, t, sigma, run.name)
        skip = bool(calls % 2 and s_min_uncond > 0 and sigma < s_min_uncond)
        out = denoiser(x_in, info, calls) if not skip else denoiser.cond_only(x_in, info, calls)
        calls += 1
        return out

    def blend(current, sigma):
        blended = current * blend_mask + latents_init * keep
        if mask_blend:
            args = MaskBlendArgs(current, blend_mask, latents_init, keep, blended, denoiser, sigma)
            for fn in mask_blend:
                fn(p, args)
            blended = args.blended_latent
        return blended

    def k_model(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        c_in = 1 / (sigma ** 2 + 1) ** 0.5
        out = call_unet(x * c_in, sched.sigma_to_t(sigma), float(sigma))
        if v_pred:
            denoised = x * (1 / (sigma ** 2 + 1)) + out * (-sigma / (sigma ** 2 + 1) ** 0.5)
        else:
            denoised = x + out * (-sigma)
        if spec.func == "lcm":
            denoised = sched.consistency_out(sigma, denoised, x)
        return blend(denoised, sigma) if keep is not None else denoised

    def eps_model(x, t):
        """ε at UNet time t (an integer step for DDIM/PLMS, continuous for UniPC; v → ε with ᾱ at int(t) as A1111)"""
        t = float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t)
        a = sched.alphas_cumprod[int(t)]
        sigma = float(((1 - a) / a) ** 0.5)
        if keep is not None:
            x = blend(x, sigma)
        out = call_unet(x, torch.tensor(t, dtype=torch.float32), sigma)
        if v_pred:
            out = a.sqrt() * out + (1 - a).sqrt() * x
        return out

    def eps_model_cfgpp(x, t: int):
        e_t = eps_model(x, t)
        u = denoiser.last_uncond
        if v_pred and u is not None:
            a = sched.alphas_cumprod[t]
            u = a.sqrt() * u + (1 - a).sqrt() * x
        return e_t, (u if u is not None else e_t)

    def done(i: int, x: torch.Tensor) -> torch.Tensor:
        where["i"] = i + 1
        if state is not None:
            state.sampling_step = i + 1
        if on_step is not None:
            on_step(i, x)
        if after_step:
            info = StepInfo(i, total, None, 0.0, run.name)
            args = AfterStepArgs(x, info, p)
            for fn in after_step:
                new = fn(args)
                if new is not None:
                    args.latents = new
            x = args.latents
        if state is not None:
            state.current_latent = x
            if state.interrupted or state.skipped:
                raise ks.Stop(x)
        return x

    ctx = ks.Ctx(noise=step_noise, done=done, eta=eta, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                 s_noise=s_noise, extra=dict(spec.options))
    if state is not None and (state.interrupted or state.skipped):
        return x
    try:
        if spec.kind == "timesteps":
            if spec.func == "ddim_cfgpp":
                scale = denoiser.cfg_scale
                denoiser.cfg_scale = scale / 12.5
                try:
                    x = ks.ddim(eps_model_cfgpp, x, grid, sched.alphas_cumprod, ctx, cfgpp=True)
                finally:
                    denoiser.cfg_scale = scale
            elif spec.func == "ddim":
                x = ks.ddim(eps_model, x, grid, sched.alphas_cumprod, ctx)
            elif spec.func == "unipc":
                x = ks.unipc(eps_model, x, sched.alphas_cumprod, len(grid), ctx, opts.uni_pc_variant,
                             opts.uni_pc_skip_type, opts.uni_pc_order, opts.uni_pc_lower_order_final,
                             t_start=float(grid[-1]) / 1000 + 1 / 1000 if img2img else None)
            else:
                x = ks.plms(eps_model, x, grid, sched.alphas_cumprod, ctx)
        else:
            if spec.brownian:
                ctx.noise = ks.BrownianNoise(x, sigmas[sigmas > 0].min(), sigmas.max(), seeds)
            fn = getattr(ks, spec.func)
            if spec.func in ("dpm_fast", "dpm_adaptive"):
                if img2img:
                    lo, hi, n = sigma_sched[-2], sigma_sched[0], len(sigma_sched) - 1
                else:
                    lo, hi, n = sched.sigma_min, sched.sigma_max, run.steps
                x = ks.dpm_fast(k_model, x, lo, hi, n, ctx) if spec.func == "dpm_fast" \
                    else ks.dpm_adaptive(k_model, x, lo, hi, ctx)
            else:
                x = fn(k_model, x, sigma_sched, ctx)
    except ks.Stop as stop:
        x = stop.x
    if keep is not None:
        final = x * blend_mask + latents_init * keep
        if mask_blend:
            args = MaskBlendArgs(x, blend_mask, latents_init, keep, final, None, None)
            for fn in mask_blend:
                fn(p, args)
            final = args.blended_latent
        x = final
    return x
