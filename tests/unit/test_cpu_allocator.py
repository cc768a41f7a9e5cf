"""The allocator setting the server applies on the CPU (modules/cpu_allocator.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

MEASURE = """
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
if {tune}:
    from modules import cpu_allocator
    assert cpu_allocator.keep_freed_memory() and cpu_allocator.keep_freed_memory()
faults = []
for mib in (8, 8, 20, 20):      # a block, freed, asked for again: page faults of each touch of the new block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(mib << 20)
    ctypes.memset(p, 1, mib << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(p)
print(faults)
"""


def faults(tune: bool) -> list[int]:
    out = subprocess.run([sys.executable, "-c", MEASURE.format(tune=tune)], capture_output=True, text=True,
                         check=True)
    return eval(out.stdout.strip())  # noqa: S307 (our own subprocess's list of ints)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_is_reused_without_new_page_faults():
    """glibc's defaults map a block of 8 MiB afresh on the second request (its dynamic threshold only rises to the
    freed size, and a request of that size is still mapped); with the thresholds raised the second 8 MiB and the
    second 20 MiB come from the heap, already touched."""
    tuned = faults(True)
    assert tuned[1] < 100 and tuned[3] < 100, tuned
    assert faults(False)[1] > 1000            # the default this setting changes
