"""A checkpoint's tensors read one at a time, each straight into the precision it will run in.

Why our own reader rather than safetensors' `load_file`: `load_file` materialises every tensor of the file in the
file's precision at once (4.3 GB for an fp32 SD 1.5 checkpoint), and the web UI then casts the UNet and text
encoder to bf16 — two copies at the peak (issue #21 measured 6.6 GB peak RSS in the bf16 default). safetensors'
`safe_open` reads tensor by tensor but through a mapping of the whole file, and every page it touches counts in the
process's resident memory until the file is closed. Here:

* a tensor whose stored dtype is the one it will run in is a view into a private (copy-on-write) memory mapping of
  the file: mapped, not copied — the page cache holds the only copy, and in-place writes (LoRA patching) stay in the
  process;
* a tensor that needs a cast is read with `os.pread` (page cache, not the process's memory) into a buffer of its own
  and cast at once, so only one tensor of the source precision exists at a time.

`LazyStateDict` is a read-only mapping that reads on every access (nothing is cached: the model keeps what it
needs), so the spec detection that only looks at shapes and the diffusers key conversions work on it unchanged.
The precision of each key is set by `set_dtypes` before the conversion reads it.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
if hasattr(torch, "float8_e4m3fn"):
    _DTYPES.update({"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2})

MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFormatError(ValueError):
    pass


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(the header's tensor table and metadata, the offset where the data starts)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsFormatError("file too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise SafetensorsFormatError(f"header of {n} bytes is too large")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise SafetensorsFormatError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header is not a JSON object")
    return header, 8 + n


class LazyStateDict(Mapping):
    """The tensors of one .safetensors file, read on access (see the module's doc)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        header, self._data_start = read_header(self.path)
        self.metadata = header.pop("__metadata__", None) or {}
        self._size = self.path.stat().st_size
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, entry in header.items():
            try:
                dtype = _DTYPES[entry["dtype"]]
                begin, end = (int(x) for x in entry["data_offsets"])
                shape = tuple(int(s) for s in entry["shape"])
            except (KeyError, TypeError, ValueError):
                raise SafetensorsFormatError(f"tensor {key!r}: unreadable header entry") from None
            if not 0 <= begin <= end or self._data_start + end > self._size:
                raise SafetensorsFormatError(f"tensor {key!r}: data outside the file")
            self._entries[key] = (dtype, shape, begin, end)
        self._dtype_for: Callable[[str], torch.dtype | None] = lambda _key: None
        self._map: mmap.mmap | None = None
        self._scratch: torch.Tensor | None = None

    # --- the Mapping protocol ------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[key]
        target = self._dtype_for(key) if dtype.is_floating_point else None
        count = (end - begin) // dtype.itemsize if dtype.itemsize else 0
        if count == 0:
            return torch.empty(shape, dtype=target or dtype)
        if target is None or target == dtype:
            return self._mapped(begin, dtype, count).view(shape)
        nbytes = end - begin
        if self._scratch is None or self._scratch.numel() < nbytes:
            # one buffer reused for every cast: fresh memory for each tensor would cost a page fault per 4 KiB
            self._scratch = torch.empty(nbytes, dtype=torch.uint8)
        view = self._scratch[:nbytes]
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._data_start + begin)
            if f.readinto(memoryview(view.numpy())) != nbytes:
                raise SafetensorsFormatError(f"tensor {key!r}: the file ends inside its data")
        return view.view(dtype).view(shape).to(target)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    # --- ours ----------------------------------------------------------------------------------------------------
    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def stored_dtype(self, key: str) -> torch.dtype:
        return self._entries[key][0]

    def set_dtypes(self, dtype_for: Callable[[str], torch.dtype | None]) -> None:
        """`dtype_for(key)`: the precision floating-point tensor `key` is returned in (None: as stored)."""
        self._dtype_for = dtype_for

    def _mapped(self, begin: int, dtype: torch.dtype, count: int) -> torch.Tensor:
        if self._map is None:
            with open(self.path, "rb") as f:
                # ACCESS_COPY: a private mapping: writes (in-place LoRA patches) never reach the file
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        offset = self._data_start + begin
        if offset % dtype.itemsize:  # torch needs element-aligned data; rare in files written by safetensors
            return torch.frombuffer(bytearray(self._map[offset:offset + count * dtype.itemsize]), dtype=dtype)
        return torch.frombuffer(self._map, dtype=dtype, count=count, offset=offset)

    def release(self) -> None:
        """Drops this object's reference to the mapping; tensors handed out keep it alive while they live."""
        self._map = None
        self._scratch = None


def component_dtypes(unet_dtype: torch.dtype, vae_dtype: torch.dtype,
                     vae_prefixes: tuple[str, ...] = ("first_stage_model.",)) -> Callable[[str], torch.dtype]:
    """The precision for a key of an LDM single-file checkpoint: the VAE's keys `vae_dtype`, all else `unet_dtype`
    (UNet and text encoders run in the same precision in this web UI)."""
    def dtype_for(key: str) -> torch.dtype:
        return vae_dtype if key.startswith(vae_prefixes) else unet_dtype
    return dtype_for
