"""Write a file so that nobody ever sees it half written, with the permissions a plain open() would give it.

The writer gets a temporary path in the target's folder; when it returns, the file is synced (unless asked not to)
and moved onto the target with os.replace (atomic on one file system); when it raises, the temporary file is
removed and the target is untouched. The temporary file is created with mode 0o666 minus the umask, and that mode
is put back before the move: tempfile.mkstemp creates 0o600 files, and some writers (safetensors' save_file) replace
the file with their own 0o600 one, which would leave generated images and models readable by their owner only.
"""
from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(target: str | os.PathLike, sync: bool = True) -> Iterator[Path]:
    """``with replacing(path) as tmp: write(tmp)`` — ``path`` appears complete or not at all. ``sync=False`` skips
    the fsync (for files written often, such as generated images, where a few ms each matter more than surviving a
    power cut)."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
