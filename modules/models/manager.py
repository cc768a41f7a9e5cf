"""Owns the one loaded checkpoint: picks, loads, switches and frees models, keeping the old one when a load fails."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import dataclasses

import torch

from modules import cpu_allocator, devices
from modules.devices import DeviceConfig, torch_gc
from modules.models import model_options
from modules.models.model_options import ModelOptions, VaePolicy
from modules.models.diffusers_folder import load_folder
from modules.models.loader import SDModel, build_model, load_vae_weights, read_checkpoint, tokenizer
from modules.models.registry import CheckpointInfo, ModelRegistry
from modules.models.safe_load import ModelFileError

log = logging.getLogger("sd.models")

NO_MODEL_MESSAGE = "no model yet: put a .safetensors file in models/Stable-diffusion"


class NoModelError(RuntimeError):
    pass


class ModelManager:
    def __init__(self, registry: ModelRegistry, device: DeviceConfig, tokenizer_dir: Path,
                 vae_setting: Callable[[], str] = lambda: "Automatic", forced_vae: Path | None = None,
                 config_override: Path | None = None, options: ModelOptions | None = None,
                 setting: Callable[[str, object], object] = lambda _key, default: default,
                 tiled_vae: bool = False):
        self.registry = registry
        self.device = device
        self.tokenizer_dir = tokenizer_dir
        self.vae_setting = vae_setting
        self.forced_vae = forced_vae
        self.config_override = config_override
        self.model: SDModel | None = None
        self.lock = threading.RLock()
        self.on_loaded: list[Callable[[SDModel], None]] = []
        self.last_load_seconds: float | None = None
        self.options = options or ModelOptions()
        self.setting = setting          # (key, default) → the setting's value, read when it is needed
        self.tiled_vae = tiled_vae      # --tiled-vae

    def default_checkpoint(self) -> CheckpointInfo | None:
        return self.registry.default_checkpoint()

    def require(self) -> SDModel:
        with self.lock:
            if self.model is None:
                info = self.default_checkpoint()
                if info is None:
                    raise NoModelError(NO_MODEL_MESSAGE)
                self.load(info)
            return self.model

    def select(self, query: str) -> CheckpointInfo:
        info = self.registry.find_checkpoint(query)
        if info is None:
            raise KeyError(f"sd_model_checkpoint: no checkpoint matches {query!r}; available: "
                           f"{self.registry.titles()}")
        return info

    def load(self, info: CheckpointInfo) -> SDModel:
        """Loads `info` (no-op when it is already loaded). On failure the previous model stays loaded."""
        with self.lock:
            if self.model is not None and self.model.info.filename == info.filename:
                return self.model
            start = time.perf_counter()
            sd = spec = None
            if not info.is_diffusers_dir:  # read and check the file before giving up the current model
                sd, spec = read_checkpoint(info, self.config_override if self._is_forced(info) else None)
            self.registry.ensure_hash(info)
            previous_info = self.model.info if self.model is not None else None
            self.model = None
            torch_gc()  # free the old weights before the new ones are materialised
            # with --medvram/--lowvram the weights are built in RAM and only moved in while they run
            offload = self.options.memory.mode_for(spec.family == "sdxl" if spec else True) != "none"
            build_device = torch.device("cpu") if offload else self.device.device
            try:
                if info.is_diffusers_dir:
                    model = load_folder(info, lambda pad: tokenizer(self.tokenizer_dir, pad), build_device,
                                        self.device.dtype, self.device.vae_dtype)
                else:
                    model = build_model(info, sd, spec, self.tokenizer_dir, build_device, self.device.dtype,
                                        self.device.vae_dtype)
                del sd
                model.device = self.device.device
                self._apply_vae(model)
                model.extra["vae_policy"] = self._vae_policy()
                if build_device != self.device.device and self.options.memory.mode_for(model.is_sdxl) == "none":
                    for net in (model.unet, model.vae, *model.text_encoders):   # --medvram-sdxl, not an SDXL
                        net.to(self.device.device)
                model_options.apply(model, self.options, self.device)
            except Exception:
                if previous_info is not None:  # keep serving with the model the user had
                    try:
                        self.load(previous_info)
                    except Exception:  # pragma: no cover - the old file vanished meanwhile
                        log.exception("could not restore %s", previous_info.title)
                raise
            self.model = model
            cpu_allocator.give_back()
            self.last_load_seconds = time.perf_counter() - start
            log.info("loaded %s (%s) in %.2f s", info.title, model.spec.label, self.last_load_seconds)
            for callback in self.on_loaded:
                callback(model)
            return model

    def _vae_policy(self) -> VaePolicy:
        return VaePolicy(nan_check=self.device.nan_check,
                         auto_precision=lambda: bool(self.setting("auto_vae_precision", True)),
                         auto_precision_bf16=lambda: bool(self.setting("auto_vae_precision_bfloat16", False)),
                         tiled=lambda: self.tiled_vae or bool(self.setting("tiled_vae", False)),
                         on_upcast=self._keep_vae_dtype)

    def _keep_vae_dtype(self, dtype: torch.dtype) -> None:
        """A1111: after a NaN fall-back the VAE stays in that precision for the rest of the session (later
        checkpoints too)."""
        self.device = dataclasses.replace(self.device, vae_dtype=dtype)
        devices.dtype_vae = dtype

    def _is_forced(self, info: CheckpointInfo) -> bool:
        return any(info.filename == p for p in self.registry.extra_checkpoints)

    def _apply_vae(self, model: SDModel) -> None:
        path = self.forced_vae or self.registry.resolve_vae(self.vae_setting(), model.info)
        if path != model.vae_file:
            load_vae_weights(model, path)

    def apply_vae(self, setting: str) -> None:
        """Puts the VAE that `setting` names (Automatic, None or a file, as the sd_vae setting) on the loaded
        model without changing the setting (an X/Y/Z plot cell); --vae-path still wins."""
        with self.lock:
            if self.model is not None:
                path = self.forced_vae or self.registry.resolve_vae(setting, self.model.info)
                self.apply_vae_file(path)

    def apply_vae_file(self, path: Path | None) -> None:
        """The VAE file `path` (None: the checkpoint's own) on the loaded model."""
        with self.lock:
            if self.model is not None and path != self.model.vae_file:
                load_vae_weights(self.model, path)

    def reload_vae(self) -> None:
        with self.lock:
            if self.model is not None:
                self._apply_vae(self.model)

    def unload(self) -> None:
        with self.lock:
            self.model = None
            torch_gc()


__all__ = ["ModelManager", "NoModelError", "ModelFileError", "NO_MODEL_MESSAGE"]
