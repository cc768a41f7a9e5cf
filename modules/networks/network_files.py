"""The extra-network files on disk: scanned from their folders, named and looked up the way A1111 does.

A network is named by its file name without the extension (`name`); a kohya-ss file may also carry an alias in its
safetensors metadata (`ss_output_name`), and prompts may use either. An alias that two files share (or "none") is
"forbidden": only file names find those. Hashes are A1111's: the "addnet" sha256 of a .safetensors payload (the
bytes after the header, so editing the metadata keeps the hash) or of the whole file otherwise; `shorthash` is its
first 12 hex digits, the form written in "Lora hashes" and used to find a pasted network under another name.
Hashing is lazy (a 150 MB file takes a second): `read_hash()` when a job uses the network, or from the cache.
"""
from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from modules import file_lists, hashes
from modules.engine.extra_networks import ExtraNetworkParams

NETWORK_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
FORBIDDEN_ALIASES = frozenset({"none"})


def read_safetensors_metadata(path: str | os.PathLike) -> dict:
    """The `__metadata__` of a .safetensors header (values that hold JSON are decoded, as A1111 does); {} when the
    file has none or is not a readable safetensors file."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100 * 1024 * 1024:
                return {}
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    meta = header.get("__metadata__") or {}
    out = {}
    for key, value in meta.items():
        if isinstance(value, str) and value[:1] == "{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def base_family(metadata: dict) -> str | None:
    """The model family a file's kohya metadata declares ("sd1", "sd2", "sdxl"), None when it says nothing."""
    version = str(metadata.get("ss_base_model_version", "") or metadata.get("modelspec.architecture", ""))
    if version.startswith("sdxl") or "stable-diffusion-xl" in version:
        return "sdxl"
    if str(metadata.get("ss_v2", "")) == "True" or version.startswith("sd_v2") or "stable-diffusion-v2" in version:
        return "sd2"
    if version.startswith("sd_v1") or "stable-diffusion-v1" in version or metadata.get("ss_network_module"):
        return "sd1"
    return None


