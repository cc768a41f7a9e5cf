"""Reading model files without letting them run code.

.ckpt/.pt/.pth/.bin files are Python pickles: a plain torch.load would execute whatever the file's author put in it.
We only ever use torch.load(weights_only=True), whose restricted unpickler accepts tensors and plain containers and
refuses every other global.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class ModelFileError(Exception):
    """A model file that cannot be used; the message names the file and the reason."""


def load_state_dict(path: str | os.PathLike, device: str = "cpu", nested: bool = False) -> dict[str, torch.Tensor]:
    """The file's tensors. `nested`: dicts of tensors inside the top-level dict are kept as "outer.inner" keys
    (IP-Adapter .bin files are {"image_proj": {...}, "ip_adapter": {...}}); otherwise only top-level tensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(str(path), device=device)
        elif name.endswith(PICKLE_SUFFIXES):
            sd = torch.load(str(path), map_location=device, weights_only=True, mmap=_is_zip(path))
        else:
            raise ModelFileError(f"{path}: unsupported model file type (use .safetensors, .ckpt, .pt or .pth)")
    except ModelFileError:
        raise
    except Exception as exc:  # every library error becomes one readable line naming the file
        raise ModelFileError(f"{path}: cannot be read as a model file: {load_error_reason(exc)}") from None
    return _unwrap(_flatten(sd) if nested else sd, path)


def load_pickle(path: str | os.PathLike, device: str = "cpu"):
    """Everything a .pt/.ckpt/.pth/.bin pickle holds (dicts, lists, numbers, strings, tensors), through the same
    restricted unpickler: for files whose non-tensor entries matter (an embedding's step, a hypernetwork's layer
    structure)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    if not path.name.lower().endswith(PICKLE_SUFFIXES):
        raise ModelFileError(f"{path}: not a pickle file (expected {', '.join(PICKLE_SUFFIXES)})")
    try:
        return torch.load(str(path), map_location=device, weights_only=True, mmap=_is_zip(path))
    except Exception as exc:  # every library error becomes one readable line naming the file
        raise ModelFileError(f"{path}: cannot be read as a model file: {load_error_reason(exc)}") from None


def _flatten(obj):
    """One level: {"image_proj": {"proj.weight": t}} -> {"image_proj.proj.weight": t}; _unwrap's wrappers stay."""
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict) and k not in ("state_dict", "model", "module"):
            out.update({f"{k}.{ik}": iv for ik, iv in v.items()})
        else:
            out[k] = v
    return out


def load_error_reason(exc: Exception) -> str:
    """One line for why a file could not be loaded; a pickle the restricted unpickler refused says so."""
    text = str(exc)
    reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "weights_only" in text.lower() or "Unsupported global" in text:
        culprit = re.search(r"Unsupported global: GLOBAL \S+|Unsupported operand \S+|Trying to call reduce for \S+",
                            text)
        reason = ("it contains Python objects other than tensors, which could run code when loaded, so it was "
                  "refused" + (f" ({culprit.group(0).strip()[:160]})" if culprit else ""))
    return reason


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """Checkpoints often nest the weights under "state_dict" (Lightning) or "model"; return the flat tensor dict."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict) and len(obj) < 20:
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ModelFileError(f"{path}: holds no tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{path}: holds no tensors")
    return tensors
