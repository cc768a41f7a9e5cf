"""txt2img: parameters → images plus their infotext. No UI or HTTP code here.

prompt → conditioning → seeded CPU noise → denoising loop (diffusers scheduler, CFG, per-step hook) → VAE decode →
PIL images, saved with infotext when the settings say so.
"""
from __future__ import annotations

import inspect
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from modules.engine import conditioning, infotext, samplers
from modules.engine.params import GenerationParams, ParamError
from modules.jobs import Interrupted, JobState

# Hook points for extensions and built-in features: each is a list of callables.
#   on_step(ctx, step, latents) after each denoising step; on_image(ctx, image, index) after decoding.
HOOKS: dict[str, list[Callable]] = {"on_step": [], "on_image": [], "before_process": [], "after_process": []}


@dataclass
class Processed:
    images: list[Image.Image]
    infotexts: list[str]
    params: GenerationParams
    seeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    saved_paths: list[str] = field(default_factory=list)


def random_seed() -> int:
    return random.randrange(4294967294)


def latents_to_images(model, latents: torch.Tensor) -> list[Image.Image]:
    vae = model.vae
    with torch.no_grad():
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    arr = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def txt2img_image_cond(model, batch: int, width: int, height: int) -> torch.Tensor | None:
    """Inpainting checkpoints (9 input channels) in txt2img: everything is masked, the masked image is blank."""
    if model.unet.config.in_channels != 9:
        return None
    blank = torch.zeros(1, 3, height, width, device=model.device, dtype=model.vae.dtype)
    with torch.no_grad():
        masked = model.vae.encode(blank).latent_dist.mode() * model.vae.config.scaling_factor
    mask = torch.ones(1, 1, masked.shape[2], masked.shape[3], device=model.device)
    return torch.cat([mask, masked.float()], dim=1).repeat(batch, 1, 1, 1)


def _sdxl_added_cond(model, pooled: torch.Tensor, width: int, height: int) -> dict:
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=model.dtype, device=model.device)
    return {"text_embeds": pooled.to(model.dtype), "time_ids": time_ids.repeat(pooled.shape[0], 1)}


