"""Named hook points of one generation, and the parameter objects they receive.

A `Hooks` object holds callables per hook point. The runtime owns one (hooks every job gets); each job runs with a
child of it (`runtime.hooks.child()`, reachable as `p.hooks`), so a job can add hooks for itself alone and nothing is
module-global. Hooks are called in the order they were added, the runtime's before the job's. An exception in a hook
fails the job: built-in features (ControlNet, LoRA) rely on their hooks; the extension platform wraps third-party
script code and reports its errors instead (A1111's behaviour).

Process level (A1111's Script method order; `p` is the run state, modules.processing.StableDiffusionProcessing):
    before_process(p)                           first thing in process_images
    process(p)                                  all_prompts/all_seeds/... exist; may rewrite them, n_iter, batch_size
    before_process_batch(p, batch_number, prompts, seeds, subseeds)   lists mutable in place; extra networks still in
    after_extra_networks_activate(p, batch_number, prompts, seeds, subseeds, extra_network_data)
    process_batch(p, batch_number, prompts, seeds, subseeds)          after extra networks were parsed and patched
    process_before_every_sampling(p, x, noise, c, uc)  before each sampling pass (base, hires); c is our
                                                StepConditioner (prompts and negatives), uc None
    before_hr(p)                                txt2img: first pass upscaled, hires. fix pass about to sample
    post_sample(p, args: PostSampleArgs)        latents before VAE decode; replace args.samples
    postprocess_batch(p, images, batch_number)  decoded images, float tensor B×C×H×W in 0..1, edit in place
    postprocess_batch_list(p, args: PostprocessBatchListArgs, batch_number)  the same as a list of C×H×W tensors;
                                                may add or remove images (then fix p.prompts, p.seeds, ...)
    postprocess_maskoverlay(p, args: PostProcessMaskOverlayArgs)  img2img with a mask, per image, before composite
    postprocess_image(p, args: PostprocessImageArgs)   per image (PIL); replace args.image
    postprocess_image_after_composite(p, args)  per image, after inpainting's paste-back into the original
    postprocess(p, processed)                   after all batches, with the Processed result
Denoiser level (every sampling step; see modules/engine/denoiser.py for the batch layout):
    cfg_denoiser(params: CFGDenoiserParams)     before the UNet call (A1111's on_cfg_denoiser); fields read back
    before_unet(call: UNetCall)                 last thing before the UNet: add residuals, replace inputs
    cfg_denoised(params: CFGDenoisedParams)     after the UNet call (A1111's on_cfg_denoised); edit x in place
    cfg_after_cfg(params: AfterCFGCallbackParams)   after the CFG combine (A1111's on_cfg_after_cfg); x read back
    after_step(args: AfterStepArgs)             after the scheduler step; return new latents, or None to keep them
    mask_blend(p, args: MaskBlendArgs)          inpainting: the blend of the step's latents with the known region
                                                (after every step, and once more final); replace blended_latent
    extra_noise(params: ExtraNoiseParams)       img2img/hires with the extra-noise setting, before it is added
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

POINTS = ("before_process", "process", "before_process_batch", "after_extra_networks_activate", "process_batch",
          "process_before_every_sampling", "before_hr", "post_sample", "postprocess_batch", "postprocess_batch_list",
          "postprocess_maskoverlay", "postprocess_image", "postprocess_image_after_composite", "postprocess",
          "cfg_denoiser", "before_unet", "cfg_denoised", "cfg_after_cfg", "after_step", "mask_blend", "extra_noise")


class Hooks:
    def __init__(self, parent: "Hooks | None" = None):
        self.parent = parent
        self._hooks: dict[str, list[Callable]] = {point: [] for point in POINTS}

    def _check(self, point: str) -> None:
        if point not in self._hooks:
            raise KeyError(f"hook point {point!r} does not exist; hook points: {list(POINTS)}")

    def add(self, point: str, fn: Callable) -> Callable:
        self._check(point)
        self._hooks[point].append(fn)
        return fn

    def remove(self, point: str, fn: Callable) -> None:
        self._check(point)
        if fn in self._hooks[point]:
            self._hooks[point].remove(fn)

    def get(self, point: str) -> list[Callable]:
        self._check(point)
        inherited = self.parent.get(point) if self.parent is not None else []
        return inherited + self._hooks[point] if self._hooks[point] else inherited

    def has(self, point: str) -> bool:
        return bool(self.get(point))

    def fire(self, point: str, *args, **kwargs) -> None:
        for fn in self.get(point):
            fn(*args, **kwargs)

    def child(self) -> "Hooks":
        """Hooks for one job: everything of this object, plus what the job adds for itself."""
        return Hooks(self)


@dataclass
class StepInfo:
    """Where sampling is. `sampling_step` follows A1111: the model calls of step k see max(k − 1, 0), because A1111's
    sampler callback sets state.sampling_step to k only after step k finished; `total` is A1111's sampling_steps (the
    steps of this pass, +1 for img2img and the hires pass). ControlNet's guidance start/end compare `fraction`."""
    index: int                  # 0-based step of this pass
    total: int
    timestep: Any
    sigma: float
    pass_name: str = "base"     # "base" or "hires"

    @property
    def sampling_step(self) -> int:
        return max(self.index - 1, 0)

    @property
    def fraction(self) -> float:
        return self.sampling_step / max(self.total, 1)


