"""Prompt styles from styles.csv (A1111 format: name,prompt,negative_prompt), applied with the {prompt} rule."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from modules import atomic_file
from modules.engine.params import ParamError
from modules.engine.prompt_parser import apply_style


@dataclass
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""

    def to_api(self) -> dict:
        return {"name": self.name, "prompt": self.prompt, "negative_prompt": self.negative_prompt}


class StyleDatabase:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.styles: dict[str, Style] = {}
        self.reload()

    def reload(self) -> None:
        self.styles = {}
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f, skipinitialspace=True):
                name = (row.get("name") or "").strip()
                if name:
                    self.styles[name] = Style(name, row.get("prompt") or "", row.get("negative_prompt") or "")

    def apply(self, prompt: str, negative_prompt: str, names: list[str]) -> tuple[str, str]:
        unknown = [n for n in names if n not in self.styles]
        if unknown:
            raise ParamError("styles", f"unknown style(s) {unknown}; styles.csv has {list(self.styles)}")
        for name in names:
            style = self.styles[name]
            prompt = apply_style(prompt, style.prompt)
            negative_prompt = apply_style(negative_prompt, style.negative_prompt)
        return prompt, negative_prompt

    def save(self, styles: list[Style]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file.replacing(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["name", "prompt", "negative_prompt"])
                for s in styles:
                    writer.writerow([s.name, s.prompt, s.negative_prompt])
        self.reload()
