"""An extension's optional metadata.ini (A1111's format), parsed once into plain lists.

Standard library only. Sections read:
- ``[Extension]`` ``Requires=``: other extensions' canonical names, commas or spaces between them, ``a|b`` = either;
  only reported when missing (the extension still loads, as in A1111). ``Name=`` has no effect (A1111 ignores it).
- ``[scripts]`` (all scripts) and ``[scripts/<file>.py]``: ``Requires=``, ``Before=``, ``After=`` (script load order).
- ``[callbacks/<ext>/<file>.py/<category>[/<name>]]``: ``Before=``, ``After=`` (callback order); a section that does
  not start with the extension's own name is reported and ignored.
"""
from __future__ import annotations

import configparser
import os
import re

FILENAME = "metadata.ini"
ORDER_FIELDS = ("Requires", "Before", "After")


def parse_list(text: str) -> list[str]:
    """"a b, c|d  " → ["a", "b", "c|d"] (A1111 accepts both commas and blanks)."""
    return [x for x in re.split(r"[,\s]+", (text or "").strip()) if x]


class ExtensionMetadata:
    filename = FILENAME

    def __init__(self, path: str, canonical_name: str, loaded: dict | None = None):
        self.loaded = {} if loaded is None else loaded   # canonical name → extension, the listing's (shared dict)
        self.canonical_name = canonical_name.lower().strip()
        self.config = configparser.ConfigParser()
        self.errors: list[str] = []
        file = os.path.join(path, FILENAME)
        try:
            self.config.read(file, encoding="utf-8")   # a missing file is silently no sections
        except (configparser.Error, UnicodeDecodeError) as exc:
            self.errors.append(f"cannot read {file}: {exc}")
            self.config = configparser.ConfigParser()
        self.requires: list[str] = parse_list(self.config.get("Extension", "Requires", fallback="").lower())
        self.scripts: dict[str, dict[str, list[str]]] = {}
        for section in self.config.sections():
            if section == "scripts" or section.startswith("scripts/"):
                key = section[len("scripts/"):] if section != "scripts" else ""
                self.scripts[key] = {f.lower(): parse_list(self.config.get(section, f, fallback="").lower())
                                     for f in ORDER_FIELDS}
        self.callbacks: list[tuple[str, list[str], list[str]]] = []
        for section in self.config.sections():
            if not section.startswith("callbacks/"):
                continue
            name = section[len("callbacks/"):]
            if not name.startswith(self.canonical_name):
                self.errors.append(f"callback order section [{section}] names another extension than "
                                   f"{self.canonical_name!r}; ignored")
                continue
            self.callbacks.append((name, parse_list(self.config.get(section, "Before", fallback="")),
                                   parse_list(self.config.get(section, "After", fallback=""))))

    @staticmethod
    def parse_list(text: str) -> list[str]:
        return parse_list(text)

    def get_script_requirements(self, field: str, section: str, extra_section: str | None = None,
                                loaded: dict | None = None) -> list[str]:
        """A1111's reader: the ``field`` list of ``[section]`` plus ``[extra_section]``; for ``a|b`` the first
        alternative that is loaded (``loaded``: canonical names, default the current listing) else ``a|b`` as is."""
        text = self.config.get(section, field, fallback="")
        if extra_section:
            text = text + ", " + self.config.get(extra_section, field, fallback="")
        loaded = self.loaded if loaded is None else loaded
        result = []
        for item in parse_list(text.lower()):
            result.append(next((x for x in item.split("|") if x in loaded), item))
        return result

    def list_callback_order_instructions(self):
        """(callback name, before, after) per valid ``[callbacks/...]`` section (A1111's generator)."""
        yield from self.callbacks
