"""GenerationParams ↔ a job payload: plain data (no live objects), images as PNG bytes, so a job can be queued,
logged, or shipped to another process; `dumps`/`loads` give the JSON form (bytes as base64)."""
from __future__ import annotations

import base64
import io
import json

from PIL import Image

from modules.engine.params import FIELDS, GenerationParams


def image_to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_to_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def to_payload(params: GenerationParams) -> dict:
    out = {f.name: getattr(params, f.name) for f in FIELDS}
    out["init_images"] = [image_to_png(im) for im in params.init_images]
    out["mask"] = image_to_png(params.mask) if params.mask is not None else None
    out["mode"] = params.mode
    return out


def from_payload(data: dict) -> GenerationParams:
    values = dict(data)
    values["init_images"] = [png_to_image(b) for b in values.get("init_images") or []]
    values["mask"] = png_to_image(values["mask"]) if values.get("mask") is not None else None
    return GenerationParams(**values)


def _encode(value):
    if isinstance(value, bytes):
        return {"__png_base64__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__png_base64__"}:
            return base64.b64decode(value["__png_base64__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def dumps(payload: dict) -> str:
    return json.dumps(_encode(payload))


def loads(text: str) -> dict:
    return _decode(json.loads(text))
