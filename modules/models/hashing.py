"""A1111's model hashes: sha256 (short form = first 10 hex) and the legacy 8-hex hash.

Hashing a multi-GB checkpoint takes seconds, so results are cached in a JSON file keyed by path and checked against the
file's size and modification time.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from modules import atomic_file

_lock = threading.Lock()


def legacy_hash(path: str | os.PathLike) -> str:
    """sha256 of the 64 KiB at offset 1 MiB, first 8 hex (A1111's old "model hash"; still accepted to pick a model)."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class HashCache:
    def __init__(self, cache_file: Path):
        self.cache_file = Path(cache_file)
        self._data: dict | None = None

    def _load(self) -> dict:
        if self._data is None:
            try:
                self._data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def sha256(self, path: str | os.PathLike, compute: bool = True, hasher=None, field: str = "sha256") -> str | None:
        """Full sha256 from the cache when the file is unchanged, else computed (if allowed) and stored. `hasher` and
        `field` keep another digest of the same file beside it (the LoRA "addnet" hash of the tensor bytes)."""
        path = Path(path).resolve()
        st = path.stat()
        key = str(path)
        with _lock:
            entry = self._load().get(key)
            if entry and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime and field in entry:
                return entry[field]
        if not compute:
            return None
        digest = (hasher or file_sha256)(path)
        with _lock:
            entry = self._load().get(key)
            if not (entry and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime):
                entry = {"size": st.st_size, "mtime": st.st_mtime}
            entry[field] = digest
            self._load()[key] = entry
            self._save()
        return digest

    def _save(self) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file.replacing(self.cache_file) as tmp:
            tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
