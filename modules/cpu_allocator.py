"""glibc's allocator told to keep freed memory for reuse, for CPU generation.

A UNet step on the CPU allocates and frees hundreds of activation tensors of 1–30 MB. glibc serves blocks above its
mmap threshold with fresh mappings and gives them back on free, so every step pays page faults to zero the same
memory again (A1111's webui.sh preloads tcmalloc for the same reason). Raising the mmap threshold to its maximum
(32 MiB) and the trim threshold to 1 GiB keeps those blocks in the heap. Measured on SD 1.5 shapes at 512², bf16,
2 cores (docs/PERFORMANCE.md): UNet step 3.53 → 3.25 s. Freed memory stays with the process, so its resident size
after a generation stays near its peak (the peak itself does not rise).

Only where the C library is glibc (Linux); elsewhere, or under another allocator (LD_PRELOAD tcmalloc), nothing
changes.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("sd.devices")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2 ** 20                  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 2 ** 30

_done = False
_libc = None


def _glibc():
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.mallopt.argtypes, _libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _libc.malloc_trim.argtypes, _libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def keep_freed_memory() -> bool:
    """Applies the thresholds once per process; True when glibc took them."""
    global _done
    if _done:
        return True
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _done:
        log.debug("mallopt refused the thresholds; the allocator keeps its defaults")
    return _done


def give_back() -> None:
    """Returns the heap's free memory to the system (glibc's malloc_trim). Called after a checkpoint load: its
    one-tensor-at-a-time read buffers (lazy_weights.py) would otherwise stay with the process (~190 MB for SD 1.5)."""
    if _done:
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(0)
