"""The tensors of a TorchScript archive, read without running anything in it.

OpenAI's CLIP files (`ViT-L-14.pt`, what A1111's CLIP interrogator uses) are TorchScript archives. torch.load refuses
them with weights_only=True, and torch.jit.load would compile and keep the archive's code. Their `data.pkl` is a
pickle of the module tree: each module an object of a `__torch__.…` class built from a dict of its attributes
(parameters and buffers as tensors, submodules as further objects). We unpickle it with an unpickler that knows only
those placeholder classes, tensor rebuilding and OrderedDict, and read each tensor's bytes from the archive, so a
file can give us tensors and nothing else.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path

import torch

from modules.models.safe_load import ModelFileError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for any `__torch__.…` class: keeps the attribute dict it is built from, nothing else."""

    def __init__(self, *args):
        self.attrs: dict = {}

    def __setstate__(self, state):
        self.attrs = dict(state) if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_ignored) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, archive: zipfile.ZipFile, prefix: str):
        super().__init__(data)
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        if key not in self._storages:
            raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
            self._storages[key] = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else \
                torch.empty(0, dtype=storage_type.dtype)
        return self._storages[key]


def is_torchscript(path: str | os.PathLike) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the archive's module tree under its dotted name (`visual.conv1.weight`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                raise ModelFileError(f"{path}: not a TorchScript archive (no data.pkl)")
            name = min(names, key=len)
            prefix = name[: -len("data.pkl")]
            with archive.open(name) as fh:
                root = _Unpickler(fh, archive, prefix).load()
    except ModelFileError:
        raise
    except Exception as exc:  # a refused global, a damaged archive: one line naming the file
        raise ModelFileError(f"{path}: cannot be read as a TorchScript model: {exc}") from None
    out: dict[str, torch.Tensor] = {}

    def walk(obj, prefix: str) -> None:
        for key, value in obj.attrs.items():
            if isinstance(value, torch.Tensor):
                out[prefix + key] = value
            elif isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{key}.")

    if not isinstance(root, _ScriptObject):
        raise ModelFileError(f"{path}: the archive does not hold a module")
    walk(root, "")
    return out
