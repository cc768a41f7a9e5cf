"""Localization files in A1111's format: every localizations/*.json and extensions/*/localizations/*.json.

A file is one flat JSON object mapping English UI text to its translation, with an optional ``"rtl": true``.
The name of a localization is the file's stem; "None" means English. Files are read when asked for (and re-read
when they change on disk), so a pack dropped into the folder shows up without a restart. A file that does not parse
is skipped and reported with its path, line and column; the rest keep working.

The translating itself happens in the browser (modules/ui/localization.js): it swaps exact English strings for
translations in what is displayed, so the values sent back to the server stay English.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sd.localization")

ENGLISH = "None"


@dataclass(frozen=True)
class LoadError:
    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


@dataclass(frozen=True)
class Localization:
    name: str
    path: Path
    translations: dict[str, str]
    rtl: bool = False


def _last_wins(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json's default already keeps the last of duplicate keys; saying so here keeps that promise if the default changes.
    result: dict[str, object] = {}
    for key, value in pairs:
        result[key] = value
    return result


def parse(path: Path, text: str) -> Localization:
    """Parses one file; raises LoadError-carrying ValueError (see `load_file`) on bad JSON or a wrong shape."""
    data = json.loads(text, object_pairs_hook=_last_wins)
    if not isinstance(data, dict):
        raise ValueError("a localization file must hold one JSON object (English text → translation)")
    rtl = data.pop("rtl", False) is True
    # Non-string values are not translations (some packs carry metadata); they are left out, not fatal.
    translations = {k: v for k, v in data.items() if isinstance(v, str)}
    return Localization(path.stem, path, translations, rtl)


def load_file(path: Path) -> Localization | LoadError:
    try:
        text = path.read_text(encoding="utf-8-sig")  # some editors write a BOM
    except (OSError, UnicodeDecodeError) as exc:
        return LoadError(path, 1, 1, f"cannot read: {exc}")
    try:
        return parse(path, text)
    except json.JSONDecodeError as exc:
        return LoadError(path, exc.lineno, exc.colno, exc.msg)
    except ValueError as exc:
        return LoadError(path, 1, 1, str(exc))


class Localizations:
    """The localization files found in `dirs` (the localizations folder) and in each extension's localizations/."""

    def __init__(self, dirs: list[Path], extension_dirs: list[Path] = ()):
        self.dirs = [Path(d) for d in dirs]
        self.extension_dirs = [Path(d) for d in extension_dirs]
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[float, int, Localization | LoadError]] = {}
        self._reported: set[tuple[Path, float]] = set()

    def files(self) -> list[Path]:
        """All candidate files, in load order: a later file with the same stem replaces an earlier one."""
        found: list[Path] = []
        for d in self.dirs:
            if d.is_dir():
                found += sorted(d.glob("*.json"))
        for ext_root in self.extension_dirs:
            if ext_root.is_dir():
                for ext in sorted(p for p in ext_root.iterdir() if p.is_dir()):
                    loc = ext / "localizations"
                    if loc.is_dir():
                        found += sorted(loc.glob("*.json"))
        return found

    def _load(self, path: Path) -> Localization | LoadError:
        try:
            st = path.stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError:
            stamp = (0.0, 0)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[:2] == stamp:
                return cached[2]
        result = load_file(path)
        with self._lock:
            self._cache[path] = (*stamp, result)
            if isinstance(result, LoadError) and (path, stamp[0]) not in self._reported:
                self._reported.add((path, stamp[0]))
                log.error("localization file skipped: %s", result)
        return result

    def scan(self) -> tuple[dict[str, Localization], list[LoadError]]:
        found: dict[str, Localization] = {}
        errors: list[LoadError] = []
        for path in self.files():
            result = self._load(path)
            if isinstance(result, LoadError):
                errors.append(result)
            else:
                found[result.name] = result
        return found, errors

    def names(self) -> list[str]:
        return sorted(self.scan()[0], key=str.lower)

    def choices(self) -> list[str]:
        """What Settings → Localization offers: "None" (English) and every file stem."""
        return [ENGLISH, *self.names()]

    def errors(self) -> list[LoadError]:
        return self.scan()[1]

    def get(self, name: str) -> Localization | None:
        if not name or name == ENGLISH:
            return None
        return self.scan()[0].get(name)