def denoise(model, scheduler, latents, conds: conditioning.StepConditioner, cfg_scale: float,
            generators: list[torch.Generator], state: JobState | None, width: int, height: int,
            step_callback: Callable[[int, torch.Tensor], None] | None = None,
            image_cond: torch.Tensor | None = None, steps: int | None = None) -> torch.Tensor:
    """The sampling loop. image_cond: extra UNet input channels (mask + masked-image latent) for inpainting models."""
    unet = model.unet
    timesteps = scheduler.timesteps
    steps = steps or len(timesteps)
    # ancestral/SDE schedulers draw their step noise from the per-image CPU generators; the others take none
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    if state is not None:
        state.sampling_steps = len(timesteps)  # second-order schedulers list each step twice
    for i, t in enumerate(timesteps):
        if state is not None and (state.interrupted or state.skipped):
            break
        batch = conds.batch(i * steps // len(timesteps))  # prompt editing works in sampling steps
        rows = ([b for b in range(latents.shape[0])] if batch.uncond_rows is not None else []) + \
            [b for b, parts in enumerate(batch.cond_rows) for _ in parts]
        x_in = scheduler.scale_model_input(latents[rows], t)
        if image_cond is not None:
            x_in = torch.cat([x_in, image_cond[rows]], dim=1)
        added = _sdxl_added_cond(model, batch.pooled, width, height) if model.is_sdxl else None
        with torch.no_grad():
            out = unet(x_in.to(model.dtype), t, encoder_hidden_states=batch.context.to(model.dtype),
                       added_cond_kwargs=added, return_dict=False)[0].float()
        latents = scheduler.step(batch.combine(out, cfg_scale), t, latents, return_dict=False, **step_kwargs)[0]
        if state is not None:
            state.sampling_step = i + 1
            state.current_latent = latents
        if step_callback is not None:
            step_callback(i, latents)
    return latents


def generation_fields(p: GenerationParams, model, sampler: samplers.SamplerSpec, schedule: str, seed: int,
                      clip_skip: int, extra: dict | None = None) -> dict:
    info = model.info
    return {
        "Steps": p.steps, "Sampler": sampler.name, "Schedule type": schedule, "CFG scale": p.cfg_scale, "Seed": seed,
        "Size": f"{p.width}x{p.height}", "Model hash": info.shorthash, "Model": info.stem,
        "VAE": model.vae_file.stem if model.vae_file else None,
        "Clip skip": clip_skip if clip_skip > 1 else None, "Tiling": True if p.tiling else None, **(extra or {}),
    }


def txt2img(model, p: GenerationParams, state: JobState | None = None, *, clip_skip: int = 1,
            save: Callable[[Image.Image, int, str, str], str | None] | None = None) -> Processed:
    """Runs batch_count × batch_size images. `save(image, seed, prompt, infotext)` stores one image if given."""
    p.validate()
    try:
        sampler, schedule = samplers.resolve(p.sampler_name, p.scheduler)
    except samplers.SamplerError as exc:
        field_name = str(exc).split(":")[0]
        raise ParamError(field_name, str(exc).split(": ", 1)[1]) from None
    factor = model.vae_scale_factor
    if p.width % factor or p.height % factor:
        raise ParamError("width", f"width and height must be multiples of {factor} for this model")
    seed = random_seed() if p.seed in (-1, None) else int(p.seed)
    for hook in HOOKS["before_process"]:
        hook(p)

    n_images = p.batch_size * p.n_iter
    all_seeds = [seed + i for i in range(n_images)]
    all_prompts = [p.prompt] * n_images
    all_negative = [p.negative_prompt] * n_images
    if state is not None:
        state.job_count = p.n_iter
        state.sampling_steps = p.steps
    images, texts, saved = [], [], []
    latent_shape = (model.vae.config.latent_channels, p.height // factor, p.width // factor)
    t0 = time.perf_counter()
    for batch_no in range(p.n_iter):
        if state is not None:
            if state.interrupted:
                break
            state.job_no, state.sampling_step, state.skipped = batch_no, 0, False
        lo, hi = batch_no * p.batch_size, (batch_no + 1) * p.batch_size
        seeds = all_seeds[lo:hi]
        conds = conditioning.StepConditioner(model, all_prompts[lo:hi], all_negative[lo:hi], p.steps, clip_skip,
                                             p.cfg_scale)
        scheduler = samplers.make_scheduler(sampler, schedule, model.scheduler_config())
        scheduler.set_timesteps(p.steps, device=model.device)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators]).to(model.device)
        latents = noise * scheduler.init_noise_sigma
        latents = denoise(model, scheduler, latents, conds, p.cfg_scale, generators, state, p.width, p.height,
                          step_callback=lambda i, x: [h(p, i, x) for h in HOOKS["on_step"]],
                          image_cond=txt2img_image_cond(model, len(seeds), p.width, p.height), steps=p.steps)
        if state is not None and state.interrupted and state.sampling_step < p.steps and not images:
            raise Interrupted("interrupted before the first image was finished")
        decoded = latents_to_images(model, latents)
        for j, image in enumerate(decoded):
            text = infotext.build(all_prompts[lo + j], all_negative[lo + j],
                                  generation_fields(p, model, sampler, schedule, seeds[j], clip_skip))
            for hook in HOOKS["on_image"]:
                hook(p, image, lo + j)
            images.append(image)
            texts.append(text)
            if save is not None:
                path = save(image, seeds[j], all_prompts[lo + j], text)
                if path:
                    saved.append(path)
    result = Processed(images, texts, p, all_seeds[:len(images)], all_prompts[:len(images)],
                       all_negative[:len(images)], saved_paths=saved)
    result.info = _info_dict(result, model, seed, sampler, clip_skip, time.perf_counter() - t0)
    for hook in HOOKS["after_process"]:
        hook(p, result)
    return result


def _info_dict(r: Processed, model, seed: int, sampler, clip_skip: int, seconds: float) -> dict:
    p = r.params
    return {
        "prompt": p.prompt, "all_prompts": r.prompts, "negative_prompt": p.negative_prompt,
        "all_negative_prompts": r.negative_prompts, "seed": seed, "all_seeds": r.seeds,
        "subseed": p.subseed, "all_subseeds": [p.subseed] * len(r.seeds), "subseed_strength": p.subseed_strength,
        "width": p.width, "height": p.height, "sampler_name": sampler.name, "cfg_scale": p.cfg_scale,
        "steps": p.steps, "batch_size": p.batch_size, "restore_faces": p.restore_faces,
        "face_restoration_model": None, "sd_model_name": model.info.stem, "sd_model_hash": model.info.shorthash,
        "sd_vae_name": model.vae_file.stem if model.vae_file else None, "sd_vae_hash": None,
        "seed_resize_from_w": p.seed_resize_from_w, "seed_resize_from_h": p.seed_resize_from_h,
        "denoising_strength": p.denoising_strength, "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": r.infotexts, "styles": p.styles, "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": clip_skip, "is_using_inpainting_conditioning": False, "version": infotext.VERSION,
        "seconds": round(seconds, 3),
    }
