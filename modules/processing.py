"""A1111's processing module: the run state `p` (StableDiffusionProcessingTxt2Img / Img2Img), Processed and
process_images(p), with A1111's attribute names and meaning (docs/ARCHITECTURE.md lists them).

`p` is not a copy made for show: the engine (modules/engine/run.py) reads p.all_prompts, p.all_seeds, … while it
works, so a script that rewrites them in its `process` hook changes the images and the infotext. Both faces go
through it: the runtime builds `p` from the request's GenerationParams and calls process_images(p).

What a run needs beyond the parameters travels on `p` too: the model (p.sd_model), the job's progress state
(p.state), its hooks (p.hooks, a child of the runtime's), its patch set (p.patches), the resolved settings
(p.run_options) and the extra-network handlers (p.extra_networks). A `p` that an extension builds by keyword inside a
running job (adetailer does) takes them from that job (`current_run`).
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

from modules.engine import extra_networks, infotext, rng
from modules.engine import run as engine_run
from modules.engine.hooks import Hooks
from modules.engine.params import BY_NAME, FIELDS, IMAGE_FIELDS, GenerationParams
from modules.engine.patches import PatchSet

opt_C = 4   # latent channels
opt_f = 8   # latent downscale factor


@dataclass
class RunContext:
    """What a job's runs share: given by the runtime when it executes a job."""
    sd_model: Any
    state: Any = None
    run_options: engine_run.RunOptions = field(default_factory=engine_run.RunOptions)
    hooks: Hooks = field(default_factory=Hooks)
    extra_networks: extra_networks.ExtraNetworkRegistry = field(default_factory=extra_networks.ExtraNetworkRegistry)
    prompt_styles: Any = None       # the style database (styles.csv): setup_prompts applies p.styles from it
    # a job driven by a selectable script saves what each process_images call makes (A1111 saves inside
    # process_images, so a script's tiles with do_not_save_samples stay unsaved and its own saves are not doubled)
    save_processed: Any = None      # fn(p, processed) or None
    # the loaded textual-inversion embeddings (modules.networks.textual_inversion.JobEmbeddings: `vectors`, name →
    # tensor(s), and `hash_of` for "TI hashes"); every p of the job starts with them in p.patches.embeddings
    embeddings: Any = None
    # the job's settings (the runtime's OptionsView: get(key, default)); with them process_images makes A1111's
    # grid of a batch (return_grid, grid_save, n_rows, …); None (tools, tests): no grid
    options: Any = None
    # "Restore faces": fn(image, model_name) -> image, the runtime's face restorers with the job's settings
    # (modules.face_restoration); None (tools, tests): a run asking for it fails with a message saying so
    face_restorer: Any = None


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("current_run", default=None)


