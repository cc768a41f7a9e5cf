"""The run: A1111's process_images over the run state `p` (modules.processing.StableDiffusionProcessing).

`p` is what the engine reads while it works: the prompts, seeds and sizes come from p.all_prompts, p.all_seeds, …
after the `process` hooks ran, so a script that rewrites them changes the images and the infotext. Per batch:
before_process_batch → extra networks parsed into p.extra_network_data and activated onto p.patches →
process_batch → sampling (the denoiser with the job's hooks; hires. fix) → post_sample → decode →
postprocess_batch → per image postprocess_image, composite, infotext. The patches are on the model only while the
batch runs. Saving is not done here: the runtime saves what the run returns.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from modules.engine import extra_networks, infotext_fields, inpaint, latent_preview, rng, samplers, speedups
from modules.engine.conditioning import StepConditioner
from modules.engine.denoiser import Denoiser
from modules.engine.hooks import (PostprocessBatchListArgs, PostprocessImageArgs, PostProcessMaskOverlayArgs,
                                  PostSampleArgs)
from modules.engine.params import HR_DENOISING_DEFAULT, IMG2IMG_DENOISING_DEFAULT, ParamError, hr_size
from modules.engine.sampling import STEP_KNOBS, Pass, sample
from modules.engine.vae_codec import decode_to_tensor, images_to_latents, latents_to_images, tensor_to_images

LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True), "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True), "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


@dataclass
class RunOptions:
    """Settings the engine reads, resolved by the runtime for this job (its overrides included)."""
    clip_skip: int = 1
    ensd: int = 0
    randn_source: str = "CPU"
    preview_every: int = 0           # live preview every N steps; 0 = off
    use_old_scheduling: bool = False
    extra_noise: float = 0.0         # A1111's img2img_extra_noise: more noise after img2img/hires noising
    # the model upscalers hr_upscaler may name (modules.models.upscaler_models.JobUpscalers); None: Pillow/latent only
    upscalers: Any = None
    sampler: samplers.SamplerOptions = field(default_factory=samplers.SamplerOptions)
    speed: speedups.SpeedOptions = field(default_factory=speedups.SpeedOptions)   # token merging (ToMe)


def _stopped(state) -> bool:
    return state is not None and (state.interrupted or state.skipped)


class _Batch:
    """One batch of the run (A1111's inner loop body)."""

    def __init__(self, p, networks: extra_networks.ExtraNetworkRegistry):
        self.p, self.model, self.state, self.opts = p, p.sd_model, p.state, p.run_options
        self.hooks, self.networks = p.hooks, networks
        self.factor = self.model.vae_scale_factor
        self.conditioners: list[StepConditioner] = []

    def noise(self, width: int, height: int):
        p = self.p
        shape = (self.model.vae.config.latent_channels, height // self.factor, width // self.factor)
        resize = (p.seed_resize_from_w, p.seed_resize_from_h) if p.seed_resize_from_w > 0 and \
            p.seed_resize_from_h > 0 else None
        return rng.batch_noise(shape, p.seeds, p.subseeds, p.subseed_strength, resize, self.factor,
                               self.opts.randn_source, self.model.device, ensd=self.opts.ensd)

    def on_step(self, i: int, latents: torch.Tensor) -> None:
        every, state = self.opts.preview_every, self.state
        if state is not None and every > 0 and (i + 1) % every == 0:
            state.current_image = latent_preview.preview(self.model, latents)
            state.current_image_step = i + 1

    def conds(self, prompts, negatives, steps, hires_steps=None) -> StepConditioner:
        conds = StepConditioner(self.model, prompts, negatives, steps, self.opts.clip_skip, self.p.cfg_scale,
                                hires_steps=hires_steps, use_old_scheduling=self.opts.use_old_scheduling,
                                embeddings=self.p.patches.embeddings,
                                pad_cond_uncond=self.opts.sampler.pad_cond_uncond)
        self.conditioners.append(conds)
        return conds

    def used_embeddings(self) -> list[str]:
        """The textual-inversion embeddings this batch's prompts and negative prompts used (all passes)."""
        return list(dict.fromkeys(name for conds in self.conditioners for name in conds.used_embeddings))

    def run_pass(self, run: Pass, init, noise, gens, conds, width, height, image_cond=None, blend_mask=None,
                 hires: bool = False):
        p = self.p
        ratio = self.opts.speed.ratio("img2img" if p.is_img2img else "txt2img", hires)
        speedups.record(p, self.opts.speed, ratio, hires)
        # A1111 passes its own conditioning objects as c/uc; ours is the StepConditioner (prompts and negatives)
        self.hooks.fire("process_before_every_sampling", p, x=init if init is not None else noise, noise=noise,
                        c=conds, uc=None)
        denoiser = Denoiser(self.model, conds, p.cfg_scale, width, height, self.hooks, p, image_cond)
        with speedups.token_merging(self.model, ratio), \
                speedups.feature_cache(self.model, self.opts.speed.feature_cache_interval):
            return sample(self.model, run, init, noise, gens, denoiser, self.hooks, state=self.state, p=p,
                          blend_mask=blend_mask, noise_seed=p.seeds[0] + self.opts.ensd, seeds=list(p.seeds),
                          options=self.opts.sampler, on_step=self.on_step)

    def extra_noise(self) -> float:
        amount = self.opts.extra_noise
        if amount > 0:
            self.p.extra_generation_params["Extra noise"] = amount
        return amount

    def knobs(self) -> dict:
        return {k: getattr(self.p, k, None) for k in STEP_KNOBS}

    # --- txt2img ------------------------------------------------------------------------------------------------
    def txt2img(self) -> torch.Tensor:
        p = self.p
        noise, gens = self.noise(p.width, p.height)
        p.rng = gens
        conds = self.conds(p.prompts, p.negative_prompts, p.steps)
        image_cond = inpaint.inpainting_image_cond(self.model, None, None, len(p.seeds), p.width, p.height)
        run = Pass(p.sampler, p.schedule, p.steps, knobs=self.knobs())
        latents = self.run_pass(run, None, noise, gens, conds, p.width, p.height, image_cond)
        if p.enable_hr and not _stopped(self.state):
            latents = self.hires(latents)
        return latents

    def hires(self, latents: torch.Tensor) -> torch.Tensor:
        p = self.p
        width, height = hr_size(p)
        upscaler = p.hr_upscaler or "Latent"
        if upscaler in LATENT_UPSCALE_MODES:
            mode, antialias = LATENT_UPSCALE_MODES[upscaler]
            kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
            if antialias:
                kwargs["antialias"] = True
            init = F.interpolate(latents, size=(height // self.factor, width // self.factor), mode=mode, **kwargs)
        elif upscaler in IMAGE_UPSCALERS:
            images = latents_to_images(self.model, latents)
            resample = IMAGE_UPSCALERS[upscaler] or Image.Resampling.LANCZOS
            init = images_to_latents(self.model, [im.resize((width, height), resample) for im in images])
        elif self.opts.upscalers is not None and (model := self.opts.upscalers.find(upscaler)) is not None:
            # A1111: the decoded image is enlarged by the model, then resized to the hires size
            images = latents_to_images(self.model, latents)
            upscaled = []
            for im in images:
                scale = max(width / im.width, height / im.height)
                out = self.opts.upscalers.upscale(model, im, scale, self.state)
                upscaled.append(out if out.size == (width, height) else
                                out.resize((width, height), Image.Resampling.LANCZOS))
            init = images_to_latents(self.model, upscaled)
        else:
            models = self.opts.upscalers.names() if self.opts.upscalers is not None else []
            raise ParamError("hr_upscaler", f"unknown upscaler {upscaler!r}; choose one of "
                                            f"{list(LATENT_UPSCALE_MODES) + list(IMAGE_UPSCALERS) + models}")
        self.hooks.fire("before_hr", p)  # as A1111: the first pass is upscaled, the hires pass not started
        steps = p.hr_second_pass_steps or p.steps
        hr_prompts = p.hr_prompts if p.hr_prompts else p.prompts
        hr_negatives = p.hr_negative_prompts if p.hr_negative_prompts else p.negative_prompts
        conds = self.conds(hr_prompts, hr_negatives, p.steps, hires_steps=steps)
        noise, gens = self.noise(width, height)
        image_cond = inpaint.inpainting_image_cond(self.model, None, None, len(p.seeds), width, height)
        if self.state is not None:
            self.state.textinfo = "Hires. fix"
        run = Pass(p.hr_sampler, p.hr_schedule, steps, "hires", strength=p.denoising_strength,
                   knobs=self.knobs(), hires_rule=True, extra_noise=self.extra_noise())
        return self.run_pass(run, init, noise, gens, conds, width, height, image_cond, hires=True)

    # --- img2img ------------------------------------------------------------------------------------------------
    def img2img(self, lo: int) -> tuple[torch.Tensor | None, inpaint.Img2ImgBatch]:
        p = self.p
        inits = [p.init_images[i % len(p.init_images)] for i in range(lo, lo + len(p.seeds))]
        noise, gens = self.noise(p.width, p.height)
        p.rng = gens
        prepared = inpaint.prepare(self.model, p, inits, p.denoising_strength, noise)
        if prepared.latents is None:
            return None, prepared
        conds = self.conds(p.prompts, p.negative_prompts, p.steps)
        run = Pass(p.sampler, p.schedule, p.steps, strength=p.denoising_strength,
                   noise_multiplier=p.initial_noise_multiplier, knobs=self.knobs(), extra_noise=self.extra_noise())
        latents = self.run_pass(run, prepared.latents, noise, gens, conds, p.width, p.height, prepared.image_cond,
                                prepared.blend_mask)
        return latents, prepared

    def restore_faces(self, images: list[Image.Image]) -> list[Image.Image]:
        restorer = getattr(self.p, "face_restorer", None)
        if restorer is None:
            raise ParamError("restore_faces", "face restoration is not available in this run (no face restorers "
                                              "were given to it); set restore_faces to false")
        if self.state is not None:
            self.state.textinfo = "Restoring faces"
        return [restorer(image, self.p.face_restoration_model) for image in images]

    def images(self, lo: int) -> list[Image.Image]:
        """Sample and decode this batch; the images after postprocess_batch, before postprocess_image."""
        p = self.p
        prepared = None
        if p.is_img2img:
            latents, prepared = self.img2img(lo)
            if latents is None:  # strength 0: nothing to denoise, the (resized) input is the answer
                return prepared.work if prepared.crop_box is None else prepared.originals
        else:
            latents = self.txt2img()
        post = PostSampleArgs(latents)
        self.hooks.fire("post_sample", p, post)
        decoded = decode_to_tensor(self.model, post.samples)
        self.hooks.fire("postprocess_batch", p, decoded, batch_number=p.iteration)
        if self.hooks.has("postprocess_batch_list"):
            listed = PostprocessBatchListArgs(list(decoded))
            self.hooks.fire("postprocess_batch_list", p, listed, batch_number=p.iteration)
            decoded = torch.stack(listed.images) if listed.images else decoded[:0]
        images = tensor_to_images(decoded)
        if p.restore_faces:   # A1111: after decoding, before the postprocess_image scripts
            images = self.restore_faces(images)
        out = []
        for image in images:
            args = PostprocessImageArgs(image)
            self.hooks.fire("postprocess_image", p, args)
            out.append(args.image)
        if prepared is not None and prepared.work_mask is not None and self.hooks.has("postprocess_maskoverlay"):
            for i, image in enumerate(out):
                self.hooks.fire("postprocess_maskoverlay", p, PostProcessMaskOverlayArgs(i, prepared.work_mask,
                                                                                      prepared.originals[i % len(
                                                                                          prepared.originals)]))
        out = inpaint.composite(p, prepared, out) if prepared is not None else out
        if self.hooks.has("postprocess_image_after_composite"):
            for i, image in enumerate(out):
                args = PostprocessImageArgs(image)
                self.hooks.fire("postprocess_image_after_composite", p, args)
                out[i] = args.image
        return out


def _resolve(p) -> None:
    """Sampler names and defaults resolved onto p (the infotext writes what ran)."""
    try:
        p.sampler, p.schedule = samplers.resolve(p.sampler_name, p.scheduler)
        if p.enable_hr and not p.is_img2img:
            p.hr_sampler, p.hr_schedule = samplers.resolve(p.hr_sampler_name or p.sampler_name,
                                                           p.hr_scheduler or p.scheduler)
    except samplers.SamplerError as exc:
        name, _, message = str(exc).partition(": ")
        raise ParamError(name, message) from None
    p.sampler_name, p.scheduler = p.sampler.name, p.schedule
    if p.enable_hr and not p.is_img2img:
        p.hr_sampler_name = p.hr_sampler.name if p.hr_sampler_name else None
        p.hr_scheduler = p.hr_schedule if p.hr_scheduler else None
    if p.denoising_strength is None and (p.is_img2img or p.enable_hr):
        p.denoising_strength = IMG2IMG_DENOISING_DEFAULT if p.is_img2img else HR_DENOISING_DEFAULT
    if p.clip_skip:  # a p given its own clip skip (a script, a tool) wins over the setting
        p.run_options.clip_skip = p.clip_skip
    p.clip_skip = p.run_options.clip_skip
    factor = p.sd_model.vae_scale_factor
    if p.width % factor or p.height % factor:
        raise ParamError("width", f"width and height must be multiples of {factor} for this model")


def _record_ti_hashes(p, used: list[str]) -> None:
    """A1111's "TI hashes: name: hash12, ..." for the embeddings this batch used (each once; names without ':' and
    ','); left out when the patch set has no hash source (the setting is off) or nothing was used."""
    hash_of = p.patches.embedding_hash
    entries = []
    for name in used if hash_of is not None else []:
        shorthash = hash_of(name)
        if shorthash:
            entries.append(f"{name.replace(':', '').replace(',', '')}: {shorthash}")
    if entries:
        p.extra_generation_params["TI hashes"] = ", ".join(entries)
    else:
        p.extra_generation_params.pop("TI hashes", None)


def run_info(p) -> dict:
    model, opts = p.sd_model, p.run_options
    return {"Model hash": model.info.shorthash, "Model": model.info.stem,
            "VAE": model.vae_file.stem if model.vae_file else None,
            "ENSD": opts.ensd if opts.ensd and p.sampler.ancestral else None,
            "RNG": opts.randn_source if opts.randn_source != "CPU" else None,
            "Face restoration": p.face_restoration_model if p.restore_faces else None}


def process_images(p, networks: extra_networks.ExtraNetworkRegistry | None = None):
    """Runs p; returns (images, infotexts, seconds). The caller (modules.processing) wraps them in Processed and
    fires the process-level hooks around this."""
    networks = networks or extra_networks.ExtraNetworkRegistry()
    state, hooks, model = p.state, p.hooks, p.sd_model
    _resolve(p)
    # A1111's rule: a script that runs several process_images calls as one job (X/Y/Z plot, loopback) sets
    # state.job_count to the whole job's batches first; each call then continues the job's batch count
    base = 0
    if state is not None:
        if state.job_count <= 0:
            state.job_count = p.n_iter
        else:
            base = state.job_no
    images, texts = [], []
    info = run_info(p)
    base_patches = p.patches
    t0 = time.perf_counter()
    for n in range(p.n_iter):
        if state is not None:
            if state.interrupted:
                break
            state.job_no, state.skipped = base + n, False
        p.iteration = n
        lo, hi = n * p.batch_size, (n + 1) * p.batch_size
        p.prompts, p.negative_prompts = p.all_prompts[lo:hi], p.all_negative_prompts[lo:hi]
        p.seeds, p.subseeds = p.all_seeds[lo:hi], p.all_subseeds[lo:hi]
        p.hr_prompts = p.all_hr_prompts[lo:hi] if p.all_hr_prompts else []
        p.hr_negative_prompts = p.all_hr_negative_prompts[lo:hi] if p.all_hr_negative_prompts else []
        if not p.prompts:
            break
        hooks.fire("before_process_batch", p, batch_number=n, prompts=p.prompts, seeds=p.seeds,
                   subseeds=p.subseeds)
        p.patches = base_patches.copy(tiling=base_patches.tiling or bool(p.tiling))
        active = []
        try:
            if not p.disable_extra_networks:
                p.prompts, p.extra_network_data = extra_networks.parse_prompts(p.prompts)
                if p.hr_prompts:
                    p.hr_prompts, hr_data = extra_networks.parse_prompts(p.hr_prompts)
                    for kind, entries in hr_data.items():
                        known = p.extra_network_data.setdefault(kind, [])
                        known.extend(e for e in entries if e not in known)
                active = networks.activate(p, p.extra_network_data)
                hooks.fire("after_extra_networks_activate", p, batch_number=n, prompts=p.prompts, seeds=p.seeds,
                           subseeds=p.subseeds, extra_network_data=p.extra_network_data)
            hooks.fire("process_batch", p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            with p.patches.applied(model):
                batch = _Batch(p, networks)
                batch_images = batch.images(lo)
            _record_ti_hashes(p, batch.used_embeddings())
        finally:
            for handler in active:
                handler.deactivate(p)
            p.patches = base_patches
        for j, image in enumerate(batch_images):
            images.append(image)
            texts.append(infotext_fields.create(p, min(lo + j, len(p.all_prompts) - 1), info))
        if state is not None:
            state.job_no = base + n + 1   # this batch is done (A1111's state.nextjob())
    return images, texts, time.perf_counter() - t0
