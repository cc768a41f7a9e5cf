"""The peak resident memory of this process, for benches that run each side in a child process.

Read from /proc/self/status (VmHWM) rather than getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a
child started by a parent that had grown large (say, after building 4.5 GB of random weights) reports the parent's
peak as its own. VmHWM belongs to the process's current address space, which exec replaces."""
from __future__ import annotations

import resource


def status_mib(field: str) -> float:
    """A size field of /proc/self/status (VmRSS, VmHWM, ...) in MiB; KeyError where the system has no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    raise KeyError(field)


def peak_rss_mib() -> float:
    try:
        return status_mib("VmHWM")
    except KeyError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
