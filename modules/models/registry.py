"""Finds the model files users drop in (checkpoints, VAEs) and names them the way A1111 does."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from modules.models.hashing import HashCache, legacy_hash

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
VAE_MARKERS = (".vae.pt", ".vae.ckpt", ".vae.safetensors")
# Small files are hashed while scanning; big ones only when loaded (hashing 4 GB takes tens of seconds).
EAGER_HASH_LIMIT = 256 << 20


def is_vae_file(path: Path) -> bool:
    return path.name.lower().endswith(VAE_MARKERS)


@dataclass
class CheckpointInfo:
    filename: Path              # absolute path: a file, or a diffusers folder
    name: str                   # path relative to the folder it was found in, with forward slashes
    sha256: str | None = None
    legacy: str | None = None
    config: Path | None = None  # <name>.yaml beside the file, if any
    is_diffusers_dir: bool = False
    aliases: set[str] = field(default_factory=set)

    @property
    def model_name(self) -> str:
        return os.path.splitext(self.name.replace("/", "_"))[0] if not self.is_diffusers_dir else self.name.replace("/", "_")

    @property
    def stem(self) -> str:
        return self.filename.stem if not self.is_diffusers_dir else self.filename.name

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    def matches(self, query: str) -> bool:
        q = query.strip()
        if not q:
            return False
        names = {self.title, self.name, self.model_name, self.stem, self.filename.name, str(self.filename)}
        if q in names:
            return True
        q_low = q.lower()
        return bool((self.sha256 and len(q_low) >= 8 and self.sha256.startswith(q_low))
                    or (self.legacy and q_low == self.legacy))

    def to_api(self) -> dict:
        return {"title": self.title, "model_name": self.model_name, "hash": self.shorthash, "sha256": self.sha256,
                "filename": str(self.filename), "config": str(self.config) if self.config else None}


@dataclass
class VaeInfo:
    filename: Path
    name: str

    def to_api(self) -> dict:
        return {"model_name": self.name, "filename": str(self.filename)}


class ModelRegistry:
    def __init__(self, checkpoint_dirs: list[Path], vae_dir: Path, hash_cache: HashCache, hashing: bool = True,
                 extra_checkpoints: list[Path] | None = None, extra_vaes: list[Path] | None = None,
                 fallback_checkpoint: Path | None = None):
        """``fallback_checkpoint`` (the bundled demo model) is listed when no other checkpoint is found, and is never
        the default while another one is."""
        self.fallback = Path(fallback_checkpoint).resolve() if fallback_checkpoint else None
        self.checkpoint_dirs = checkpoint_dirs
        self.vae_dir = vae_dir
        self.hash_cache = hash_cache
        self.hashing = hashing
        self.extra_checkpoints = [Path(p).resolve() for p in (extra_checkpoints or [])]
        self.extra_vaes = [Path(p).resolve() for p in (extra_vaes or [])]
        self.checkpoints: list[CheckpointInfo] = []
        self.vaes: list[VaeInfo] = []
        self.refresh()

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.refresh_checkpoints()
        self.refresh_vaes()

    def refresh_checkpoints(self) -> None:
        found: dict[Path, CheckpointInfo] = {}
        for root in self.checkpoint_dirs:
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                if path.is_dir() and (path / "model_index.json").is_file():
                    found[path.resolve()] = CheckpointInfo(path.resolve(), path.relative_to(root).as_posix(),
                                                           is_diffusers_dir=True)
                elif path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES and not is_vae_file(path):
                    if (path.parent.parent / "model_index.json").is_file() or (path.parent / "model_index.json").is_file():
                        continue  # a component of a diffusers folder, not a checkpoint
                    found[path.resolve()] = self._file_info(path, path.relative_to(root).as_posix())
        for path in self.extra_checkpoints:
            if path.is_file() and path not in found:
                found[path] = self._file_info(path, path.name)
        if not found and self.fallback is not None and self.fallback.is_file():
            found[self.fallback] = self._file_info(self.fallback, f"{self.fallback.parent.name}/{self.fallback.name}")
        self.checkpoints = sorted(found.values(), key=lambda c: c.name.lower())

    def is_fallback(self, info: CheckpointInfo) -> bool:
        return self.fallback is not None and info.filename == self.fallback

    def default_checkpoint(self) -> CheckpointInfo | None:
        """The first checkpoint by name that is not the demo model, else the demo model, else None."""
        users = [c for c in self.checkpoints if not self.is_fallback(c)]
        return (users or self.checkpoints or [None])[0]

    def _file_info(self, path: Path, name: str) -> CheckpointInfo:
        path = path.resolve()
        yaml = path.with_suffix(".yaml")
        info = CheckpointInfo(path, name, config=yaml if yaml.is_file() else None)
        try:
            info.legacy = legacy_hash(path)
            eager = self.hashing and path.stat().st_size <= EAGER_HASH_LIMIT
            info.sha256 = self.hash_cache.sha256(path, compute=eager)
        except OSError:
            pass
        return info

    def ensure_hash(self, info: CheckpointInfo) -> None:
        """Full sha256 for a checkpoint about to be used (A1111 hashes on load too)."""
        if self.hashing and info.sha256 is None and not info.is_diffusers_dir:
            info.sha256 = self.hash_cache.sha256(info.filename)

    def find_checkpoint(self, query: str) -> CheckpointInfo | None:
        for info in self.checkpoints:
            if info.matches(query):
                return info
        path = Path(query)
        if path.is_file() or (path.is_dir() and (path / "model_index.json").is_file()):
            self.extra_checkpoints.append(path.resolve())
            self.refresh_checkpoints()
            return next((c for c in self.checkpoints if c.filename == path.resolve()), None)
        return None

    def titles(self) -> list[str]:
        return [c.title for c in self.checkpoints]

    # --- VAEs ----------------------------------------------------------------------------------------------------
    def refresh_vaes(self) -> None:
        found: dict[Path, VaeInfo] = {}
        if self.vae_dir.is_dir():
            for path in sorted(self.vae_dir.rglob("*")):
                if path.is_file() and path.suffix.lower() in VAE_SUFFIXES:
                    found[path.resolve()] = VaeInfo(path.resolve(), path.relative_to(self.vae_dir).as_posix())
        for root in self.checkpoint_dirs:
            if root.is_dir():
                for path in sorted(root.rglob("*")):
                    if path.is_file() and is_vae_file(path):
                        found.setdefault(path.resolve(), VaeInfo(path.resolve(), path.name))
        for path in self.extra_vaes:
            if path.is_file():
                found.setdefault(path, VaeInfo(path, path.name))
        self.vaes = sorted(found.values(), key=lambda v: v.name.lower())

    def find_vae(self, name: str) -> VaeInfo | None:
        return next((v for v in self.vaes if name in (v.name, v.filename.name, str(v.filename))), None)

    def vae_beside(self, ckpt: CheckpointInfo) -> Path | None:
        """`<checkpoint stem>.vae.{pt,ckpt,safetensors}` next to the checkpoint (used by the Automatic choice)."""
        if ckpt.is_diffusers_dir:
            return None
        for suffix in VAE_MARKERS:
            candidate = ckpt.filename.parent / (ckpt.filename.stem + suffix)
            if candidate.is_file():
                return candidate
        return None

    def resolve_vae(self, setting: str, ckpt: CheckpointInfo) -> Path | None:
        """The VAE file to apply for the sd_vae setting, or None for the checkpoint's own VAE."""
        if setting in ("None", "", None):
            return None
        if setting == "Automatic":
            return self.vae_beside(ckpt)
        vae = self.find_vae(setting)
        if vae is None:
            raise KeyError(f"sd_vae: unknown VAE {setting!r}; choose Automatic, None or one of "
                           f"{[v.name for v in self.vaes]}")
        return vae.filename
