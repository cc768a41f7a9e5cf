"""The peak resident memory of this process, for benches that run each side in a child process.

Read from /proc/self/status (VmHWM) rather than getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a
child started by a parent that had grown large (say, after building 4.5 GB of random weights) reports the parent's
peak as its own. VmHWM belongs to the process's current address space, which exec replaces."""
from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
