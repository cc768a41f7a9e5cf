"""The output panel's Save and Zip buttons (A1111's behaviour): Save copies the selected image (else the first) to
outputs/save/ with its infotext and appends a row to outputs/save/log.csv; Zip packs the batch's images into one
.zip there. Both offer the written file for download."""
from __future__ import annotations

import csv
import threading
import time
import zipfile
from pathlib import Path

from modules import atomic_file, images

LOG_COLUMNS = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
               "sd_model_name", "sd_model_hash"]
_lock = threading.Lock()


def save_dir(outputs: Path) -> Path:
    return Path(outputs) / "save"


def result_summary(result) -> dict:
    """What Save and Zip need from a generation result, kept in the page's session state (no PIL images)."""
    return {"infotexts": list(result.infotexts), "seeds": list(result.seeds),
            "prompts": result.aligned(result.all_prompts),
            "negative_prompts": result.aligned(result.all_negative_prompts),
            "width": result.width, "height": result.height, "sampler": result.sampler_name,
            "cfg_scale": result.cfg_scale, "steps": result.steps, "model_name": result.sd_model_name,
            "model_hash": result.sd_model_hash}


def _pick(values: list, i: int, default=""):
    return values[i] if 0 <= i < len(values) else default


def save_one(outputs: Path, image_list: list, summary: dict, index: int) -> Path:
    """Save image `index` (the first when out of range) into outputs/save and log it; returns the file written."""
    if not image_list or not summary:
        raise ValueError("Save: generate an image first")
    if not 0 <= index < len(image_list):
        index = 0
    folder = save_dir(outputs)
    seed = _pick(summary.get("seeds", []), index, -1)
    prompt = _pick(summary.get("prompts", []), index)
    path = images.save_image(image_list[index], folder, seed, prompt,
                             _pick(summary.get("infotexts", []), index) or None, date_dirs=False)
    row = [prompt, seed, summary.get("width"), summary.get("height"), summary.get("sampler"),
           summary.get("cfg_scale"), summary.get("steps"), path.name,
           _pick(summary.get("negative_prompts", []), index), summary.get("model_name") or "",
           summary.get("model_hash") or ""]
    log_file = folder / "log.csv"
    with _lock:
        new = not log_file.exists() or log_file.stat().st_size == 0
        with open(log_file, "a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(LOG_COLUMNS)
            writer.writerow(row)
    return path


def zip_all(outputs: Path, image_list: list, summary: dict) -> Path:
    """All images of the batch, each a PNG with its infotext, in outputs/save/images-<time>.zip (written atomically)."""
    if not image_list:
        raise ValueError("Zip: generate images first")
    folder = save_dir(outputs)
    folder.mkdir(parents=True, exist_ok=True)
    infotexts, seeds = summary.get("infotexts", []), summary.get("seeds", [])
    with _lock:
        stem = f"images-{time.strftime('%Y%m%d-%H%M%S')}"
        target, n = folder / f"{stem}.zip", 1
        while target.exists():
            target, n = folder / f"{stem}-{n}.zip", n + 1
        with atomic_file.replacing(target, sync=False) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for i, image in enumerate(image_list):
                z.writestr(f"{i:05}-{_pick(seeds, i, 'image')}.png",
                           images.png_bytes(image, _pick(infotexts, i) or None))
    return target
