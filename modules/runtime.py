"""The explicit runtime: settings, paths, models and the job queue, built once by webui.py and passed to both faces.

The faces call `generate(params)`: the runtime checks the request (sampler, overrides), queues it as data (a kind
and a payload), the job runs the engine with the request's setting overrides layered over the settings (never
written into them), and afterwards the runtime saves the images, params.txt and, when asked, the overrides — so the
UI and the API cannot drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from modules import atomic_file, cpu_allocator, devices, images, job_executors, paths as paths_mod, processing
from modules.engine import extra_networks, samplers, speedups
from modules.engine import payload as payload_codec
from modules.engine.hooks import Hooks
from modules.engine.params import GenerationParams, ParamError
from modules.engine.run import RunOptions
from modules.jobs import JobQueue, JobState, QueuedJob
from modules.localization import Localizations
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.model_options import ModelOptions
from modules.models import upscaler_models
from modules.models.registry import ModelRegistry
from modules.engine import sampler_settings
from modules.networks import hypernetwork, textual_inversion
from modules.networks.network_files import NetworkCatalog
from modules.options import OptionError, Options
from modules.styles import StyleDatabase

log = logging.getLogger("sd.runtime")


class Runtime:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.paths = paths_mod.from_args(args)
        self.options = Options(self.paths.settings_file, frozen=args.freeze_settings)
        if self.options.load_error:
            log.warning(self.options.load_error)
        self.device = devices.from_args(args)
        if self.device.device.type == "cpu":
            cpu_allocator.keep_freed_memory()
        self.registry = ModelRegistry(
            self.paths.checkpoint_dirs(), self.paths.vae, HashCache(self.paths.hash_cache_file),
            hashing=not args.no_hashing, extra_checkpoints=[Path(args.ckpt)] if args.ckpt else None,
            extra_vaes=[Path(args.vae_path)] if args.vae_path else None,
            fallback_checkpoint=None if args.no_demo_model else paths_mod.DEMO_CHECKPOINT)
        self.models = ModelManager(
            self.registry, self.device, self.paths.tokenizer_dir, vae_setting=lambda: self.options.sd_vae,
            forced_vae=Path(args.vae_path).resolve() if args.vae_path else None,
            config_override=Path(args.config).resolve() if args.config else None,
            options=ModelOptions.from_args(args), setting=self._setting, tiled_vae=getattr(args, "tiled_vae", False))
        self.models.on_loaded.append(self._remember_checkpoint)
        self.executors = dict(job_executors.EXECUTORS)
        self.queue = JobQueue(self._execute)
        self.hooks = Hooks()                      # hooks every generation gets; a job adds its own to p.hooks
        self.extra_networks = extra_networks.ExtraNetworkRegistry()
        # textual inversion: the bundled demo folder first, so a user's file of the same name wins
        self.embeddings = textual_inversion.EmbeddingDatabase([paths_mod.DEMO_EMBEDDINGS_DIR, self.paths.embeddings])
        self.models.on_loaded.append(self.embeddings.set_model)
        self.hypernetworks = NetworkCatalog(lambda: [self.paths.hypernetworks], (".pt",), kind="hypernet")
        self.extra_networks.register(hypernetwork.HypernetworkHandler(
            self.hypernetworks, lambda key, default=None: self.options.data.get(key, default)))
        self.styles = StyleDatabase(self.paths.styles_file)
        self.options.info.update(sampler_settings.option_templates())  # A1111's sampler parameters (issue #22)
        self.options.info.update(speedups.option_templates())  # token merging, feature cache (issue #21)
        # upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ScuNET) through spandrel; their tile settings
        self.upscaler_models = upscaler_models.UpscalerModels(
            self.paths.models, args, self.paths.cache,  # on devices.device_esrgan
            options_get=lambda key, default=None: self.options.data.get(key, default))
        self.options.info.update(upscaler_models.option_templates())
        # localizations/*.json and extensions/*/localizations/*.json; Settings → Localization offers their names
        self.localizations = Localizations(
            [self.paths.localizations], [self.paths.extensions, paths_mod.SCRIPT_DIR / "extensions-builtin"])
        self.options.info["localization"].choices = self.localizations.choices
        # sd_model_checkpoint takes a title, file name or hash (validated by the onchange lookup, not a choice list)
        self.options.info["sd_model_checkpoint"].onchange = self._on_checkpoint_setting
        self.options.info["sd_vae"].choices = lambda: ["Automatic", "None"] + [v.name for v in self.registry.vaes]
        self.options.info["sd_vae"].onchange = lambda _value: self.queue.run("reload_vae")

    def _setting(self, key: str, default=None):
        try:
            return self.options.get(key)
        except OptionError:
            return default

    # --- models --------------------------------------------------------------------------------------------------
    def startup_checkpoint(self):
        """The checkpoint to load at start: --ckpt, else the saved setting, else the first one found."""
        if self.args.ckpt:
            info = self.registry.find_checkpoint(self.args.ckpt)
            if info is None:
                raise FileNotFoundError(f"--ckpt {self.args.ckpt}: file not found")
            return info
        saved = self.options.sd_model_checkpoint
        return (self.registry.find_checkpoint(saved) if saved else None) or self.models.default_checkpoint()

    def load_startup_model(self) -> None:
        info = self.startup_checkpoint()
        if info is None:
            log.warning("%s", processing_no_model())
            return
        self.queue.run("load_model", {"checkpoint": info.title})

    def _remember_checkpoint(self, model) -> None:
        self.options.data["sd_model_checkpoint"] = model.info.title
        self.options.data["sd_checkpoint_hash"] = model.info.sha256 or ""
        self.options.save()

    def _on_checkpoint_setting(self, value: str) -> None:
        info = self.registry.find_checkpoint(value)
        if info is None:
            raise OptionError(f"sd_model_checkpoint: no checkpoint matches {value!r}; available: "
                              f"{self.registry.titles()}")
        self.queue.run("load_model", {"checkpoint": info.title})
        self.options.data["sd_model_checkpoint"] = info.title

    def switch_checkpoint(self, query: str) -> None:
        self.queue.run("load_model", {"checkpoint": self.models.select(query).title})

    def merge_checkpoints(self, request):
        """Checkpoint Merger: runs a MergeRequest on the queue and relists the models (modules.merging.merge)."""
        from modules import merging
        return merging.merge(self, request)

    # --- jobs ---------------------------------------------------------------------------------------------------
    def _execute(self, kind: str, payload: dict, state: JobState):
        executor = self.executors.get(kind)
        if executor is None:
            raise KeyError(f"job kind {kind!r} is not known; known kinds: {sorted(self.executors)}")
        result = executor(self, payload, state)
        if kind in ("txt2img", "img2img"):
            self.finish_generation(result, payload)
        return result

    # --- generation ----------------------------------------------------------------------------------------------
    def generate(self, p: GenerationParams, save: bool | None = None, job_id: str | None = None,
                 restore_overrides: bool = True, script_args: list | None = None,
                 is_api: bool = False) -> processing.Processed:
        """txt2img or img2img (p.init_images set), run on the job queue; the UI and the API both call this."""
        return self.submit_generate(p, save, job_id, restore_overrides, script_args, is_api).wait()

    def submit_generate(self, p: GenerationParams, save: bool | None = None, job_id: str | None = None,
                        restore_overrides: bool = True, script_args: list | None = None,
                        is_api: bool = False) -> QueuedJob:
        """Like generate, without waiting: the UI follows the job's progress and keeps its id, so that a reloaded
        page finds the job (running, queued, or finished and kept by the queue) again. Bad input (an unknown sampler,
        a bad override) is a ParamError / OptionError here, before anything is queued."""
        p.mode = "img2img" if p.init_images else "txt2img"
        if p.styles:  # unknown names are a ParamError now; the run applies the styles (p.setup_prompts)
            self.styles.apply(p.prompt, p.negative_prompt, p.styles)
        p.validate()
        try:
            samplers.resolve(p.sampler_name, p.scheduler)
            if p.enable_hr and p.mode == "txt2img":
                samplers.resolve(p.hr_sampler_name or p.sampler_name, p.hr_scheduler or p.scheduler)
        except samplers.SamplerError as exc:
            name, _, message = str(exc).partition(": ")
            raise ParamError(name, message) from None
        for key, value in p.override_settings.items():
            self.options.validate(key, value)
        # script_args: the extension scripts' argument vector (modules.scripts; [0] picks a selectable script). Its
        # values are whatever the scripts' controls hold (images too), so a job with scripts runs in this process.
        payload = {"params": payload_codec.to_payload(p), "save": save, "restore_overrides": restore_overrides,
                   "script_args": list(script_args) if script_args is not None else None, "is_api": is_api}
        return self.queue.submit(p.mode, payload, job_id)

    def finish_generation(self, result: processing.Processed, payload: dict) -> None:
        """After the engine returned: save the images (with the request's overrides in effect), remember the
        infotext in params.txt, and keep the overrides when the request asked for that."""
        params = payload["params"]
        if "saved_during_job" in payload:   # a selectable script ran: its process_images calls saved already
            result.saved_paths = list(payload["saved_during_job"])
        else:
            result.saved_paths.extend(self.save_images(result, payload))
        if result.infotexts:
            self._remember_infotext(result.infotexts[0])
        if not payload.get("restore_overrides", True):
            for key, value in (params.get("override_settings") or {}).items():
                self.options.set(key, value)

    def save_images(self, result: processing.Processed, payload: dict) -> list[str]:
        """Saves a result's images as the request asks (the UI: the samples_save setting unless the params say
        do_not_save_samples; the API: its save_images flag), under the request's overrides. Returns the paths."""
        params = payload["params"]
        view = self.options_view(params.get("override_settings") or {})
        save = payload.get("save")
        should_save = (view.samples_save and not params.get("do_not_save_samples")) if save is None else save
        paths = []
        grid = getattr(result, "grid", None)
        first = min(result.index_of_first_image, len(result.images))
        # the batch grid (A1111's grid_save): the UI saves it unless the request says do_not_save_grid, the API
        # when it saves its images (A1111's API sets do_not_save_grid = not save_images)
        if grid is not None and (save if save is not None else not params.get("do_not_save_grid")):
            image, text = grid
            fullfn, _ = images.save_image_a1111(
                image, str(self.output_folder(view, params.get("mode"), "grids")), "grid",
                result.all_seeds[0] if result.all_seeds else None,
                result.all_prompts[0] if result.all_prompts else "", extension=view.get("grid_format", "png"),
                info=text if view.enable_pnginfo else None,
                short_filename=not view.get("grid_extended_filename", False), grid=True)
            if first > 0:   # the saved paths line up with the returned images: the grid first
                paths.append(fullfn)
        if not should_save:
            return paths
        base = self.output_folder(view, params.get("mode"))
        extension = view.get("samples_format", "png") or "png"
        for image, seed, prompt, text in zip(result.images[first:], result.all_seeds, result.all_prompts,
                                             result.infotexts[first:]):
            info = text if view.enable_pnginfo else None
            paths.append(str(images.save_image(image, base, seed, prompt, info, date_dirs=view.save_to_dirs,
                                               extension=extension)))
        return paths

    def output_folder(self, view: "OptionsView", mode: str | None, what: str = "samples") -> Path:
        """Where a run's images ("samples") or grids go: outdir_<what> when set, else outdir_<mode>_<what> (A1111's
        settings); relative paths are under the data folder."""
        kind = "img2img" if mode == "img2img" else "txt2img"
        folder = Path(view.get(f"outdir_{what}") or view.get(f"outdir_{kind}_{what}") or f"outputs/{kind}-{what}")
        return folder if folder.is_absolute() else self.paths.data / folder

    def options_view(self, overrides: dict) -> "OptionsView":
        return OptionsView(self.options, overrides)

    def run_options(self, p: GenerationParams, view: "OptionsView") -> RunOptions:
        return RunOptions(
            clip_skip=p.clip_skip or view.CLIP_stop_at_last_layers, ensd=view.eta_noise_seed_delta,
            randn_source=view.randn_source,
            preview_every=view.show_progress_every_n_steps if view.live_previews_enable else 0,
            use_old_scheduling=bool(view.get("use_old_scheduling", False)),
            sampler=sampler_settings.sampler_options(view.get),
            extra_noise=float(view.get("img2img_extra_noise", 0.0) or 0.0),
            upscalers=upscaler_models.JobUpscalers(self.upscaler_models, view.get),
            speed=speedups.from_settings(view.get, getattr(view, "_overrides", {})))

    @property
    def params_file(self) -> Path:
        """The last generation's infotext (A1111's params.txt): the prompt box's paste button reads it."""
        return self.paths.data / "params.txt"

    def last_infotext(self) -> str:
        try:
            return self.params_file.read_text(encoding="utf-8")
        except OSError:
            return ""

    def _remember_infotext(self, text: str) -> None:
        try:
            with atomic_file.replacing(self.params_file, sync=False) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
        except OSError as exc:  # a read-only data folder must not fail the generation
            log.warning("could not write %s: %s", self.params_file, exc)

    def img2img_folder(self, p: GenerationParams, input_dir: Path, output_dir: Path,
                       mask_dir: Path | None = None) -> list[Path]:
        """img2img "Batch": every image in input_dir (masks of the same name from mask_dir), results written to
        output_dir under the input's file name, with infotext."""
        from PIL import Image
        files = sorted(f for f in Path(input_dir).iterdir()
                       if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
        if not files:
            raise ParamError("img2img_batch_input_dir", f"no images in {input_dir}")
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for f in files:
            with Image.open(f) as im:
                init = im.convert("RGB")
            mask = None
            if mask_dir is not None:
                candidates = [m for m in Path(mask_dir).glob(f.stem + ".*")]
                if candidates:
                    with Image.open(candidates[0]) as m:
                        mask = m.convert("L")
            result = self.generate(dataclasses.replace(p, init_images=[init], mask=mask), save=False)
            for i, (image, text) in enumerate(zip(result.images, result.infotexts)):
                target = output_dir / (f"{f.stem}.png" if i == 0 else f"{f.stem}-{i}.png")
                with atomic_file.replacing(target, sync=False) as tmp:
                    Path(tmp).write_bytes(images.png_bytes(image, text))
                written.append(target)
        return written

    def extras(self, images_in: list, **args) -> list:
        """Extras (upscale) on the queue: the images travel as PNG bytes."""
        return self.queue.run("extras", {"images": [payload_codec.image_to_png(im) for im in images_in],
                                         "args": args})


class OptionsView:
    """The settings as one job sees them: its override_settings over the saved settings, read-only, so a request's
    overrides never reach config.json or another job."""

    def __init__(self, options: Options, overrides: dict):
        self._options, self._overrides = options, dict(overrides)

    def get(self, key: str, default=None):
        if key in self._overrides:
            return self._overrides[key]
        return self._options.data.get(key, default) if key not in self._options.info else getattr(self._options, key)

    def __getattr__(self, key: str):
        if key.startswith("_"):
            raise AttributeError(key)
        if key in self._overrides:
            return self._overrides[key]
        return getattr(self._options, key)


def processing_no_model() -> str:
    from modules.models.manager import NO_MODEL_MESSAGE
    return NO_MODEL_MESSAGE
