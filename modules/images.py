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


def read_info(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """An image's infotext and its other text fields, for PNG Info in the UI and /sdapi/v1/png-info alike.

    The infotext is where A1111 puts it: the PNG text chunk "parameters", else the EXIF UserComment (JPEG and WebP
    saves), else a JPEG/GIF comment. The fields are the image's other string-valued `info` entries."""
    info = getattr(image, "info", None) or {}
    items = {k: v for k, v in info.items() if isinstance(v, str) and k != "parameters"}
    text = info.get("parameters")
    if text is None and "exif" in info:
        text = _exif_user_comment(image) or None
    if text is None and isinstance(info.get("comment"), bytes):
        text = info["comment"].decode("utf-8", errors="replace") or None
    return text, items


_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
# EXIF UserComment starts with an 8-byte character code (EXIF 2.3, 4.6.5); A1111 writes UNICODE (UTF-16 big-endian)
_COMMENT_CODES = ((b"UNICODE\x00", "utf-16-be"), (b"ASCII\x00\x00\x00", "ascii"), (b"\x00" * 8, "utf-8"))


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # a malformed EXIF block is an image without infotext, not an error
        return None
    if isinstance(raw, bytes):
        for prefix, encoding in _COMMENT_CODES:
            if raw.startswith(prefix):
                return raw[len(prefix):].decode(encoding, errors="replace")
        return raw.decode("utf-8", errors="replace")
    return raw


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