@contextlib.contextmanager
def current_run(ctx: RunContext):
    """Makes `ctx` the context of every `p` created (and every process_images call) inside the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


# A1111 constructor arguments that are not generation fields of the schema.
_A1111_EXTRAS = {
    "sd_model": None, "outpath_samples": None, "outpath_grids": None, "extra_generation_params": None,
    "override_settings_restore_afterwards": True, "do_not_reload_embeddings": False, "disable_extra_networks": False,
    "comments": None, "sampler_index": None, "scripts": None, "script_args": None, "is_api": False, "user": None,
    "firstpass_image": None, "hr_checkpoint_name": None, "refiner_checkpoint": None, "refiner_switch_at": None,
    "mask_blur_x": None, "mask_blur_y": None, "latent_mask": None, "image_cfg_scale": None, "mask_round": True,
    "include_init_images": False, "firstphase_width": 0, "firstphase_height": 0,
    # which restorer "Restore faces" uses (X/Y/Z's Face restore axis sets it); None: the face_restoration_model
    # setting
    "face_restoration_model": None,
}


class StableDiffusionProcessing:
    """The run state. Every schema field (params.FIELDS) is a plain attribute with its UI default; extensions may
    attach their own attributes (no __slots__)."""
    is_img2img = False

    def __init__(self, **kwargs):
        if "mask" in kwargs:                          # A1111's constructor takes mask=, the attribute is image_mask
            kwargs["image_mask"] = kwargs.pop("mask")
        unknown = [k for k in kwargs if k not in BY_NAME and k not in _A1111_EXTRAS and k != "image_mask"]
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument {unknown[0]!r}")
        self._scripts = self._script_args = None
        self.scripts_setup_complete = False
        self._constructed = False
        for name, default in _A1111_EXTRAS.items():
            setattr(self, name, kwargs.pop(name, copy.copy(default)))
        blur_given = self.mask_blur_x is not None or self.mask_blur_y is not None
        for f in FIELDS:
            if f.name == "mask" or f.name == "mask_blur" and blur_given and "mask_blur" not in kwargs:
                continue
            setattr(self, f.name, kwargs.pop(f.name) if f.name in kwargs else f.ui_default())
        self.image_mask = kwargs.pop("image_mask", None)
        if self.sampler_index and not self.sampler_name:
            self.sampler_name = self.sampler_index
        self.extra_generation_params = self.extra_generation_params or {}
        self.comments = self.comments or {}
        self.override_settings = dict(self.override_settings or {})
        self.styles = list(self.styles or [])
        if self.script_args is not None:
            self.script_args = list(self.script_args)
        # computed while running (A1111's names)
        self.all_prompts: list[str] | None = None
        self.all_negative_prompts: list[str] | None = None
        self.all_seeds: list[int] | None = None
        self.all_subseeds: list[int] | None = None
        self.all_hr_prompts: list[str] | None = None
        self.all_hr_negative_prompts: list[str] | None = None
        self.main_prompt = self.main_negative_prompt = None
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.hr_prompts: list[str] = []
        self.hr_negative_prompts: list[str] = []
        self.iteration = 0
        self.batch_index = 0
        self.extra_network_data: dict = {}
        self.networks_not_found: list[str] = []
        self.cached_c = self.cached_uc = [None, None]
        self.c = self.uc = None
        self.rng = None
        self.sampler = None
        self.seed_resize_from_w = self.seed_resize_from_w if self.seed_resize_from_w else -1
        self.seed_resize_from_h = self.seed_resize_from_h if self.seed_resize_from_h else -1
        ctx = _current.get()
        self.sd_model = self.sd_model or (ctx.sd_model if ctx else None)
        self.state = ctx.state if ctx else None
        self.run_options = copy.copy(ctx.run_options) if ctx else engine_run.RunOptions()
        self.hooks = ctx.hooks.child() if ctx else Hooks()
        self.extra_networks = ctx.extra_networks if ctx else extra_networks.ExtraNetworkRegistry()
        self.prompt_styles = ctx.prompt_styles if ctx else None
        self.face_restorer = ctx.face_restorer if ctx else None
        self.patches = PatchSet()
        if ctx is not None and ctx.embeddings is not None:
            self.patches.embeddings.update(ctx.embeddings.vectors)
            self.patches.embedding_hash = ctx.embeddings.hash_of
        self._constructed = True
        self._maybe_setup_scripts()

    # --- scripts (modules.scripts): setup() runs once both the runner and its arguments are known (A1111) -------
    @property
    def scripts(self):
        return self._scripts

    @scripts.setter
    def scripts(self, value):
        self._scripts = value
        self._maybe_setup_scripts()

    @property
    def script_args(self):
        return self._script_args

    @script_args.setter
    def script_args(self, value):
        self._script_args = value
        self._maybe_setup_scripts()

    def _maybe_setup_scripts(self) -> None:
        if self._constructed and self._scripts is not None and self._script_args is not None and \
                not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self) -> None:
        self.scripts_setup_complete = True
        self._scripts.setup_scrips(self, is_ui=not self.is_api)

    # --- A1111's helpers ------------------------------------------------------------------------------------------
    @property
    def mask(self):
        return self.image_mask

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    @property
    def prompt_for_display(self) -> str:
        """What the UI shows as the prompt; scripts that rewrite prompts set it (sd-dynamic-prompts does)."""
        return getattr(self, "_prompt_for_display", None) or self.prompt

    @prompt_for_display.setter
    def prompt_for_display(self, value) -> None:
        self._prompt_for_display = value

    def apply_styles(self, prompts: list[str], negatives: list[str]) -> tuple[list[str], list[str]]:
        if not self.styles or self.prompt_styles is None:
            return prompts, negatives
        pairs = [self.prompt_styles.apply(a, b, self.styles) for a, b in zip(prompts, negatives)]
        return [a for a, _ in pairs], [b for _, b in pairs]

    def setup_prompts(self) -> None:
        """all_prompts / all_negative_prompts (p.styles applied, as A1111 does here) and all_seeds / all_subseeds,
        as A1111 fills them before the `process` hooks."""
        n = self.batch_size * self.n_iter
        if isinstance(self.prompt, list):
            self.all_prompts = list(self.prompt)
        else:
            self.all_prompts = [self.prompt] * n
        if isinstance(self.negative_prompt, list):
            self.all_negative_prompts = list(self.negative_prompt)
        else:
            self.all_negative_prompts = [self.negative_prompt] * n
        self.all_prompts, self.all_negative_prompts = self.apply_styles(self.all_prompts, self.all_negative_prompts)
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], self.all_negative_prompts[0]
        if self.all_seeds is None:
            # a list is one seed per image, as given (A1111: the prompt matrix passes its seeds this way)
            if isinstance(self.seed, list):
                self.all_seeds = [get_fixed_seed(int(s)) for s in self.seed]
            else:
                seed = get_fixed_seed(self.seed)
                self.all_seeds = [seed + i for i in range(n)]
            if isinstance(self.subseed, list):
                self.all_subseeds = [get_fixed_seed(int(s)) for s in self.subseed]
            else:
                subseed = get_fixed_seed(self.subseed)
                self.all_subseeds = [subseed + i for i in range(n)]


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    is_img2img = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.firstpass_steps = self.steps

    def setup_prompts(self) -> None:
        super().setup_prompts()
        n = len(self.all_prompts)
        # the hires prompts default to the (styled) prompts; given ones get the styles too, as in A1111
        hr, hr_neg = self.apply_styles([self.hr_prompt] * n, [self.hr_negative_prompt] * n)
        self.all_hr_prompts = hr if self.hr_prompt else list(self.all_prompts)
        self.all_hr_negative_prompts = hr_neg if self.hr_negative_prompt else list(self.all_negative_prompts)


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    is_img2img = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = False
        self.init_images = list(self.init_images or [])
        self.mask_for_overlay = None
        self.overlay_images = None
        self.paste_to = None
        self.color_corrections = None

    @property
    def mask_blur(self) -> int:
        return max(self.mask_blur_x or 0, self.mask_blur_y or 0)

    @mask_blur.setter
    def mask_blur(self, value: int) -> None:
        self.mask_blur_x = self.mask_blur_y = value


def from_params(params: GenerationParams) -> StableDiffusionProcessing:
    """The run state for a request's parameters (images and all)."""
    values = {f.name: getattr(params, f.name) for f in FIELDS}
    cls = StableDiffusionProcessingImg2Img if params.mode == "img2img" else StableDiffusionProcessingTxt2Img
    if cls is StableDiffusionProcessingTxt2Img:
        for name in IMAGE_FIELDS:
            values.pop(name)
    return cls(**{k: copy.copy(v) for k, v in values.items()})


