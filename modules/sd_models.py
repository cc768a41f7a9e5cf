"""A1111's `modules.sd_models`, as a view of our model registry and model manager (modules/models).

`checkpoints_list` and `checkpoint_aliases` are dicts that read the registry again whenever they are read, so a
module that imported them at start-up still sees the checkpoints found later. Loading goes through the job queue
(one job on the device at a time), or runs at once when called from inside a job (a script's hook).
"""
from __future__ import annotations

import collections
import os
import re

from modules import shared
from modules.sd_models_types import CheckpointInfo  # noqa: F401 (A1111 name)

_RE_CHECKSUM = re.compile(r"\s*\[[^]]*]\s*$")


class LiveDict(dict):
    """A dict filled from the registry on every read."""

    def __init__(self, fill):
        super().__init__()
        self._fill = fill

    def _sync(self) -> None:
        items = self._fill() if shared.bound() else {}
        dict.clear(self)
        dict.update(self, items)

    def __getitem__(self, key):
        self._sync()
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._sync()
        return dict.get(self, key, default)

    def __contains__(self, key) -> bool:
        self._sync()
        return dict.__contains__(self, key)

    def __iter__(self):
        self._sync()
        return iter(list(dict.keys(self)))

    def __len__(self) -> int:
        self._sync()
        return dict.__len__(self)

    def keys(self):
        self._sync()
        return dict.keys(self)

    def values(self):
        self._sync()
        return dict.values(self)

    def items(self):
        self._sync()
        return dict.items(self)

    def __repr__(self) -> str:
        self._sync()
        return dict.__repr__(self)


def _infos() -> list[CheckpointInfo]:
    rt = shared.runtime()
    return [CheckpointInfo.of(c, rt.registry) for c in rt.registry.checkpoints]


checkpoints_list: dict[str, CheckpointInfo] = LiveDict(lambda: {i.title: i for i in _infos()})
checkpoint_aliases: dict[str, CheckpointInfo] = LiveDict(
    lambda: {alias: i for i in reversed(_infos()) for alias in i.ids})
checkpoints_loaded: collections.OrderedDict = collections.OrderedDict()   # A1111's RAM cache; we keep one model


def __getattr__(name: str):
    if name == "model_path":
        return os.path.join(shared.models_path, "Stable-diffusion")
    raise AttributeError(f"module 'modules.sd_models' has no attribute {name!r}")


def list_models() -> None:
    """Looks for checkpoint files again."""
    shared.runtime().registry.refresh_checkpoints()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    return shared.list_checkpoint_tiles(use_short)


def model_hash(filename: str) -> str:
    """A1111's old 8-hex hash of a checkpoint file ('NOFILE' when there is none)."""
    from modules.models.hashing import legacy_hash
    try:
        return legacy_hash(filename)
    except FileNotFoundError:
        return "NOFILE"


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """A checkpoint by alias (title, name, hash…), else the shortest title containing the text (with or without a
    trailing ' [hash]')."""
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    for text in (search_string, _RE_CHECKSUM.sub("", search_string)):
        found = sorted((i for i in checkpoints_list.values() if text in i.title), key=lambda i: len(i.title))
        if found:
            return found[0]
    return None


def select_checkpoint() -> CheckpointInfo:
    """The checkpoint in use: the loaded one, else the one the setting names, else the first found."""
    rt = shared.runtime()
    model = rt.models.model
    if model is not None:
        return CheckpointInfo.of(model.info, rt.registry)
    info = get_closet_checkpoint_match(rt.options.sd_model_checkpoint) if rt.options.sd_model_checkpoint else None
    if info is not None:
        return info
    default = rt.models.default_checkpoint()
    if default is None:
        from modules.models.manager import NO_MODEL_MESSAGE
        raise FileNotFoundError(NO_MODEL_MESSAGE)
    return CheckpointInfo.of(default, rt.registry)


def reload_model_weights(sd_model=None, info: CheckpointInfo | None = None, forced_reload: bool = False):
    """Loads `info` (the selected checkpoint when None) and returns shared.sd_model. A no-op when it is loaded."""
    info = info or select_checkpoint()
    filename = info.filename if isinstance(info, CheckpointInfo) else str(info)
    shared.run_job("load_model", {"checkpoint": filename})
    return shared.sd_model


def load_model(checkpoint_info: CheckpointInfo | None = None, already_loaded_state_dict=None):
    return reload_model_weights(info=checkpoint_info)


def unload_model_weights(sd_model=None, info=None) -> None:
    shared.run_job("unload_model")


def read_state_dict(checkpoint_file: str, print_global_state: bool = False, map_location: str | None = None) -> dict:
    """The tensors of a checkpoint file, read without running code (.safetensors, or a pickle through the
    restricted loader)."""
    from modules.models.safe_load import load_state_dict
    return load_state_dict(checkpoint_file, device=map_location or "cpu")


class _ModelData:
    """A1111's `sd_models.model_data`: the loaded model."""

    @property
    def sd_model(self):
        return shared.sd_model

    def get_sd_model(self):
        return shared.sd_model


model_data = _ModelData()
