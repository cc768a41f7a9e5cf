"""Parameters → images plus their infotext: txt2img (with hires. fix), img2img and inpainting. No UI or HTTP here.

prompt → conditioning per step → seeded CPU noise → denoising loop (diffusers scheduler, CFG / composable diffusion,
hooks) → VAE decode → (inpainting) composite into the original → PIL images, saved with infotext when asked.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from modules.engine import conditioning, image_ops, infotext, latent_preview, rng, samplers
from modules.engine.params import GenerationParams, ParamError
from modules.jobs import JobState

# Hook points for extensions and built-in features: each is a list of callables.
#   before_process(p); on_step(p, step, latents); on_image(p, image, index); after_process(p, processed)
HOOKS: dict[str, list[Callable]] = {"on_step": [], "on_image": [], "before_process": [], "after_process": []}

LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True), "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True), "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
DEFAULT_HR_DENOISING = 0.7


@dataclass
class RunOptions:
    """Settings the engine reads, passed in by the runtime (the engine never reads global settings)."""
    clip_skip: int = 1
    ensd: int = 0
    randn_source: str = "CPU"
    preview_every: int = 0           # live preview every N steps; 0 = off
    save: Callable[[Image.Image, int, str, str], str | None] | None = None


@dataclass
class Processed:
    images: list[Image.Image]
    infotexts: list[str]
    params: GenerationParams
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    saved_paths: list[str] = field(default_factory=list)


def _param_error(exc: samplers.SamplerError) -> ParamError:
    name, _, message = str(exc).partition(": ")
    return ParamError(name, message)


def latents_to_images(model, latents: torch.Tensor) -> list[Image.Image]:
    vae = model.vae
    with torch.no_grad():
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    arr = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def images_to_latents(model, images: list[Image.Image]) -> torch.Tensor:
    vae = model.vae
    arr = np.stack([np.asarray(image_ops.to_rgb(im), dtype=np.float32) / 127.5 - 1 for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(model.device, vae.dtype)
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode()  # the mean: reproducible, as A1111 does
    return latents.float() * vae.config.scaling_factor


def _mask_latent(mask: Image.Image, shape: tuple[int, int], device) -> torch.Tensor:
    m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255)[None, None]
    return F.interpolate(m, size=shape, mode="bilinear", align_corners=False).to(device)


def inpainting_image_cond(model, images: list[Image.Image] | None, masks: list[Image.Image] | None,
                          batch: int, width: int, height: int) -> torch.Tensor | None:
    """Extra UNet inputs of 9-channel inpainting checkpoints: the mask and the latent of the image with the masked
    area blanked. txt2img (no image) masks everything."""
    if model.unet.config.in_channels != 9:
        return None
    factor = model.vae_scale_factor
    if images is None:
        blank = Image.new("RGB", (width, height), (127, 127, 127))
        images, masks = [blank] * batch, [Image.new("L", (width, height), 255)] * batch
    masked = []
    for im, m in zip(images, masks):
        keep = (np.asarray(m.convert("L"), dtype=np.float32) < 128)[..., None]
        arr = np.asarray(image_ops.to_rgb(im), dtype=np.float32)
        masked.append(Image.fromarray((arr * keep + 127.5 * (1 - keep)).astype(np.uint8)))
    latent = images_to_latents(model, masked)
    mask_lat = torch.cat([(_mask_latent(m, (height // factor, width // factor), model.device) > 0.5).float()
                          for m in masks])
    return torch.cat([mask_lat, latent], dim=1)


@contextlib.contextmanager
def seamless(model, enabled: bool):
    """Tiling: every convolution pads circularly, so the image wraps around at its edges."""
    if not enabled:
        yield
        return
    convs = [m for net in (model.unet, model.vae) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    old = [c.padding_mode for c in convs]
    for c in convs:
        c.padding_mode = "circular"
    try:
        yield
    finally:
        for c, mode in zip(convs, old):
            c.padding_mode = mode


def _sdxl_added_cond(model, pooled: torch.Tensor, width: int, height: int) -> dict:
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=model.dtype, device=model.device)
    return {"text_embeds": pooled.to(model.dtype), "time_ids": time_ids.repeat(pooled.shape[0], 1)}


@dataclass
class Blend:
    """Per-step latent masking for inpainting with ordinary checkpoints: outside the mask the latent follows the
    original image noised to the current step."""
    init_latent: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor  # 1 = repaint


def denoise(model, scheduler, latents, conds: conditioning.StepConditioner, cfg_scale: float,
            generators: list[torch.Generator], state: JobState | None, width: int, height: int,
            timesteps: torch.Tensor | None = None, steps: int | None = None,
            image_cond: torch.Tensor | None = None, blend: Blend | None = None,
            on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The sampling loop over `timesteps` (all of the scheduler's by default)."""
    unet = model.unet
    timesteps = scheduler.timesteps if timesteps is None else timesteps
    steps = steps or len(timesteps)
    # ancestral/SDE schedulers draw their step noise from the per-image CPU generators; the others take none
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    if state is not None:
        state.sampling_steps, state.sampling_step = len(timesteps), 0
    for i, t in enumerate(timesteps):
        if state is not None and (state.interrupted or state.skipped):
            break
        batch = conds.batch(i * steps // len(timesteps))  # prompt editing counts sampling steps
        rows = (list(range(latents.shape[0])) if batch.uncond_rows is not None else []) + \
            [b for b, parts in enumerate(batch.cond_rows) for _ in parts]
        x_in = scheduler.scale_model_input(latents[rows], t)
        if image_cond is not None:
            x_in = torch.cat([x_in, image_cond[rows].to(x_in.dtype)], dim=1)
        added = _sdxl_added_cond(model, batch.pooled, width, height) if model.is_sdxl else None
        with torch.no_grad():
            out = unet(x_in.to(model.dtype), t, encoder_hidden_states=batch.context.to(model.dtype),
                       added_cond_kwargs=added, return_dict=False)[0].float()
        latents = scheduler.step(batch.combine(out, cfg_scale), t, latents, return_dict=False, **step_kwargs)[0]
        if blend is not None:
            if i + 1 < len(timesteps):
                known = scheduler.add_noise(blend.init_latent, blend.noise, timesteps[i + 1:i + 2])
            else:
                known = blend.init_latent
            latents = blend.mask * latents + (1 - blend.mask) * known
        if state is not None:
            state.sampling_step = i + 1
            state.current_latent = latents
        if on_step is not None:
            on_step(i, latents)
    return latents


class Job:
    """One run of GenerationParams on one model (all batches)."""

    def __init__(self, model, p: GenerationParams, state: JobState | None, opts: RunOptions):
        self.model, self.p, self.state, self.opts = model, p, state, opts
        try:
            self.sampler, self.schedule = samplers.resolve(p.sampler_name, p.scheduler)
            self.hr_sampler, self.hr_schedule = samplers.resolve(p.hr_sampler_name or p.sampler_name,
                                                                 p.hr_scheduler or p.scheduler) \
                if p.enable_hr else (None, None)
        except samplers.SamplerError as exc:
            raise _param_error(exc) from None
        self.factor = model.vae_scale_factor
        if p.width % self.factor or p.height % self.factor:
            raise ParamError("width", f"width and height must be multiples of {self.factor} for this model")
        self.extra: dict[str, Any] = {}

    # --- noise and steps --------------------------------------------------------------------------------------
    def noise(self, seeds, subseeds, width, height):
        p = self.p
        shape = (self.model.vae.config.latent_channels, height // self.factor, width // self.factor)
        resize = (p.seed_resize_from_w, p.seed_resize_from_h) if p.seed_resize_from_w > 0 and \
            p.seed_resize_from_h > 0 else None
        return rng.batch_noise(shape, seeds, subseeds, p.subseed_strength, resize, self.factor,
                               self.opts.randn_source, self.model.device, ensd=self.opts.ensd)

    def _on_step(self, i, latents):
        every = self.opts.preview_every
        if self.state is not None and every > 0 and (i + 1) % every == 0:
            self.state.current_image = latent_preview.preview(self.model, latents)
            self.state.current_image_step = i + 1
        for hook in HOOKS["on_step"]:
            hook(self.p, i, latents)

    def sample(self, latents_init, noise, gens, conds, sampler, schedule, steps, width, height, strength=None,
               image_cond=None, blend_mask=None, seeds=None):
        """txt2img from noise (strength None) or img2img from latents_init at `strength`."""
        noise_seed = seeds[0] + self.opts.ensd if seeds else None
        scheduler = samplers.prepare(sampler, schedule, self.model.scheduler_config(), steps, self.model.device,
                                     self.model.is_sdxl, noise_seed=noise_seed)
        timesteps = scheduler.timesteps
        if strength is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            run_steps = max(1, min(int(steps * strength), steps))
            start = (steps - run_steps) * scheduler.order
            timesteps = timesteps[start:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            latents = scheduler.add_noise(latents_init, noise * self.p.initial_noise_multiplier, timesteps[:1])
        blend = Blend(latents_init, noise, blend_mask) if blend_mask is not None else None
        return denoise(self.model, scheduler, latents, conds, self.p.cfg_scale, gens, self.state, width, height,
                       timesteps=timesteps, steps=steps, image_cond=image_cond, blend=blend, on_step=self._on_step)

    # --- txt2img ----------------------------------------------------------------------------------------------
    def txt2img_batch(self, prompts, negatives, seeds, subseeds) -> list[Image.Image]:
        p = self.p
        noise, gens = self.noise(seeds, subseeds, p.width, p.height)
        conds = conditioning.StepConditioner(self.model, prompts, negatives, p.steps, self.opts.clip_skip,
                                             p.cfg_scale)
        image_cond = inpainting_image_cond(self.model, None, None, len(seeds), p.width, p.height)
        latents = self.sample(None, noise, gens, conds, self.sampler, self.schedule, p.steps, p.width, p.height,
                              image_cond=image_cond, seeds=seeds)
        if p.enable_hr and not self._stopped():
            return self.hires_pass(latents, prompts, negatives, seeds, subseeds)
        return latents_to_images(self.model, latents)

    def hires_pass(self, latents, prompts, negatives, seeds, subseeds) -> list[Image.Image]:
        p = self.p
        width, height = p.hr_size()
        upscaler = p.hr_upscaler or "Latent"
        if upscaler in LATENT_UPSCALE_MODES:
            mode, antialias = LATENT_UPSCALE_MODES[upscaler]
            size = (height // self.factor, width // self.factor)
            kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
            init = F.interpolate(latents, size=size, mode=mode, antialias=antialias, **kwargs) \
                if antialias else F.interpolate(latents, size=size, mode=mode, **kwargs)
        elif upscaler in IMAGE_UPSCALERS:
            images = latents_to_images(self.model, latents)
            resample = IMAGE_UPSCALERS[upscaler] or Image.Resampling.LANCZOS
            init = images_to_latents(self.model, [im.resize((width, height), resample) for im in images])
        else:
            raise ParamError("hr_upscaler", f"unknown upscaler {upscaler!r}; choose one of "
                                            f"{list(LATENT_UPSCALE_MODES) + list(IMAGE_UPSCALERS)}")
        strength = DEFAULT_HR_DENOISING if p.denoising_strength is None else p.denoising_strength
        steps = p.hr_second_pass_steps or p.steps
        hr_prompts = [p.hr_prompt] * len(prompts) if p.hr_prompt else prompts
        hr_negatives = [p.hr_negative_prompt] * len(negatives) if p.hr_negative_prompt else negatives
        conds = conditioning.StepConditioner(self.model, hr_prompts, hr_negatives, steps, self.opts.clip_skip,
                                             p.cfg_scale)
        noise, gens = self.noise(seeds, subseeds, width, height)
        image_cond = inpainting_image_cond(self.model, None, None, len(seeds), width, height)
        if self.state is not None:
            self.state.textinfo = "Hires. fix"
        out = self.sample(init, noise, gens, conds, self.hr_sampler, self.hr_schedule, steps, width, height,
                          strength=strength, image_cond=image_cond, seeds=seeds)
        self.extra.update({"Denoising strength": strength,
                           "Hires upscale": p.hr_scale if not (p.hr_resize_x or p.hr_resize_y) else None,
                           "Hires resize": f"{width}x{height}" if (p.hr_resize_x or p.hr_resize_y) else None,
                           "Hires steps": p.hr_second_pass_steps or None, "Hires upscaler": upscaler,
                           "Hires sampler": self.hr_sampler.name if p.hr_sampler_name else None,
                           "Hires schedule type": self.hr_schedule if p.hr_scheduler else None,
                           "Hires prompt": p.hr_prompt or None, "Hires negative prompt": p.hr_negative_prompt or None})
        return latents_to_images(self.model, out)

    # --- img2img / inpainting ---------------------------------------------------------------------------------
    def img2img_batch(self, prompts, negatives, seeds, subseeds, init_images) -> list[Image.Image]:
        p = self.p
        strength = 0.75 if p.denoising_strength is None else p.denoising_strength
        self.extra["Denoising strength"] = strength
        mask = image_ops.prepare_mask(p.mask, bool(p.inpainting_mask_invert), 0) if p.mask is not None else None
        originals = [image_ops.to_rgb(im) for im in init_images]
        crop_box = None
        if mask is not None and p.inpaint_full_res:
            # "only masked": work on the mask's neighbourhood at full resolution, paste it back afterwards
            crop_box = image_ops.masked_box(mask.resize(originals[0].size), p.inpaint_full_res_padding,
                                            p.width, p.height)
            work = [im.crop(crop_box).resize((p.width, p.height), Image.Resampling.LANCZOS) for im in originals]
            work_mask = mask.resize(originals[0].size).crop(crop_box).resize((p.width, p.height))
        else:
            work = [image_ops.resize_image(p.resize_mode, im, p.width, p.height) for im in originals]
            work_mask = image_ops.resize_image(p.resize_mode, mask, p.width, p.height) if mask is not None else None
        if strength == 0:  # nothing to denoise: the (resized) input is the answer
            return work if crop_box is None else originals
        if work_mask is not None:
            self.extra.update({"Mask blur": p.mask_blur, "Masked content": ["fill", "original", "latent noise",
                                                                            "latent nothing"][p.inpainting_fill]})
            if p.inpaint_full_res:
                self.extra.update({"Inpaint area": "Only masked", "Masked area padding": p.inpaint_full_res_padding})
            if p.inpainting_fill == 0:
                work = [image_ops.fill_masked(im, work_mask) for im in work]
        if p.resize_mode == 3 and work_mask is None:
            # "Just resize (latent upscale)": encode each input at its own size, then resize its latents
            f, size = self.factor, (p.height // self.factor, p.width // self.factor)
            latents = torch.cat([F.interpolate(
                images_to_latents(self.model, [im.resize((max(f, im.width // f * f), max(f, im.height // f * f)))]),
                size=size, mode="bilinear", align_corners=False) for im in originals])
        else:
            latents = images_to_latents(self.model, work)
        noise, gens = self.noise(seeds, subseeds, p.width, p.height)
        blend_mask = None
        if work_mask is not None:
            lat_mask = _mask_latent(image_ops.prepare_mask(work_mask, False, p.mask_blur),
                                    latents.shape[2:], latents.device)
            lat_mask = (lat_mask > 0.5).float() if self.model.unet.config.in_channels == 9 else lat_mask.round()
            if p.inpainting_fill == 2:
                latents = latents * (1 - lat_mask) + noise * lat_mask
            elif p.inpainting_fill == 3:
                latents = latents * (1 - lat_mask)
            if self.model.unet.config.in_channels != 9:
                blend_mask = lat_mask
        image_cond = inpainting_image_cond(self.model, work, [work_mask] * len(work) if work_mask is not None
                                           else None, len(work), p.width, p.height) \
            if self.model.unet.config.in_channels == 9 else None
        if image_cond is not None and work_mask is None:
            image_cond = inpainting_image_cond(self.model, None, None, len(work), p.width, p.height)
        conds = conditioning.StepConditioner(self.model, prompts, negatives, p.steps, self.opts.clip_skip,
                                             p.cfg_scale)
        out = self.sample(latents, noise, gens, conds, self.sampler, self.schedule, p.steps, p.width, p.height,
                          strength=strength, image_cond=image_cond, blend_mask=blend_mask, seeds=seeds)
        images = latents_to_images(self.model, out)
        if work_mask is None:
            return images
        blurred = image_ops.prepare_mask(work_mask, False, p.mask_blur) if p.mask_blur else work_mask
        if crop_box is None:
            return [image_ops.composite(orig, gen, blurred) for orig, gen in zip(work_original(self, originals),
                                                                                images)]
        full_mask = image_ops.prepare_mask(mask.resize(originals[0].size), False, p.mask_blur)
        results = []
        for orig, gen in zip(originals, images):
            x1, y1, x2, y2 = crop_box
            pasted = orig.copy()
            pasted.paste(gen.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
            results.append(image_ops.composite(orig, pasted, full_mask))
        return results

    def _stopped(self) -> bool:
        return self.state is not None and (self.state.interrupted or self.state.skipped)

    # --- the whole job ----------------------------------------------------------------------------------------
    def run(self) -> Processed:
        p, model = self.p, self.model
        for hook in HOOKS["before_process"]:
            hook(p)
        seed = rng.resolve_seed(p.seed)
        subseed = rng.resolve_seed(p.subseed)
        n_images = p.batch_size * p.n_iter
        all_seeds = [seed + i for i in range(n_images)]
        all_subseeds = [subseed + i for i in range(n_images)]
        all_prompts, all_negative = [p.prompt] * n_images, [p.negative_prompt] * n_images
        if self.state is not None:
            self.state.job_count = p.n_iter
        images, texts, saved, kept_seeds = [], [], [], []
        t0 = time.perf_counter()
        with seamless(model, p.tiling):
            for batch_no in range(p.n_iter):
                if self.state is not None:
                    if self.state.interrupted:
                        break
                    self.state.job_no, self.state.skipped = batch_no, False
                lo, hi = batch_no * p.batch_size, (batch_no + 1) * p.batch_size
                args = (all_prompts[lo:hi], all_negative[lo:hi], all_seeds[lo:hi], all_subseeds[lo:hi])
                if p.init_images:
                    inits = [p.init_images[i % len(p.init_images)] for i in range(lo, hi)]
                    decoded = self.img2img_batch(*args, inits)
                else:
                    decoded = self.txt2img_batch(*args)
                for j, image in enumerate(decoded):
                    index = lo + j
                    text = infotext.build(all_prompts[index], all_negative[index], self.fields(index, all_seeds,
                                                                                               all_subseeds))
                    for hook in HOOKS["on_image"]:
                        hook(p, image, index)
                    images.append(image)
                    texts.append(text)
                    kept_seeds.append(all_seeds[index])
                    if self.opts.save is not None:
                        path = self.opts.save(image, all_seeds[index], all_prompts[index], text)
                        if path:
                            saved.append(path)
        n = len(images)
        result = Processed(images, texts, p, kept_seeds, all_subseeds[:n], all_prompts[:n], all_negative[:n],
                           saved_paths=saved)
        result.info = self.info_dict(result, seed, subseed, time.perf_counter() - t0)
        for hook in HOOKS["after_process"]:
            hook(p, result)
        return result

    def fields(self, index: int, seeds: list[int], subseeds: list[int]) -> dict:
        p, info = self.p, self.model.info
        variation = p.subseed_strength > 0
        return {
            "Steps": p.steps, "Sampler": self.sampler.name, "Schedule type": self.schedule, "CFG scale": p.cfg_scale,
            "Seed": seeds[index], "Size": f"{p.width}x{p.height}", "Model hash": info.shorthash, "Model": info.stem,
            "VAE": self.model.vae_file.stem if self.model.vae_file else None,
            "Variation seed": subseeds[index] if variation else None,
            "Variation seed strength": p.subseed_strength if variation else None,
            "Seed resize from": f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
            if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0 else None,
            "Clip skip": self.opts.clip_skip if self.opts.clip_skip > 1 else None,
            "ENSD": self.opts.ensd if self.opts.ensd and self.sampler.ancestral else None,
            "RNG": self.opts.randn_source if self.opts.randn_source != "CPU" else None,
            "Tiling": True if p.tiling else None, **self.extra,
        }

    def info_dict(self, r: Processed, seed: int, subseed: int, seconds: float) -> dict:
        p = r.params
        return {
            "prompt": p.prompt, "all_prompts": r.prompts, "negative_prompt": p.negative_prompt,
            "all_negative_prompts": r.negative_prompts, "seed": seed, "all_seeds": r.seeds, "subseed": subseed,
            "all_subseeds": r.subseeds, "subseed_strength": p.subseed_strength, "width": p.width, "height": p.height,
            "sampler_name": self.sampler.name, "cfg_scale": p.cfg_scale, "steps": p.steps,
            "batch_size": p.batch_size, "restore_faces": p.restore_faces, "face_restoration_model": None,
            "sd_model_name": self.model.info.stem, "sd_model_hash": self.model.info.shorthash,
            "sd_vae_name": self.model.vae_file.stem if self.model.vae_file else None, "sd_vae_hash": None,
            "seed_resize_from_w": p.seed_resize_from_w, "seed_resize_from_h": p.seed_resize_from_h,
            "denoising_strength": self.extra.get("Denoising strength", p.denoising_strength),
            "extra_generation_params": {k: v for k, v in self.extra.items() if v is not None},
            "index_of_first_image": 0, "infotexts": r.infotexts, "styles": p.styles,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": self.opts.clip_skip,
            "is_using_inpainting_conditioning": self.model.unet.config.in_channels == 9,
            "version": infotext.VERSION, "seconds": round(seconds, 3),
        }


def work_original(job: Job, originals: list[Image.Image]) -> list[Image.Image]:
    """The original images as the model saw them (resized to the output size), for the final composite."""
    p = job.p
    return [image_ops.resize_image(p.resize_mode, im, p.width, p.height) for im in originals]


def process(model, p: GenerationParams, state: JobState | None = None, opts: RunOptions | None = None) -> Processed:
    p.validate()
    return Job(model, p, state, opts or RunOptions()).run()


def txt2img(model, p: GenerationParams, state: JobState | None = None, *, clip_skip: int = 1,
            save: Callable[[Image.Image, int, str, str], str | None] | None = None) -> Processed:
    """Compatibility wrapper: txt2img with only clip skip and saving from the settings."""
    return process(model, p, state, RunOptions(clip_skip=clip_skip, save=save))
