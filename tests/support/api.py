"""Talking to the real server's /sdapi/v1 the way API clients do."""
from __future__ import annotations

import base64
import io

import requests
from PIL import Image


def txt2img(server, **fields):
    body = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 11, **fields}
    return requests.post(server.api("txt2img"), json=body, timeout=120)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))
