"""Saving images the way A1111 names them: outputs/<kind>-images/YYYY-MM-DD/NNNNN-SEED-prompt.png, with infotext."""
from __future__ import annotations

import datetime
import io
import os
import re
import threading
from pathlib import Path

from PIL import Image, PngImagePlugin

from modules import atomic_file

_save_lock = threading.Lock()
_INVALID = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
MAX_NAME = 128


def sanitize(text: str, limit: int = 100) -> str:
    text = _INVALID.sub("", text.replace("\n", " ")).strip().strip(".")
    text = re.sub(r"\s+", " ", text)
    return text[:limit].rstrip(" .")


def png_bytes(image: Image.Image, infotext: str | None) -> bytes:
    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def read_infotext(image: Image.Image) -> str | None:
    return image.info.get("parameters") if hasattr(image, "info") else None


def next_number(folder: Path) -> int:
    best = -1
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = re.match(r"(\d{5,})-", entry.name)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1


def save_image(image: Image.Image, outdir: Path, seed: int, prompt: str, infotext: str | None,
               date_dirs: bool = True) -> Path:
    """Writes atomically (temp file + rename) so that an interrupted save never leaves a broken PNG."""
    folder = outdir / datetime.date.today().isoformat() if date_dirs else outdir
    folder.mkdir(parents=True, exist_ok=True)
    data = png_bytes(image, infotext)
    with _save_lock:
        number = next_number(folder)
        stem = f"{number:05}-{seed}"
        words = sanitize(prompt)
        if words:
            stem = f"{stem}-{words}"[:MAX_NAME]
        path = folder / f"{stem}.png"
        with atomic_file.replacing(path, sync=False) as tmp:
            tmp.write_bytes(data)
    return path
