"""The out-of-memory message suggests only what lowers memory in this web UI."""
from __future__ import annotations

import re

import pytest
import torch

from modules import cmd_args, devices
from modules.ui.progress import error_message


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which error_message recognises by name (no CUDA needed here)."""


@pytest.mark.parametrize("exc", [MemoryError("cannot allocate 12 GiB"), OutOfMemoryError("CUDA out of memory")])
def test_out_of_memory_message_suggests_only_flags_that_lower_memory(exc, monkeypatch):
    message = error_message(exc)
    assert message.startswith("Out of memory: try a smaller width/height or batch size")
    assert str(exc) in message
    # A1111's memory flags are parsed for compatibility and ignored here: suggesting them would send users nowhere.
    assert "--medvram" not in message and "--lowvram" not in message

    # Every flag it names must be real and, when left out on a GPU, halve the weights' bytes (fp16 instead of fp32).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # from_args only builds a torch.device
    default = devices.from_args(cmd_args.parse([], env={}))
    assert default.dtype == torch.float16
    named = re.findall(r"--[a-z-]+(?: [a-z]+)?", message)
    assert named
    for flag in named:
        argv = flag.split()
        assert argv[0] in cmd_args.known_flags(), flag
        assert devices.from_args(cmd_args.parse(argv, env={})).dtype == torch.float32, flag
