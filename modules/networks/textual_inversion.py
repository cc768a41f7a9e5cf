"""Textual-inversion embeddings: the files in embeddings/ (and the bundled demo folder), read once, split per model
into the ones that fit its text encoders and the skipped ones, and handed to every job as the patch set's
`embeddings` (name → vectors; conditioning swaps them in where a prompt names them).

A1111's facts: an embedding is named by its file's stem (an image embedding by the name stored in it); .pt/.bin
hold A1111's `string_to_param` dict or a diffusers concept `{token: tensor}`, .safetensors a single tensor (e.g.
`emb_params`) or SDXL's `clip_l` + `clip_g` pair; a .png carries one in its `sd-ti-embedding` text chunk or, like a
lossless .webp, hidden in the bands A1111 draws beside the picture. The width must match the loaded model's text
encoder (SDXL: both), else the embedding is "skipped". A broken file is logged and skipped. Pickles go through the
restricted unpickler (modules.models.safe_load).

Reading is per file and cached by (path, mtime, size), so rescans after a folder change and model switches re-read
nothing that did not change.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import os
import threading
import weakref
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from modules import file_lists, hashes
from modules.engine import conditioning
from modules.models import safe_load

log = logging.getLogger("sd.embeddings")

IMAGE_EXTENSIONS = (".png", ".webp")     # A1111's image embeddings (lossless WEBP keeps the hidden data)
EMBEDDING_EXTENSIONS = (".pt", ".bin", ".safetensors") + IMAGE_EXTENSIONS
SDXL_KEYS = ("clip_l", "clip_g")       # A1111's SDXL pair, in the order of the model's text encoders


class EmbeddingFileError(ValueError):
    """A file in the embeddings folder that is not a usable embedding; the message names the file and why."""


class Embedding:
    """A1111's Embedding: `vec` is a [n, width] tensor, or {"clip_l": …, "clip_g": …} for SDXL; `shape` is the width
    (SDXL: both widths added, as A1111 counts it); `vectors` the tokens it takes in a prompt. `hash` (sha256 of the
    file) is computed the first time it is read, not at load: a thousand embeddings do not hash at start-up."""

    def __init__(self, vec, name: str, step=None):
        self.vec = vec
        self.name = name
        self.step = step
        self.shape = None
        self.vectors = 0
        self.cached_checksum = None
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None
        self.optimizer_state_dict = None
        self.filename: str | None = None
        self._hash: str | None = None

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = (hashes.sha256(self.filename, "textual_inversion/" + self.name) or "") \
                if self.filename else ""
        return self._hash

    @hash.setter
    def hash(self, value) -> None:
        self._hash = value

    @property
    def shorthash(self) -> str:
        return (self.hash or "")[:12]

    def set_hash(self, v: str) -> None:
        self._hash = v

    def checksum(self) -> str:
        """A1111's 4-hex-digit checksum of the vectors (shown in training logs)."""
        if self.cached_checksum is None:
            r = 0
            flat = torch.cat([v.reshape(-1) for v in self.parts()]) * 100
            for v in flat.tolist():
                r = (r * 281 ^ int(v) * 997) & 0xFFFFFFFF
            self.cached_checksum = f"{r & 0xffff:04x}"
        return self.cached_checksum

    def parts(self) -> list[torch.Tensor]:
        """The vectors per text encoder: [vec], or [clip_l, clip_g]."""
        return [self.vec[k] for k in SDXL_KEYS] if isinstance(self.vec, dict) else [self.vec]

    def info(self) -> dict:
        """The API's description (/sdapi/v1/embeddings)."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint,
                "sd_checkpoint_name": self.sd_checkpoint_name, "shape": self.shape, "vectors": self.vectors}


# --- reading files ------------------------------------------------------------------------------------------------
def _tensor_from_json(d: dict):
    if "TORCHTENSOR" in d:
        return torch.tensor(d["TORCHTENSOR"], dtype=torch.float32)
    return d


def _read_image(path: str) -> dict | None:
    """An A1111 image embedding's data: from its `sd-ti-embedding` text chunk (base64 JSON, tensors as
    {"TORCHTENSOR": nested lists}), else from the data A1111 hides in the image's side bands; None for an image
    that holds neither (a picture, a preview)."""
    from PIL import Image
    with Image.open(path) as im:
        text = getattr(im, "text", {}).get("sd-ti-embedding")
        pixels = None if text else np.asarray(im.convert("RGB"))
    if text:
        try:
            return json.loads(base64.b64decode(text), object_hook=_tensor_from_json)
        except ValueError as exc:
            raise EmbeddingFileError(f"{path}: its sd-ti-embedding text is not valid: {exc}") from None
    return _from_pixels(pixels)


@functools.lru_cache(maxsize=4)
def _xor_sequence(n: int) -> np.ndarray:
    out = np.empty(n, np.uint8)
    seed = 0
    for i in range(n):
        seed = (1664525 * seed + 1013904223) % 4294967296
        out[i] = (seed % 255) & 0x0F
    out.flags.writeable = False
    return out


def _xor_pattern(shape) -> np.ndarray:
    """A1111's mask over the hidden nibbles: a linear congruential sequence (a=1664525, c=1013904223, m=2**32,
    seed 0), each value mod 255, low four bits. Our own loop: the sequence is serial, numpy has no such generator."""
    return _xor_sequence(int(np.prod(shape))).reshape(shape)


def _from_pixels(pixels: np.ndarray) -> dict | None:
    """A1111's pixel embedding: the image framed by two bands (left: low nibbles, right: high nibbles of the zlib
    compressed JSON, each XOR-masked), separated from it by black columns; the black border is cropped first."""
    lit = (pixels > 0).all(axis=2)
    cols, rows = np.flatnonzero(lit.any(axis=0)), np.flatnonzero(lit.any(axis=1))
    if not len(cols) or not len(rows):
        return None
    low_bits = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] & 0x0F
    black = np.flatnonzero(low_bits.sum(axis=(0, 2)) == 0)
    if len(black) < 2:
        return None
    lower, upper = low_bits[:, :black.min()], low_bits[:, black.max() + 1:]
    if lower.shape != upper.shape or not lower.size:
        return None
    lower, upper = lower ^ _xor_pattern(lower.shape), upper ^ _xor_pattern(upper.shape)
    try:
        raw = zlib.decompress(((upper << 4) | lower).astype(np.uint8).tobytes())
        data = json.loads(raw, object_hook=_tensor_from_json)
    except (zlib.error, ValueError):
        return None  # black columns by chance: a picture, not an embedding
    return data if isinstance(data, dict) else None


def read_file(path: str) -> tuple[dict, str] | None:
    """(data, name) of an embedding file; None when the file is not an embedding (a preview image, another type)."""
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower()
    if ext in IMAGE_EXTENSIONS:
        if stem.lower().endswith(".preview"):
            return None
        data = _read_image(path)
        return (data, str(data.get("name") or stem)) if data is not None else None
    if ext in (".pt", ".bin"):
        try:
            data = safe_load.load_pickle(path)
        except safe_load.ModelFileError as exc:
            raise EmbeddingFileError(str(exc)) from None
    elif ext == ".safetensors":
        from safetensors.torch import load_file
        try:
            data = load_file(path, device="cpu")
        except Exception as exc:  # the library's error, as one line naming the file
            raise EmbeddingFileError(f"{path}: cannot be read as a .safetensors file: {exc}") from None
    else:
        return None
    if not isinstance(data, dict) or not data:
        raise EmbeddingFileError(f"{path}: holds {type(data).__name__}, not a dict of embedding vectors")
    return data, stem


def _float(t, path: str, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise EmbeddingFileError(f"{path}: {what} is {type(t).__name__}, not a tensor")
    t = t.detach().to(torch.float32)
    return t.unsqueeze(0) if t.dim() == 1 else t.reshape(-1, t.shape[-1])


def make_embedding(data: dict, name: str, path: str) -> Embedding:
    """The Embedding of a file's data, recognised as A1111 recognises them (string_to_param, SDXL pair, one tensor)."""
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingFileError(f"{path}: string_to_param must hold exactly one tensor, it has "
                                     f"{len(params) if isinstance(params, dict) else type(params).__name__}")
        vec = _float(next(iter(params.values())), path, "string_to_param")
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif all(k in data for k in SDXL_KEYS):
        vec = {k: _float(data[k], path, k) for k in SDXL_KEYS}
        if vec["clip_l"].shape[0] != vec["clip_g"].shape[0]:
            raise EmbeddingFileError(f"{path}: clip_l has {vec['clip_l'].shape[0]} vectors and clip_g "
                                     f"{vec['clip_g'].shape[0]}; they must be the same")
        shape, vectors = vec["clip_l"].shape[-1] + vec["clip_g"].shape[-1], vec["clip_g"].shape[0]
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise EmbeddingFileError(
                f"{path}: not an embedding: expected string_to_param, clip_l + clip_g, or exactly one tensor; "
                f"found {len(tensors)} tensors ({', '.join(list(map(str, data))[:5])})")
        vec = _float(tensors[0], path, "the tensor")
        shape, vectors = vec.shape[-1], vec.shape[0]
    embedding = Embedding(vec, name, data.get("step"))
    embedding.sd_checkpoint = data.get("sd_checkpoint")
    embedding.sd_checkpoint_name = data.get("sd_checkpoint_name")
    embedding.shape, embedding.vectors = int(shape), int(vectors)
    embedding.filename = path
    return embedding


