"""Loading an annotator network from its weight file strictly, keeping a few loaded, and running one on the
ControlNet device.

Strict because a file of another network (or a damaged download) must fail with the keys that do not fit, not run
with random weights. Files are pickles, so they are read only through modules.models.safe_load (the restricted
unpickler). The cache holds the networks of the last few files (each 3–200 MB); a network lives on the CPU and is
moved to the device only for a run, under one lock, as the openpose detector does.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import torch

CACHE_SIZE = 4

_lock = threading.Lock()          # one run at a time: cached networks move between devices
_cache: OrderedDict[tuple, torch.nn.Module] = OrderedDict()


def load_strict(net: torch.nn.Module, path: str | Path, what: str, strip_prefix: str = "") -> torch.nn.Module:
    """`net` with the weights of `path`, float32, on the CPU, in eval mode. The file must hold exactly `net`'s
    tensors (same keys, same shapes); `strip_prefix` is removed from keys that start with it first (DataParallel's
    "module."). Raises ModelFileError naming the missing, unexpected and wrongly shaped keys."""
    from modules.models.safe_load import ModelFileError, load_state_dict
    state = load_state_dict(path)
    if strip_prefix:
        state = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v for k, v in state.items()}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ModelFileError(f"{path}: not the {what} network ({'; '.join(parts)})")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return net.float().eval().requires_grad_(False)


def cached(kind: str, path: str | Path, build: Callable[[Path], torch.nn.Module]) -> torch.nn.Module:
    """build(path) once per (kind, file as it is now); a changed or replaced file is loaded again. Call inside
    `on_device` (which holds the lock)."""
    path = Path(path)
    stat = path.stat()
    key = (kind, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    for old in [k for k in _cache if k[0] == kind]:   # one version of each network
        del _cache[old]
    _cache[key] = build(path)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return _cache[key]


@contextlib.contextmanager
def on_device(kind: str, path: str | Path, build: Callable[[Path], torch.nn.Module],
              device: torch.device | None = None) -> Iterator[tuple[torch.nn.Module, torch.device]]:
    """The cached network for `path`, moved to `device` (default: the ControlNet device) for the block and back to
    the CPU after it; runs hold one lock so two never move the same network at once."""
    if device is None:
        from modules import devices
        device = devices.get_device_for("controlnet")
    with _lock:
        net = cached(kind, path, build)
        try:
            net.to(device)
            with torch.no_grad():
                yield net, device
        finally:
            net.to("cpu")


def unload() -> None:
    """Forget every loaded network (memory back to the system)."""
    with _lock:
        _cache.clear()
