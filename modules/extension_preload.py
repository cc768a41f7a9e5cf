"""Extensions' preload.py: let them add command-line flags before the flags are parsed (A1111 §1.3).

Standard library only (the launcher parses flags before the venv has packages). Order as A1111: the enabled user
extensions (config.json's disabled_extensions / disable_all_extensions and the flags decide), then all builtins;
none with --safe-mode. Each preload.py is executed once per process and its ``preload(parser)`` is called on every
parser we build; an exception is recorded on the extension (``errors["preload"]``) and parsing goes on.

So that a flag of a disabled extension does not stop start-up, the flags a listed-but-off extension's preload.py
would add are read from its source (string constants starting with ``--``; its code is not run).
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import traceback
from pathlib import Path

from modules import extensions, paths

_modules: dict[str, tuple[float, object]] = {}   # preload.py path → (mtime, module): executed once per process


def _load(path: str):
    mtime = os.path.getmtime(path)
    cached = _modules.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    spec = importlib.util.spec_from_file_location("preload", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _modules[path] = (mtime, module)
    return module


def flags_in_source(path: str) -> set[str]:
    """``--flags`` named as string constants in a preload.py, without running it."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return set()
    return {n.value.split("=", 1)[0] for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("--")
            and len(n.value) > 2 and " " not in n.value}


def apply(parser: argparse.ArgumentParser, base: argparse.Namespace,
          builtin_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Run the preloads on ``parser``; returns {flag: extension name} for flags of extensions that are off (or
    whose preload failed), which the caller ignores with a warning instead of refusing."""
    p = paths.from_args(base)
    exts = extensions.list_from_args(base, p.extensions, builtin_dir or extensions.BUILTIN_DIR, p.settings_file)
    foreign: dict[str, str] = {}
    safe = bool(getattr(base, "safe_mode", False))
    user = [e for e in exts if not e.is_builtin]
    builtin = [e for e in exts if e.is_builtin]
    for ext in user + builtin:
        script = os.path.join(ext.path, "preload.py")
        if not os.path.isfile(script):
            continue
        if not safe and (ext.enabled or ext.is_builtin):   # A1111 filters user extensions only
            try:
                module = _load(script)
                preload = getattr(module, "preload", None)
                if preload is not None:
                    preload(parser)
                ext.errors.pop("preload", None)
                continue
            except Exception:   # noqa: BLE001 — a third party's code: report, go on (A1111 does the same)
                ext.report_error("preload", traceback.format_exc())
        for flag in flags_in_source(script):
            foreign.setdefault(flag, ext.name)
    return foreign
