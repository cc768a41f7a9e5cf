"""ControlNet for one running web UI: where models and annotator weights are, the model list and cache, and a job's
units turned into the sampling hook, the detected maps and the infotext.

Built by the built-in extension (extensions-builtin/controlnet) from the settings and flags; the API routes and the
UI read the same object. Everything a unit gets wrong is a ParamError naming `alwayson_scripts.controlnet.args[i]`
and the field, raised before sampling starts.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from modules.controlnet import hints, infotext
from modules.controlnet.apply import ActiveUnit, ControlNetHook, offloader_of
from modules.controlnet.units import ControlNetUnit
from modules.engine.params import ParamError

log = logging.getLogger("sd.controlnet")
WHERE = "alwayson_scripts.controlnet.args"


@dataclass
class Folders:
    """§2.1's model folders in scan order, and the annotator folders (download target first)."""
    models: list[Path]
    annotator_download: Path
    annotator_search: list[Path] = field(default_factory=list)


class ControlNetService:
    def __init__(self, folders: Callable[[], Folders], cache_size: Callable[[], int] = lambda: 2,
                 setting: Callable[[str, object], object] = lambda key, default: default,
                 full_precision: Callable[[], bool] = lambda: False, preprocessor_cache_size: int = 16):
        from modules.controlnet.control_models import ModelCache
        from modules.controlnet.preprocessor_cache import PreprocessorCache
        self.preprocessed = PreprocessorCache(preprocessor_cache_size)
        self._folders, self._setting, self._full_precision = folders, setting, full_precision
        self._files: list | None = None
        self._lock = threading.Lock()
        self.cache = ModelCache(max(1, int(cache_size())))
        self._cache_size = cache_size

    # --- models ----------------------------------------------------------------------------------------------
    def model_files(self, refresh: bool = False) -> list:
        from modules.controlnet.model_files import scan
        with self._lock:
            if self._files is None or refresh:
                self._files = scan([f for f in self._folders().models if f.is_dir()])
            return list(self._files)

    def model_titles(self, refresh: bool = False) -> list[str]:
        return [f.title for f in self.model_files(refresh)]

    def find_model(self, request: str):
        from modules.controlnet.model_files import find
        return find(request, self.model_files()) or find(request, self.model_files(refresh=True))

    def store(self):
        from modules.controlnet.annotators import AnnotatorStore
        f = self._folders()
        return AnnotatorStore([f.annotator_download, *f.annotator_search], f.annotator_download)

    def clear_cache(self) -> None:
        self.cache.clear()

    # --- a job ------------------------------------------------------------------------------------------------
    def prepare(self, p, units: list[ControlNetUnit], where: str = WHERE) -> list[ActiveUnit]:
        """The enabled units, each with its preprocessor run and its model loaded for p's checkpoint."""
        from modules.controlnet import preprocessors
        active = []
        for i, unit in enumerate(units):
            if not unit.enabled:
                continue
            at = f"{where}[{i}]"
            pre = preprocessors.get(unit.module)
            if pre is None:
                raise ParamError(f"{at}.module", f"unknown preprocessor {unit.module!r}")
            model = self._model_for(unit, pre, p, at)
            seed = (int(p.all_seeds[0]) + int(p.all_subseeds[0])) & 0xFFFFFFFF if p.all_seeds else 0
            try:
                control = hints.prepare_control(unit, pre, p, at, seed, self.store(),
                                                 bool(self._setting("controlnet_ignore_noninpaint_mask", False)),
                                                 self.preprocessed)
            except (ParamError, MemoryError):
                raise
            except Exception as exc:   # AnnotatorMissing, PreprocessorUnavailable: the message says what to do
                raise ParamError(f"{at}.module", f"{pre.label}: {exc}") from None
            active.append(ActiveUnit(len(active), i, unit, pre, model, control))
        return active

    def _model_for(self, unit: ControlNetUnit, pre, p, at: str):
        from modules.models.safe_load import ModelFileError
        if pre.model_free:
            from modules.controlnet import reference
            if pre.name in reference.MODULES:
                return None     # reference_*: the UNet's own layers (modules/controlnet/reference.py)
            raise ParamError(f"{at}.module", f"{pre.label} (a model-free module) is not built in yet")
        if not unit.uses_model:
            raise ParamError(f"{at}.model", "choose a ControlNet model (GET /controlnet/model_list lists them)")
        file = self.find_model(unit.model)
        if file is None:
            titles = self.model_titles()
            raise ParamError(f"{at}.model", f"model {unit.model!r} not found in {self._folder_text()}; available: "
                                            f"{titles if titles else 'none'}")
        size = max(1, int(self._cache_size()))
        if getattr(self.cache, "max_models", size) != size:     # the setting changed: a cache of the new size
            from modules.controlnet.control_models import ModelCache
            self.cache = ModelCache(size)
        model = p.sd_model
        dtype = torch.float32 if self._full_precision() else model.dtype    # --no-half-controlnet
        try:
            # --medvram/--lowvram: control models wait in RAM like the checkpoint's components (apply._on_accelerator)
            device = torch.device("cpu") if offloader_of(model) is not None else model.device
            loaded = self.cache.get(file, model, dtype, device)
        except ModelFileError as exc:
            raise ParamError(f"{at}.model", str(exc)) from None
        if loaded.kind == "t2i_style":     # its input is a CLIP vision embedding: the clip_vision network is not here
            raise ParamError(f"{at}.model", f"{loaded.title} is a T2I style adapter; it needs the clip_vision "
                                            "preprocessor, which is not built in yet")
        return loaded

    def _folder_text(self) -> str:
        return ", ".join(str(f) for f in self._folders().models)

    def attach(self, p, active: list[ActiveUnit]) -> None:
        """The sampling hook, the infotext and the detected maps for p."""
        if not active:
            return
        hires = bool(getattr(p, "enable_hr", False)) and not getattr(p, "is_img2img", False)
        p.hooks.add("before_unet", ControlNetHook(active, p.sd_model.vae_scale_factor, hires))
        self._attach_effects(p, active, hires)
        for au in active:
            text = infotext.unit_text(au.unit)
            if text is not None:
                p.extra_generation_params[f"ControlNet {au.number}"] = text
        p.controlnet_units = active

    def _attach_effects(self, p, active: list[ActiveUnit], hires: bool) -> None:
        """What acts besides the residuals: reference attention/AdaIN, inpaint_only's and tile_colorfix's x0
        replacement, the pixel blends (modules/controlnet/reference.py, effects.py). Before the infotext: an
        inpaint_only unit in img2img with an A1111 mask becomes inpaint here."""
        from modules.controlnet import effects, reference
        effects.attach(p, active, hires, int(self._setting("control_net_inpaint_blur_sigma", 7)))
        reference.attach(p, active, hires)

    def detected_maps(self, p, active: list[ActiveUnit]) -> list[Image.Image]:
        """The maps appended to the output (§1.7): per unit, the hires-size map first when hires ran, then the base
        size; none for units with save_detected_map off or when the setting control_net_no_detectmap is on."""
        if self._setting("control_net_no_detectmap", False):
            return []
        out = []
        hires = bool(getattr(p, "enable_hr", False)) and not getattr(p, "is_img2img", False)
        for au in active:
            if not au.unit.save_detected_map:
                continue
            sizes = []
            if hires:
                from modules.engine.params import hr_size
                sizes.append(hr_size(p))
            sizes.append((p.width, p.height))
            for w, h in sizes:
                out.append(Image.fromarray(np.ascontiguousarray(au.control.map_at(w, h))))
        return out

    # --- outside a generation (the UI's preview, /controlnet/detect) -------------------------------------------
    def preview(self, value, width: int, height: int) -> np.ndarray:
        """A unit's detected map at the generation size (the UI's 💥 button)."""
        from types import SimpleNamespace

        from modules.controlnet import preprocessors
        from modules.controlnet.units import parse_unit
        unit = parse_unit(value, 0, "unit")
        pre = preprocessors.get(unit.module)
        if pre is None:
            raise ParamError("unit.module", f"unknown preprocessor {unit.module!r}")
        p = SimpleNamespace(width=int(width), height=int(height), init_images=None)
        control = hints.prepare_control(unit, pre, p, "unit", 0, self.store(),
                                        bool(self._setting("controlnet_ignore_noninpaint_mask", False)))
        return control.map_at(int(width), int(height))
