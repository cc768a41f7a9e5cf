"""A1111's shapes of a checkpoint and of the loaded model, as views of ours (modules/models): what extensions read
as `shared.sd_model`, `shared.sd_model.sd_checkpoint_info` and `sd_models.checkpoints_list[title]`.

No copy of the model or its weights: `SdModelView` answers A1111's questions (`is_sdxl`, `sd_model_hash`, …) and
passes every other attribute to our model object (`unet`, `vae`, `text_encoders`, …).
"""
from __future__ import annotations

import os
from pathlib import Path

from modules.models.registry import CheckpointInfo as RegistryCheckpointInfo


class CheckpointInfo:
    """A1111's `sd_models.CheckpointInfo`: built from a file name, as extensions do, or around one of the registry's
    entries (`CheckpointInfo.of(info)`)."""

    def __init__(self, filename, *, registry=None):
        if isinstance(filename, RegistryCheckpointInfo):
            info = filename
        else:
            path = Path(filename).resolve()
            info = registry.find_checkpoint(str(path)) if registry is not None else None
            info = info or RegistryCheckpointInfo(path, path.name)
        self._info = info
        self._registry = registry
        self.metadata: dict = {}

    @classmethod
    def of(cls, info: RegistryCheckpointInfo, registry=None) -> "CheckpointInfo":
        return cls(info, registry=registry)

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, CheckpointInfo) and other._info.filename == self._info.filename

    def __hash__(self) -> int:
        return hash(self._info.filename)

    @property
    def filename(self) -> str:
        return str(self._info.filename)

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def name_for_extra(self) -> str:
        return os.path.splitext(os.path.basename(self.filename))[0]

    @property
    def model_name(self) -> str:
        return self._info.model_name

    @property
    def hash(self) -> str | None:
        """A1111's old 8-hex model hash."""
        if self._info.legacy is None and os.path.isfile(self.filename):
            from modules.models.hashing import legacy_hash
            self._info.legacy = legacy_hash(self.filename)
        return self._info.legacy

    @property
    def sha256(self) -> str | None:
        return self._info.sha256

    @property
    def shorthash(self) -> str | None:
        return self._info.shorthash

    @property
    def title(self) -> str:
        return self._info.title

    @property
    def short_title(self) -> str:
        return f"{self.name_for_extra} [{self.shorthash}]" if self.shorthash else self.name_for_extra

    @property
    def is_safetensors(self) -> bool:
        return self.filename.lower().endswith(".safetensors")

    @property
    def ids(self) -> list[str]:
        """The names this checkpoint is found by (A1111's checkpoint_aliases keys)."""
        out = [self.model_name, self.title, self.name, self.name_for_extra]
        if self.hash:
            out += [self.hash, f"{self.name} [{self.hash}]"]
        if self.sha256:
            out += [self.sha256, self.shorthash, f"{self.name} [{self.shorthash}]", f"{self.name_for_extra} [{self.shorthash}]"]
        return list(dict.fromkeys(x for x in out if x))

    def calculate_shorthash(self) -> str | None:
        """Hashes the file if it has no sha256 yet (A1111 does this when a checkpoint is used)."""
        if self._info.sha256 is None:
            if self._registry is not None:
                self._registry.ensure_hash(self._info)
            elif os.path.isfile(self.filename):
                from modules.models.hashing import file_sha256
                self._info.sha256 = file_sha256(self.filename)
        return self.shorthash

    def register(self) -> None:
        """A1111 adds the checkpoint to its lists; ours come from the registry, which finds files itself."""
        if self._registry is not None:
            self._registry.find_checkpoint(self.filename)


class SdModelView:
    """`shared.sd_model`: A1111's questions about the loaded model, and our model object behind them."""

    def __init__(self, model, registry=None):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "sd_checkpoint_info", CheckpointInfo.of(model.info, registry))

    def __repr__(self) -> str:
        return f"<sd_model {self.sd_checkpoint_info.title} ({self._model.spec.label})>"

    @property
    def model(self):
        """Our SDModel (A1111's sd_model.model is the LDM wrapper; extensions that reach into it are out of reach)."""
        return self._model

    @property
    def is_sdxl(self) -> bool:
        return self._model.spec.family == "sdxl"

    @property
    def is_sd1(self) -> bool:
        return self._model.spec.family == "sd1"

    @property
    def is_sd2(self) -> bool:
        return self._model.spec.family == "sd2"

    is_sd3 = False
    is_ssd = False
    is_sdxl_inpaint = property(lambda self: self.is_sdxl and self._model.spec.inpainting)

    @property
    def sd_model_hash(self) -> str | None:
        return self.sd_checkpoint_info.shorthash

    @property
    def sd_model_checkpoint(self) -> str:
        return self.sd_checkpoint_info.filename

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "_model"), name)

    def __setattr__(self, name: str, value) -> None:
        """Extensions tag the model with their own attributes; they stay on this view (one per loaded model)."""
        object.__setattr__(self, name, value)
