"""A1111's `modules.safe`: loading .ckpt/.pt pickles without letting them run code.

A1111 checks pickles with its own restricted unpickler; ours is torch's (`weights_only=True`, as in
modules/models/safe_load.py), which accepts tensors and plain containers and refuses every other global. A refused
file raises ModelFileError naming the file and why (A1111 printed a warning and returned None). `unsafe_torch_load`
is the same safe loader: nothing here runs a pickle's code. torch.load itself is left alone.
"""
from __future__ import annotations

import os

import torch

from modules.models.safe_load import ModelFileError, load_error_reason


def load(filename, *args, **kwargs):
    """torch.load(filename, map_location=…) restricted to tensors and plain data; .safetensors files work too."""
    map_location = kwargs.pop("map_location", args[0] if args else None)
    path = os.fspath(filename) if isinstance(filename, (str, os.PathLike)) else filename
    try:
        if isinstance(path, str) and path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path, device=str(map_location or "cpu"))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # every library error becomes one line naming the file
        raise ModelFileError(f"{filename}: cannot be loaded: {load_error_reason(exc)}") from None


def load_with_extra(filename, extra_handler=None, *args, **kwargs):
    """A1111 lets a caller allow extra classes here; we allow none (the file must be tensors and plain data)."""
    return load(filename, *args, **kwargs)


unsafe_torch_load = load


class Extra:
    """A1111's context manager for allowing extra classes while loading; here it changes nothing."""

    def __init__(self, handler=None):
        self.handler = handler

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        return False