@dataclass(eq=False)
class NetworkOnDisk:
    """One file (A1111's NetworkOnDisk: name, filename, alias, metadata, hash, shorthash, sd_version)."""
    name: str
    filename: str
    metadata: dict = field(default_factory=dict)
    alias: str = ""
    hash: str = ""
    forbidden: Callable[[str], bool] = field(default=lambda _alias: False, repr=False)

    def __post_init__(self):
        self.alias = str(self.metadata.get("ss_output_name") or self.name)
        if not self.hash:
            self.hash = str(self.metadata.get("sshs_model_hash") or "")

    @property
    def is_safetensors(self) -> bool:
        return self.filename.lower().endswith(".safetensors")

    @property
    def shorthash(self) -> str:
        return self.hash[:12]

    @property
    def sd_version(self) -> str | None:
        return base_family(self.metadata)

    @property
    def mtime(self) -> float:
        try:
            return os.path.getmtime(self.filename)
        except OSError:
            return 0.0

    def read_hash(self) -> str:
        """Hashes the file once (A1111's addnet hash for .safetensors); '' with --no-hashing."""
        if not self.hash:
            self.hash = hashes.sha256(self.filename, "lora/" + self.name, use_addnet_hash=self.is_safetensors) or ""
        return self.hash

    def get_alias(self, preferred: str = "Alias from file") -> str:
        """The name a prompt should use for it: the alias, unless the setting prefers file names or the alias is
        ambiguous."""
        if preferred == "Filename" or self.forbidden(self.alias):
            return self.name
        return self.alias

    def preview_file(self) -> str | None:
        """`name.preview.png` (or .jpg/.webp/…) or `name.png` beside the file, A1111's preview names."""
        stem = os.path.splitext(self.filename)[0]
        for ext in PREVIEW_EXTENSIONS:
            for candidate in (f"{stem}.preview{ext}", f"{stem}{ext}"):
                if os.path.isfile(candidate):
                    return candidate
        return None

    def user_metadata_file(self) -> str:
        """`name.json` beside the file (the Extra Networks metadata editor's file)."""
        return os.path.splitext(self.filename)[0] + ".json"

    def user_metadata(self) -> dict:
        try:
            with open(self.user_metadata_file(), encoding="utf8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}


class NetworkCatalog:
    """The files of one kind of network under its folders (subfolders included), refreshed on demand.

    `folders` is called at each refresh, so settings and flags that add folders take effect without a restart."""

    def __init__(self, folders: Callable[[], Iterable[Path]], extensions: Iterable[str] = NETWORK_EXTENSIONS,
                 kind: str = "lora"):
        self.folders = folders
        self.extensions = tuple(extensions)
        self.kind = kind
        self.available: dict[str, NetworkOnDisk] = {}         # file name (stem) → network
        self.aliases: dict[str, NetworkOnDisk] = {}           # alias or name → network
        self.forbidden_aliases: set[str] = set(FORBIDDEN_ALIASES)
        self._metadata_cache: dict[tuple[str, float, int], dict] = {}
        self._lock = threading.Lock()
        self.refreshed = False

    def _metadata(self, path: str) -> dict:
        if not path.lower().endswith(".safetensors"):
            return {}
        st = os.stat(path)
        key = (path, st.st_mtime, st.st_size)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = read_safetensors_metadata(path)
        return self._metadata_cache[key]

    def files(self) -> list[tuple[Path, str]]:
        """(folder, file) pairs in A1111's order: folders as given, each walked in natural order."""
        seen, out = set(), []
        for folder in self.folders():
            folder = Path(folder)
            for filename in file_lists.walk_files(str(folder), allowed_extensions=self.extensions):
                real = os.path.realpath(filename)
                if real not in seen and os.path.isfile(filename):
                    seen.add(real)
                    out.append((folder, filename))
        return out

    def refresh(self) -> None:
        with self._lock:
            available, aliases, forbidden = {}, {}, set(FORBIDDEN_ALIASES)
            for _folder, filename in self.files():
                name = os.path.splitext(os.path.basename(filename))[0]
                try:
                    meta = self._metadata(filename)
                except OSError:
                    continue
                old = self.available.get(name)
                known_hash = old.hash if old is not None and old.filename == filename and old.mtime == \
                    os.path.getmtime(filename) else ""
                entry = NetworkOnDisk(name, filename, meta, hash=known_hash, forbidden=self.is_forbidden)
                if entry.alias in aliases and aliases[entry.alias] is not entry:
                    forbidden.add(entry.alias.lower())
                available[name] = entry
                aliases[name] = entry
                aliases[entry.alias] = entry
            # updated in place: extensions keep references to these dicts (A1111's networks.available_networks)
            for mine, new in ((self.available, available), (self.aliases, aliases),
                              (self.forbidden_aliases, forbidden)):
                mine.clear()
                mine.update(new)
            self.refreshed = True

    def is_forbidden(self, alias: str) -> bool:
        return alias.lower() in self.forbidden_aliases

    def ensure(self) -> None:
        if not self.refreshed:
            self.refresh()

    def find(self, name: str) -> NetworkOnDisk | None:
        """A prompt's name → its file: by file name when the alias is ambiguous, else by alias or file name; a
        missing name triggers one rescan (the file may have been added since)."""
        for attempt in range(2):
            if attempt or not self.refreshed:
                self.refresh()
            if name.lower() in self.forbidden_aliases:
                found = self.available.get(name)
            else:
                found = self.aliases.get(name) or self.available.get(name)
            if found is not None and os.path.isfile(found.filename):
                return found
        return None

    def by_shorthash(self, shorthash: str) -> NetworkOnDisk | None:
        """The network with this hash prefix among those hashed (or cached) so far, as A1111's hash lookup."""
        shorthash = shorthash.strip().lower()
        if not shorthash:
            return None
        self.ensure()
        for entry in self.available.values():
            if not entry.hash:
                cached = hashes.sha256_from_cache(entry.filename, f"{self.kind}/{entry.name}",
                                                  use_addnet_hash=entry.is_safetensors)
                if cached:
                    entry.hash = cached
            if entry.hash and entry.hash.lower().startswith(shorthash):
                return entry
        return None


def add_from_setting(p, entries: list, kind: str, name, multiplier, catalog) -> list:
    """A1111's "Add network to prompt" settings (sd_lora, sd_hypernetwork): the network joins every batch that
    does not name it, and its token is appended to the prompts so that the infotext shows it."""
    if not name or name == "None" or any(e.positional[:1] == [name] for e in entries):
        return entries
    if catalog.find(name) is None:
        return entries
    token = f"<{kind}:{name}:{multiplier}>"
    if getattr(p, "all_prompts", None):
        p.all_prompts = [f"{prompt}{token}" for prompt in p.all_prompts]
    return [*entries, ExtraNetworkParams([name, str(multiplier)])]
