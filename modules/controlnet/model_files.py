"""ControlNet model files: the list sd-webui-controlnet shows, their names and how a request picks one.

CONTROLNET-REFERENCE §2.1 (folders, extensions, order) and §1.6 (display name "stem [hash]", A1111's legacy hash,
matching a request's `model`). Besides single files, a diffusers folder (config.json + diffusion_pytorch_model.*)
is one entry named by the folder; the extension itself would list its weights file as "diffusion_pytorch_model".
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modules.models.hashing import legacy_hash

EXTENSIONS = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")    # case-sensitive, as the extension compares them
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class ControlModelFile:
    path: Path          # the file, or the diffusers folder
    stem: str           # file name without extension; a diffusers folder's name
    hash8: str          # §1.6 legacy hash, "NOFILE" when unreadable

    @property
    def title(self) -> str:
        return f"{self.stem} [{self.hash8}]"

    @property
    def is_diffusers_dir(self) -> bool:
        return self.path.is_dir()

    @property
    def weights_path(self) -> Path:
        """The file holding the tensors (a diffusers folder's weights file)."""
        if self.path.is_dir():
            return diffusers_weights(self.path) or self.path
        return self.path


def diffusers_weights(folder: Path) -> Path | None:
    """The weights file of a diffusers model folder (config.json beside it), else None."""
    if not (folder / "config.json").is_file():
        return None
    return next((folder / n for n in DIFFUSERS_WEIGHTS if (folder / n).is_file()), None)


def file_hash(path: Path) -> str:
    """sha256 of the 64 KiB at 1 MiB, 8 hex digits; files under 1 MiB all get e3b0c442 (§0.6)."""
    try:
        return legacy_hash(path)
    except OSError:
        return "NOFILE"


def _entries(folder: Path) -> list[ControlModelFile]:
    """The folder's model files, symlinked folders followed (each real folder once), sorted by file name."""
    found: list[ControlModelFile] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        root_path = Path(root)
        for d in list(dirs):
            weights = diffusers_weights(root_path / d)
            if weights is not None:
                dirs.remove(d)          # its weights file is listed by the folder's name, not on its own
                found.append(ControlModelFile(root_path / d, d, file_hash(weights)))
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext in EXTENSIONS:
                found.append(ControlModelFile(root_path / name, stem, file_hash(root_path / name)))
    return sorted(found, key=lambda f: f.path.name)


def scan(folders: list[Path]) -> list[ControlModelFile]:
    """Every model file under `folders` (recursively; missing folders skipped), folder by folder in the given order,
    sorted by file name within a folder. A stem "None" is skipped; of two files with the same title the first is
    kept. (The extension merges folders with the later folder's entries in front; we keep the folder order.)"""
    out: list[ControlModelFile] = []
    seen: set[str] = set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for f in _entries(folder):
            if f.stem == "None" or f.title in seen:
                continue
            seen.add(f.title)
            out.append(f)
    return out


_HASH_SUFFIX = re.compile(r"\s*\[(?:[0-9a-fA-F]{8}|NOFILE)\]$")


def find(request: str | None, files: list[ControlModelFile]) -> ControlModelFile | None:
    """The file a request's `model` means (§1.6): the exact title, else the bare stem (any case), else the shortest
    stem containing the text (any case). "None" and "" mean no model. Beyond the extension: a title whose hash differs
    from ours (a client that copied it from another machine) is matched by its stem part (§5.2 point 10)."""
    if request is None or not str(request).strip() or request == "None":
        return None
    for f in files:
        if f.title == request:
            return f
    text = _HASH_SUFFIX.sub("", str(request)).lower()
    for f in files:
        if f.stem.lower() == text:
            return f
    containing = [f for f in files if text in f.stem.lower()]
    return min(containing, key=lambda f: len(f.stem)) if containing else None
