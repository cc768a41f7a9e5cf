"""The out-of-memory message suggests only what lowers memory in this web UI."""
from __future__ import annotations

import re

import pytest
import torch

from modules import cmd_args, devices
from modules.models.model_options import ModelOptions
from modules.ui.progress import error_message


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which error_message recognises by name (no CUDA needed here)."""


@pytest.mark.parametrize("exc", [MemoryError("cannot allocate 12 GiB"), OutOfMemoryError("CUDA out of memory")])
def test_out_of_memory_message_suggests_only_flags_that_lower_memory(exc, monkeypatch):
    message = error_message(exc)
    assert message.startswith("Out of memory: try a smaller width/height or batch size")
    assert str(exc) in message
    named = re.findall(r"--precision full|--[a-z-]+", message)
    assert set(named) >= {"--medvram", "--lowvram", "--tiled-vae", "--no-half", "--precision full"}
    for flag in named:
        assert flag.split()[0] in cmd_args.known_flags(), flag

    # The flags to start WITH install a memory mechanism (tests/unit/test_memory_flags.py shows each at work) ...
    assert ModelOptions.from_args(cmd_args.parse(["--medvram"], env={})).memory.mode_for(False) == "medvram"
    assert ModelOptions.from_args(cmd_args.parse(["--lowvram"], env={})).memory.mode_for(False) == "lowvram"
    assert cmd_args.parse(["--tiled-vae"], env={}).tiled_vae
    # ... and the ones to start WITHOUT halve the weights' bytes when left out on a GPU (fp16 instead of fp32).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # from_args only builds a torch.device
    assert devices.from_args(cmd_args.parse([], env={})).dtype == torch.float16
    for flag in ("--no-half", "--precision full"):
        assert devices.from_args(cmd_args.parse(flag.split(), env={})).dtype == torch.float32, flag
