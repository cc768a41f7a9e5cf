"""What the API's route modules share: A1111's error body, and images in and out as base64 PNG."""
from __future__ import annotations

import base64
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from modules import images
from modules.engine.image_decode import decode_base64_image


def error_response(status: int, error: str, detail: str, body: Any = None, errors: Any = None) -> JSONResponse:
    """A1111's error shape: {error, detail, body, errors}."""
    return JSONResponse(status_code=status, content=jsonable_encoder(
        {"error": error, "detail": detail, "body": body, "errors": errors}))


def encode_png(image, infotext: str | None) -> str:
    return base64.b64encode(images.png_bytes(image, infotext)).decode("ascii")


def decode_image(data: str, field_name: str = "image"):
    """base64 or data: URI → PIL image; a clear error naming the field otherwise."""
    return decode_base64_image(data, field_name)