class Processed:
    """A1111's Processed: the images, one infotext per image, the seeds and prompts, and `js()` — the JSON the
    API returns as `info`."""

    def __init__(self, p: StableDiffusionProcessing, images_list: list, seed: int = -1, info: str = "",
                 subseed: int | None = None, all_prompts: list | None = None, all_negative_prompts: list | None = None,
                 all_seeds: list | None = None, all_subseeds: list | None = None, index_of_first_image: int = 0,
                 infotexts: list | None = None, comments: str = ""):
        self.images = images_list
        self.prompt, self.negative_prompt = p.prompt, p.negative_prompt
        self.seed, self.subseed = seed, subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{c}\n" for c in p.comments) if not comments else comments
        self.width, self.height = p.width, p.height
        self.sampler_name, self.scheduler = p.sampler_name, p.scheduler
        self.cfg_scale, self.steps, self.batch_size = p.cfg_scale, p.steps, p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = p.face_restoration_model if p.restore_faces else None
        model = p.sd_model
        self.sd_model_name = model.info.stem if model is not None else None
        self.sd_model_hash = model.info.shorthash if model is not None else None
        self.sd_vae_name = model.vae_file.stem if model is not None and model.vae_file else None
        self.sd_vae_hash = None
        self.seed_resize_from_w, self.seed_resize_from_h = p.seed_resize_from_w, p.seed_resize_from_h
        self.denoising_strength = p.denoising_strength
        self.extra_generation_params = {k: v for k, v in p.extra_generation_params.items()
                                        if v is not None and not callable(v)}
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = getattr(p.state, "job_timestamp", None) or time.strftime("%Y%m%d%H%M%S")
        self.clip_skip = p.clip_skip
        self.all_prompts = all_prompts if all_prompts is not None else p.all_prompts
        self.all_negative_prompts = all_negative_prompts if all_negative_prompts is not None \
            else p.all_negative_prompts
        self.all_seeds = all_seeds if all_seeds is not None else p.all_seeds
        self.all_subseeds = all_subseeds if all_subseeds is not None else p.all_subseeds
        self.infotexts = infotexts or [info] * len(images_list)
        self.is_using_inpainting_conditioning = model is not None and model.unet.config.in_channels == 9
        self.seconds = 0.0
        self.saved_paths: list[str] = []
        self.grid = None   # (image, infotext) of the batch grid to save (process_images), whether returned or not

    @property
    def seeds(self) -> list[int]:
        """One seed per returned image: the grids in front (images before index_of_first_image, A1111's place for
        them) get the first seed, the images theirs (all_seeds may be longer when a run stopped early)."""
        return self.aligned(self.all_seeds)

    def aligned(self, values: list | None) -> list:
        """A per-image list of A1111's (all_seeds, all_prompts, …: one entry per image, grids not counted) as one
        entry per returned image, grids included."""
        values = list(values or [])
        first = min(self.index_of_first_image, len(self.images))
        return values[:1] * first + values[:len(self.images) - first]

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt, "all_prompts": self.all_prompts, "negative_prompt": self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts, "seed": self.seed, "all_seeds": self.all_seeds,
            "subseed": self.subseed, "all_subseeds": self.all_subseeds, "subseed_strength": self.subseed_strength,
            "width": self.width, "height": self.height, "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale, "steps": self.steps, "batch_size": self.batch_size,
            "restore_faces": self.restore_faces, "face_restoration_model": self.face_restoration_model,
            "sd_model_name": self.sd_model_name, "sd_model_hash": self.sd_model_hash,
            "sd_vae_name": self.sd_vae_name, "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": self.seed_resize_from_w, "seed_resize_from_h": self.seed_resize_from_h,
            "denoising_strength": self.denoising_strength, "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image, "infotexts": self.infotexts, "styles": self.styles,
            "job_timestamp": self.job_timestamp, "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": self.is_using_inpainting_conditioning, "comments": self.comments,
            "version": infotext.VERSION, "seconds": round(self.seconds, 3),
        }

    def js(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    def infotext(self, p, index: int) -> str:
        return self.infotexts[index]


def get_fixed_seed(seed: int | None) -> int:
    return rng.resolve_seed(seed)


def fix_seed(p) -> None:
    p.seed, p.subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)