# --- the database -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobEmbeddings:
    """What one job gets: the loaded embeddings' vectors (name → tensor, or [clip_l, clip_g]) on the model's device,
    and where "TI hashes" finds a name's short hash (None when the setting is off)."""
    vectors: dict
    hash_of: Callable[[str], str | None] | None = None


class DirWithTextualInversionEmbeddings:
    """A1111's folder record: a folder is rescanned when its modification time (or a subfolder's) changes."""

    def __init__(self, path: str):
        self.path = path
        self.mtimes: dict[str, float] | None = None

    def has_changed(self) -> bool:
        if self.mtimes is None:
            return True
        if not self.mtimes:
            return os.path.isdir(self.path)
        for folder, mtime in self.mtimes.items():
            try:
                if os.path.getmtime(folder) != mtime:
                    return True
            except OSError:
                return True
        return False

    def update(self, folders: Iterable[str]) -> None:
        self.mtimes = {}
        for folder in folders:
            try:
                self.mtimes[folder] = os.path.getmtime(folder)
            except OSError:
                pass


def _widths(model) -> list[int]:
    return [enc.get_input_embeddings().weight.shape[1] for enc in model.text_encoders]


class EmbeddingDatabase:
    """A1111's EmbeddingDatabase (word_embeddings, skipped_embeddings, ids_lookup, load_textual_inversion_embeddings,
    find_embedding_at_position), fed from folders and bound to the loaded model by `set_model`."""

    def __init__(self, folders: Iterable[str | os.PathLike] = ()):
        self.ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self.word_embeddings: dict[str, Embedding] = {}
        self.skipped_embeddings: dict[str, Embedding] = {}
        self.errors: dict[str, str] = {}              # file → why it was not loaded
        self.expected_shape = -1
        self.embedding_dirs: dict[str, DirWithTextualInversionEmbeddings] = {}
        self.version = 0                                # bumped whenever the loaded set changes
        self._files: dict[str, tuple[tuple[float, int], Embedding | None]] = {}
        self._all: list[Embedding] = []               # every readable embedding of the last scan, in folder order
        self._last_widths: list[int] | None = None    # the text-encoder widths of the last model seen
        self._model_ref: Callable[[], object] = lambda: None
        self._model_key = None
        self._job: JobEmbeddings = JobEmbeddings({})
        self._lock = threading.RLock()
        self._counter_lookup: tuple[tuple, object] | None = None
        for folder in folders:
            self.add_embedding_dir(folder)

    # A1111's folder API
    def add_embedding_dir(self, path) -> None:
        self.embedding_dirs[str(path)] = DirWithTextualInversionEmbeddings(str(path))

    def clear_embedding_dirs(self) -> None:
        self.embedding_dirs.clear()

    @property
    def model(self):
        return self._model_ref()

    def set_model(self, model) -> None:
        """The model whose encoders decide what fits (A1111 reloads when a checkpoint loads)."""
        with self._lock:
            self._model_ref = weakref.ref(model) if model is not None else (lambda: None)
            self.load_textual_inversion_embeddings()

    # --- loading ------------------------------------------------------------------------------------------------
    def _scan(self, force: bool) -> list[Embedding]:
        found: list[Embedding] = []
        seen: set[str] = set()
        self.errors = {}
        for embdir in self.embedding_dirs.values():
            folders = []
            if os.path.isdir(embdir.path):
                folders = [root for root, _dirs, _files in os.walk(embdir.path, followlinks=True)
                           if not any(part.startswith(".") for part in
                                      os.path.relpath(root, embdir.path).split(os.sep) if part not in (".", ""))]
            for path in file_lists.walk_files(embdir.path, allowed_extensions=EMBEDDING_EXTENSIONS):
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                embedding = self._read(path, force)
                if embedding is not None:
                    found.append(embedding)
            embdir.update(folders)
        for path in [p for p in self._files if p not in seen]:
            del self._files[path]
        return found

    def _read(self, path: str, force: bool) -> Embedding | None:
        try:
            st = os.stat(path)
            if st.st_size == 0:
                return None
            key = (st.st_mtime, st.st_size)
            cached = self._files.get(os.path.realpath(path))
            if cached is not None and cached[0] == key and not force:
                return cached[1]
            got = read_file(path)
            embedding = make_embedding(*got, path) if got is not None else None
        except Exception as exc:  # a broken file never stops start-up or a job
            reason = str(exc) if isinstance(exc, (EmbeddingFileError, OSError)) else f"{type(exc).__name__}: {exc}"
            self.errors[path] = reason
            log.warning("Error loading embedding %s: %s", path, reason)
            embedding, key = None, None
        if key is not None:
            self._files[os.path.realpath(path)] = (key, embedding)
        return embedding

    def _model_fingerprint(self, model):
        if model is None:
            return None
        return id(model), tuple(_widths(model)), str(model.device)

    def load_textual_inversion_embeddings(self, force_reload: bool = False) -> None:
        """Rescans when a folder changed (or `force_reload`: every file read again), and re-sorts loaded/skipped
        when the model changed; otherwise does nothing (a few stat calls)."""
        with self._lock:
            model = self.model
            changed = force_reload or any(d.has_changed() for d in self.embedding_dirs.values())
            # without a model (unloaded) the last model's split stays, as A1111 keeps its database
            fingerprint = self._model_fingerprint(model) if model is not None else self._model_key
            if not changed and fingerprint == self._model_key:
                return
            if changed:
                self._all = self._scan(force_reload)
            self._split(self._all, model)
            self._model_key = fingerprint

    def _split(self, found: list[Embedding], model) -> None:
        loaded, skipped = {}, {}
        widths = _widths(model) if model is not None else self._last_widths
        self._last_widths = widths
        self.expected_shape = sum(widths) if widths else -1
        for embedding in found:
            fits = widths is None or [p.shape[-1] for p in embedding.parts()] == widths
            (loaded if fits else skipped)[embedding.name] = embedding
        loaded = {k: loaded[k] for k in sorted(loaded, key=str.lower)}
        # updated in place: extensions keep references to these dicts (A1111's word_embeddings)
        self.word_embeddings.clear()
        self.word_embeddings.update(loaded)
        self.skipped_embeddings.clear()
        self.skipped_embeddings.update(skipped)
        self._rebuild(model)

    def _rebuild(self, model) -> None:
        """The per-model derived data: the job's vectors on the model's device, A1111's ids_lookup, the names'
        token ids cached for the tokenizers (so the first prompt does not tokenize a thousand names)."""
        self.version += 1
        self.ids_lookup.clear()
        vectors = {}
        device = getattr(model, "device", None)
        for name, embedding in self.word_embeddings.items():
            parts = [p.to(device) if device is not None else p for p in embedding.parts()]
            vectors[name] = parts[0] if len(parts) == 1 else parts
        if model is not None:
            for tokenizer in model.tokenizers:
                conditioning.name_ids(tokenizer, self.word_embeddings)
            first = conditioning.name_ids(model.tokenizers[0], ())
            for name, embedding in self.word_embeddings.items():
                ids = first.get(name)
                if ids:
                    self.ids_lookup.setdefault(ids[0], []).append((ids, embedding))
            for entries in self.ids_lookup.values():
                entries.sort(key=lambda item: -len(item[0]))
        self._job = JobEmbeddings(vectors, self.shorthash_of)
        self._counter_lookup = None
        if self.word_embeddings or self.skipped_embeddings:
            log.info("Textual inversion embeddings loaded(%d): %s", len(self.word_embeddings),
                     ", ".join(self.word_embeddings))
            if self.skipped_embeddings:
                log.info("Textual inversion embeddings skipped(%d): %s", len(self.skipped_embeddings),
                         ", ".join(self.skipped_embeddings))

    # --- registering by hand (A1111's API, used by extensions) --------------------------------------------------
    def register_embedding(self, embedding: Embedding, model=None) -> Embedding:
        return self.register_embedding_by_name(embedding, model, embedding.name)

    def register_embedding_by_name(self, embedding: Embedding | None, model, name: str):
        """Adds (or with None removes) an embedding under `name` for the current model, until the next rescan."""
        with self._lock:
            if embedding is None:
                self.word_embeddings.pop(name, None)
            else:
                self.word_embeddings[name] = embedding
            self._rebuild(self.model)
            return embedding

    # --- what the rest of the program reads ---------------------------------------------------------------------
    def shorthash_of(self, name: str) -> str | None:
        embedding = self.word_embeddings.get(name)
        return embedding.shorthash if embedding is not None else None

    def for_job(self, model, hashes_in_infotext: bool = True) -> JobEmbeddings:
        """The embeddings for a job on `model`: rescanned first if a folder changed, re-sorted if the model
        changed. Never raises: a problem is logged and the job gets what loaded."""
        try:
            with self._lock:
                if self.model is not model:
                    self._model_ref = weakref.ref(model)
                self.load_textual_inversion_embeddings()
                job = self._job
        except Exception:  # pragma: no cover - a scan failing as a whole (a folder vanishing mid-walk)
            log.exception("textual inversion embeddings could not be scanned")
            job = self._job
        return job if hashes_in_infotext else JobEmbeddings(job.vectors, None)

    def find_embedding_at_position(self, tokens: list[int], offset: int):
        """A1111's lookup: (embedding, number of ids its name takes) at `offset`, or (None, None)."""
        for ids, embedding in self.ids_lookup.get(tokens[offset], ()):
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None

    def token_counter_lookup(self, model):
        """The lookup the prompt token counter passes to prompt_chunks.token_count (first text encoder): a
        multi-vector embedding counts as its vectors. Cached per model and database version."""
        with self._lock:
            if self.model is not model:
                self._model_ref = weakref.ref(model)
                self.load_textual_inversion_embeddings()
            key = (id(model), self.version)
            if self._counter_lookup is None or self._counter_lookup[0] != key:
                width = _widths(model)[0]
                self._counter_lookup = (key, conditioning.embedding_lookup(model.tokenizers[0], width,
                                                                           self._job.vectors))
            return self._counter_lookup[1]

    def describe(self) -> dict:
        """/sdapi/v1/embeddings: {"loaded": {name: info}, "skipped": {name: info}}."""
        with self._lock:
            self.load_textual_inversion_embeddings()
            return {"loaded": {n: e.info() for n, e in self.word_embeddings.items()},
                    "skipped": {n: e.info() for n, e in self.skipped_embeddings.items()}}