@dataclass
class UNetCall:
    """One UNet call, handed to the before_unet hooks. Rows: x[i] belongs to image `image_of_row[i]`; `cond_rows` and
    `uncond_rows` list which rows carry the prompt (and its AND parts) and which the negative prompt."""
    x: torch.Tensor                     # UNet input: scaled latents (+ inpainting channels for 9-channel UNets)
    timestep: Any
    context: torch.Tensor               # encoder_hidden_states, one row per x row
    added_cond: dict | None             # SDXL: text_embeds and time_ids
    cond_rows: list[int]
    uncond_rows: list[int]
    image_of_row: list[int]
    step: StepInfo
    p: Any
    model: Any
    down_block_additional_residuals: list[torch.Tensor] | None = None
    mid_block_additional_residual: torch.Tensor | None = None
    down_intrablock_additional_residuals: list[torch.Tensor] | None = None
    extra_kwargs: dict = field(default_factory=dict)    # more keyword arguments for the UNet call

    def add_residuals(self, down: list[torch.Tensor] | None = None, mid: torch.Tensor | None = None,
                      rows: list[int] | None = None, intrablock: list[torch.Tensor] | None = None) -> None:
        """Adds ControlNet-style residuals (and T2I-Adapter intrablock features) to what earlier hooks added. `rows`
        limits them to those rows (others get zero); tensors with one row are broadcast to the rows."""
        def fit(t: torch.Tensor) -> torch.Tensor:
            n = self.x.shape[0]
            if t.shape[0] != n:
                t = t.expand(n, *t.shape[1:]) if t.shape[0] == 1 else t
            if rows is not None:
                keep = torch.zeros(n, *([1] * (t.dim() - 1)), dtype=t.dtype, device=t.device)
                keep[rows] = 1
                t = t * keep
            return t

        def total(old, new):
            new = [fit(t) for t in new]
            return new if old is None else [a + b for a, b in zip(old, new)]
        if down is not None:
            self.down_block_additional_residuals = total(self.down_block_additional_residuals, down)
        if mid is not None:
            fitted = fit(mid)
            old = self.mid_block_additional_residual
            self.mid_block_additional_residual = fitted if old is None else old + fitted
        if intrablock is not None:
            self.down_intrablock_additional_residuals = total(self.down_intrablock_additional_residuals, intrablock)


# A1111's parameter objects (modules/script_callbacks.py names and fields), so extension code reads what it expects.
@dataclass
class CFGDenoiserParams:
    x: torch.Tensor                 # latents of all rows: cond rows first, then uncond rows (A1111's layout)
    image_cond: torch.Tensor | None
    sigma: torch.Tensor             # one per row
    sampling_step: int
    total_sampling_steps: int
    text_cond: torch.Tensor         # context of the cond rows (SD1/2: tensor; SDXL: {"crossattn", "vector"})
    text_uncond: torch.Tensor | None
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    x: torch.Tensor                 # UNet output of all rows, same layout; edit in place
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    x: torch.Tensor                 # the combined prediction, one row per image
    sampling_step: int
    total_sampling_steps: int


@dataclass
class AfterStepArgs:
    latents: torch.Tensor
    step: StepInfo
    p: Any = None


@dataclass
class PostSampleArgs:
    samples: torch.Tensor


@dataclass
class PostprocessImageArgs:
    image: Any


@dataclass
class PostprocessBatchListArgs:
    images: list                    # C×H×W float tensors in 0..1


@dataclass
class PostProcessMaskOverlayArgs:
    index: int
    mask_for_overlay: Any
    overlay_image: Any


class MaskBlendArgs:
    """A1111's: `mask` keeps the original (1 = keep), `nmask` = 1 − mask is the region being generated;
    blended_latent = init_latent·mask + current_latent·nmask. `denoiser`/`sigma` are None for the final blend.
    `mask` may be given as None: it is then 1 − nmask, computed when a script reads it (this object is made at
    every inpainting step)."""

    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent, self.nmask, self.init_latent = current_latent, nmask, init_latent
        self._mask, self.blended_latent = mask, blended_latent
        self.denoiser, self.sigma = denoiser, sigma
        self.is_final_blend = denoiser is None

    @property
    def mask(self):
        if self._mask is None:
            self._mask = 1 - self.nmask
        return self._mask

    @mask.setter
    def mask(self, value) -> None:
        self._mask = value


@dataclass
class ExtraNoiseParams:
    noise: torch.Tensor
    x: torch.Tensor
    xi: torch.Tensor