def create_infotext(p, all_prompts=None, all_seeds=None, all_subseeds=None, comments=None, iteration: int = 0,
                    position_in_batch: int = 0, *args, **kwargs) -> str:
    """A1111's create_infotext for image `iteration * batch_size + position_in_batch` of a run."""
    from modules.engine import infotext_fields
    index = iteration * p.batch_size + position_in_batch
    saved = p.all_prompts, p.all_seeds, p.all_subseeds
    p.all_prompts = all_prompts or p.all_prompts
    p.all_seeds, p.all_subseeds = all_seeds or p.all_seeds, all_subseeds or p.all_subseeds
    try:
        return infotext_fields.create(p, index, engine_run.run_info(p))
    finally:
        p.all_prompts, p.all_seeds, p.all_subseeds = saved


def save_processed(p, processed: Processed) -> None:
    """Saves `processed` the way the job saves what process_images makes (the request's saving rule), for a
    selectable script whose results are not one process_images call's images (SD upscale's recombined tiles,
    outpainting's expanded images); outside a script-driven job it does nothing."""
    ctx = _current.get()
    if ctx is not None and ctx.save_processed is not None:
        ctx.save_processed(p, processed)


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Runs p: before_process, process (all_* filled), the batches, postprocess. Re-entrant: an extension may call
    it again from a hook of the same job."""
    if p.sd_model is None:
        ctx = _current.get()
        if ctx is None or ctx.sd_model is None:
            raise RuntimeError("process_images: no model loaded")
        p.sd_model = ctx.sd_model
    if p.scripts is not None:
        from modules import scripts
        scripts.attach(p)
    if p.script_args is None:
        p.script_args = []
    ctx = _current.get()
    _resolve_face_restoration(p, ctx.options if ctx is not None else None)
    p.hooks.fire("before_process", p)
    p.setup_prompts()
    p.hooks.fire("process", p)
    images, texts, seconds = engine_run.process_images(p, p.extra_networks)
    processed = Processed(p, images, p.all_seeds[0], texts[0] if texts else "", p.all_subseeds[0],
                          infotexts=texts)
    processed.seconds = seconds
    _batch_grid(p, processed, ctx.options if ctx is not None else None)
    if ctx is not None and ctx.save_processed is not None and not p.do_not_save_samples:
        ctx.save_processed(p, processed)
    p.hooks.fire("postprocess", p, processed)
    return processed


def _resolve_face_restoration(p, opts) -> None:
    """A1111: restore_faces None means the face_restoration setting ("Restore faces" in Settings); the restorer is
    the face_restoration_model setting unless p names one."""
    if p.restore_faces is None:
        p.restore_faces = bool(opts.get("face_restoration", False)) if opts is not None else False
    if p.restore_faces and not p.face_restoration_model:
        p.face_restoration_model = (opts.get("face_restoration_model", None) if opts is not None else None) or \
            "CodeFormer"


def _batch_grid(p, processed: Processed, opts) -> None:
    """A1111's grid of a run's images: made when there are several (or grid_only_if_multiple is off) unless
    p.do_not_save_grid; put first among the images with the first image's infotext when return_grid
    (index_of_first_image 1), and kept on `processed.grid` for saving when grid_save."""
    processed.grid = None
    if opts is None or p.do_not_save_grid or not processed.images:
        return
    if len(processed.images) < 2 and opts.get("grid_only_if_multiple", True):
        return
    if not (opts.get("return_grid", True) or opts.get("grid_save", True)):
        return
    from modules import images
    rows = images.grid_rows(len(processed.images), p.batch_size, opts.get("n_rows", -1),
                            opts.get("grid_prevent_empty_spots", False))
    grid = images.image_grid(processed.images, p.batch_size, rows=rows)
    text = processed.infotexts[0] if processed.infotexts else processed.info
    if opts.get("return_grid", True):
        processed.images.insert(0, grid)
        processed.infotexts.insert(0, text)
        processed.index_of_first_image = 1
    if opts.get("grid_save", True):
        processed.grid = (grid, text)


RunOptions = engine_run.RunOptions


def process(model, params: GenerationParams, state=None, opts: RunOptions | None = None, hooks: Hooks | None = None,
            setup=None, embeddings=None) -> Processed:
    """Runs `params` on `model` directly, outside the job queue (tests, benchmarks, tools): the run state is built
    as the runtime builds it; `setup(p)` may change it (add per-job hooks, patches) before it runs."""
    params.mode = "img2img" if params.init_images else "txt2img"
    params.validate()
    ctx = RunContext(model, state, opts or RunOptions(), hooks or Hooks(), embeddings=embeddings)
    with current_run(ctx):
        p = from_params(params)
        if setup is not None:
            setup(p)
        return process_images(p)
