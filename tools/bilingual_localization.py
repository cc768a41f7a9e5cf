"""Writes a bilingual localization ("提示词/Prompt") from a one-language pack: `python -m tools.bilingual_localization
localizations/zh_CN.json localizations/zh_CN-en.json`.

Messages with {placeholders} keep the translation alone (the English half would repeat paths and numbers), and so do
entries that map to themselves (names, icons)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PLACEHOLDER = re.compile(r"\{[A-Za-z0-9_]*\}")


def bilingual(translations: dict) -> dict:
    out = {}
    for english, translated in translations.items():
        if not isinstance(translated, str) or translated == english or PLACEHOLDER.search(english):
            out[english] = translated
        else:
            out[english] = f"{translated}/{english}"
    return out


def main(argv: list[str]) -> None:
    source, target = Path(argv[0]), Path(argv[1])
    data = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(json.dumps(bilingual(data), ensure_ascii=False, indent=4) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
