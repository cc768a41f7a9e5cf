"""The explicit runtime: settings, paths, models and the job queue, built once by webui.py and passed to both faces.

The faces call `generate(params)`: it applies per-request setting overrides, runs the engine on the job queue
and saves the images, so the UI and the API cannot drift apart.
"""
from __future__ import annotations

import argparse
import os
import dataclasses
import logging
from pathlib import Path

from modules import devices, images, paths as paths_mod
from modules.engine import processing
from modules.engine.params import GenerationParams, ParamError
from modules.jobs import Job, JobQueue, JobState
from modules.localization import Localizations
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import ModelRegistry
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
        self.registry = ModelRegistry(
            self.paths.checkpoint_dirs(), self.paths.vae, HashCache(self.paths.hash_cache_file),
            hashing=not args.no_hashing, extra_checkpoints=[Path(args.ckpt)] if args.ckpt else None,
            extra_vaes=[Path(args.vae_path)] if args.vae_path else None,
            fallback_checkpoint=None if args.no_demo_model else paths_mod.DEMO_CHECKPOINT)
        self.models = ModelManager(
            self.registry, self.device, self.paths.tokenizer_dir, vae_setting=lambda: self.options.sd_vae,
            forced_vae=Path(args.vae_path).resolve() if args.vae_path else None,
            config_override=Path(args.config).resolve() if args.config else None)
        self.models.on_loaded.append(self._remember_checkpoint)
        self.queue = JobQueue()
        self.styles = StyleDatabase(self.paths.styles_file)
        # localizations/*.json and extensions/*/localizations/*.json; Settings → Localization offers their names
        self.localizations = Localizations(
            [self.paths.localizations], [self.paths.extensions, paths_mod.SCRIPT_DIR / "extensions-builtin"])
        self.options.info["localization"].choices = self.localizations.choices
        # sd_model_checkpoint takes a title, file name or hash (validated by the onchange lookup, not a choice list)
        self.options.info["sd_model_checkpoint"].onchange = self._on_checkpoint_setting
        self.options.info["sd_vae"].choices = lambda: ["Automatic", "None"] + [v.name for v in self.registry.vaes]
        self.options.info["sd_vae"].onchange = lambda _value: self.queue.run(
            lambda _s: self.models.reload_vae(), "reload VAE")

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
        self.queue.run(lambda _s: self.models.load(info), "load model")

    def _remember_checkpoint(self, model) -> None:
        self.options.data["sd_model_checkpoint"] = model.info.title
        self.options.data["sd_checkpoint_hash"] = model.info.sha256 or ""
        self.options.save()

    def _on_checkpoint_setting(self, value: str) -> None:
        info = self.registry.find_checkpoint(value)
        if info is None:
            raise OptionError(f"sd_model_checkpoint: no checkpoint matches {value!r}; available: "
                              f"{self.registry.titles()}")
        self.queue.run(lambda _s: self.models.load(info), "load model")
        self.options.data["sd_model_checkpoint"] = info.title

    def switch_checkpoint(self, query: str) -> None:
        info = self.models.select(query)
        self.queue.run(lambda _s: self.models.load(info), "load model")

    def merge_checkpoints(self, request):
        """Checkpoint Merger: runs a MergeRequest on the queue and relists the models (modules.merging.merge)."""
        from modules import merging
        return merging.merge(self, request)

    # --- generation ----------------------------------------------------------------------------------------------
    def generate(self, p: GenerationParams, save: bool | None = None, job_id: str | None = None):
        """txt2img or img2img (p.init_images set), run on the job queue; the UI and the API both call this."""
        return self.submit_generate(p, save, job_id).wait()

    def submit_generate(self, p: GenerationParams, save: bool | None = None, job_id: str | None = None) -> Job:
        """Like generate, without waiting: the UI follows the job's progress and keeps its id, so that a reloaded
        page finds the job (running, queued, or finished and kept by the queue) again."""
        p.mode = "img2img" if p.init_images else "txt2img"
        if p.styles:
            prompt, negative = self.styles.apply(p.prompt, p.negative_prompt, p.styles)
            p = dataclasses.replace(p, prompt=prompt, negative_prompt=negative)
        p.validate()
        return self.queue.submit(lambda state: self._generate_job(p, state, save), p.mode, job_id)

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
            tmp = self.params_file.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.params_file)
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
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(images.png_bytes(image, text))
                os.replace(tmp, target)
                written.append(target)
        return written

    def run_options(self, p: GenerationParams, save: bool | None) -> processing.RunOptions:
        o = self.options
        should_save = (o.samples_save and not p.do_not_save_samples) if save is None else save
        outdir = o.outdir_img2img_samples if p.init_images else o.outdir_txt2img_samples
        return processing.RunOptions(
            clip_skip=p.clip_skip or o.CLIP_stop_at_last_layers, ensd=o.eta_noise_seed_delta,
            randn_source=o.randn_source, preview_every=o.show_progress_every_n_steps if o.live_previews_enable else 0,
            save=self._saver(outdir) if should_save else None)

    def _generate_job(self, p: GenerationParams, state: JobState, save: bool | None):
        restore = self._apply_overrides(p.override_settings)
        try:
            model = self.models.require()
            result = processing.process(model, p, state, self.run_options(p, save))
        finally:
            restore()
        if result.infotexts:
            self._remember_infotext(result.infotexts[0])
        return result

    def _apply_overrides(self, overrides: dict):
        """Per-request settings (override_settings); returns a function that restores the previous values."""
        if not overrides:
            return lambda: None
        old = {}
        for key, value in overrides.items():
            value = self.options.validate(key, value)
            if key == "sd_model_checkpoint":
                self.models.load(self.models.select(value))
                continue
            old[key] = self.options.data.get(key, _MISSING)
            self.options.data[key] = value

        def restore():
            for key, value in old.items():
                if value is _MISSING:
                    self.options.data.pop(key, None)
                else:
                    self.options.data[key] = value
        return restore

    def _saver(self, outdir: str):
        base = Path(self.options.outdir_samples or outdir)
        if not base.is_absolute():
            base = self.paths.data / base

        def save(image, seed, prompt, text):
            info = text if self.options.enable_pnginfo else None
            return str(images.save_image(image, base, seed, prompt, info, date_dirs=self.options.save_to_dirs))
        return save


_MISSING = object()


def processing_no_model() -> str:
    from modules.models.manager import NO_MODEL_MESSAGE
    return NO_MODEL_MESSAGE
