"""Listing files the way A1111's helpers do (natural order, hidden ones skipped); shared and modelloader use it."""
from __future__ import annotations

import os
import re

_DIGITS = re.compile("([0-9]+)")


def natural_sort_key(s: str, regex=_DIGITS) -> list:
    """'img2' before 'img10'."""
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def listfiles(dirname: str) -> list[str]:
    """The files (not folders, not hidden) in `dirname`, full paths, sorted by name."""
    names = [os.path.join(dirname, x) for x in sorted(os.listdir(dirname), key=str.lower) if not x.startswith(".")]
    return [f for f in names if os.path.isfile(f)]


def walk_files(path: str, allowed_extensions=None):
    """Every file under `path` (following links, natural order); `allowed_extensions` like {".png", ".jpg"}.
    Folders whose name starts with a dot are skipped."""
    if not os.path.exists(path):
        return
    allowed = {e.lower() for e in allowed_extensions} if allowed_extensions is not None else None
    for root, _dirs, files in sorted(os.walk(path, followlinks=True), key=lambda x: natural_sort_key(x[0])):
        rel = os.path.relpath(root, path)
        if any(part.startswith(".") for part in rel.split(os.sep) if part not in (".", "")):
            continue
        for filename in sorted(files, key=natural_sort_key):
            if allowed is not None and os.path.splitext(filename)[1].lower() not in allowed:
                continue
            yield os.path.join(root, filename)
