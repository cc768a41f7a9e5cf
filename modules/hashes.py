"""A1111's `modules.hashes`: sha256 of model files, cached, through our hash cache (modules/models/hashing.py, the
runtime's cache file). `use_addnet_hash` hashes a .safetensors file's tensor data without its header (the hash
kohya's additional-networks uses for LoRAs)."""
from __future__ import annotations

import hashlib
import os

from modules import shared
from modules.models.hashing import file_sha256

_addnet_cache: dict[tuple[str, int, float], str] = {}


def calculate_sha256(filename: str) -> str:
    return file_sha256(filename)


def addnet_hash_safetensors(b) -> str:
    """sha256 of a .safetensors file object's bytes after its header."""
    hash_sha256 = hashlib.sha256()
    b.seek(0)
    header = b.read(8)
    b.seek(8 + int.from_bytes(header, "little"))
    for chunk in iter(lambda: b.read(1 << 20), b""):
        hash_sha256.update(chunk)
    return hash_sha256.hexdigest()


def _addnet_file(filename) -> str:
    with open(filename, "rb") as f:
        return addnet_hash_safetensors(f)


def _addnet_key(filename: str) -> tuple[str, int, float]:
    st = os.stat(filename)
    return os.path.realpath(filename), st.st_size, st.st_mtime


def sha256_from_cache(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    """The cached hash, or None when the file changed since (or was never hashed)."""
    if not os.path.isfile(filename):
        return None
    if use_addnet_hash:
        found = _addnet_cache.get(_addnet_key(filename))
        if found is None and shared.bound():   # hashed in an earlier session
            found = shared.runtime().registry.hash_cache.sha256(filename, compute=False, field="addnet")
        return found
    if not shared.bound():
        return None
    return shared.runtime().registry.hash_cache.sha256(filename, compute=False)


def sha256(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    """The file's sha256 (hashed once, then cached); None with --no-hashing, as in A1111."""
    if shared.bound() and getattr(shared.cmd_opts, "no_hashing", False):
        return None
    if use_addnet_hash:
        key = _addnet_key(filename)
        if key not in _addnet_cache:
            if shared.bound():   # kept in the runtime's hash cache file, so later sessions know it without reading
                _addnet_cache[key] = shared.runtime().registry.hash_cache.sha256(
                    filename, hasher=_addnet_file, field="addnet")
            else:
                _addnet_cache[key] = _addnet_file(filename)
        return _addnet_cache[key]
    if shared.bound():
        return shared.runtime().registry.hash_cache.sha256(filename)
    return calculate_sha256(filename)
