"""What the API's route modules share: A1111's error body, and images in and out as base64 PNG."""
from __future__ import annotations

import base64
import io
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from modules import images
from modules.engine.params import ParamError

MAX_IMAGE_PIXELS = 4096 * 4096


def error_response(status: int, error: str, detail: str, body: Any = None, errors: Any = None) -> JSONResponse:
    """A1111's error shape: {error, detail, body, errors}."""
    return JSONResponse(status_code=status, content=jsonable_encoder(
        {"error": error, "detail": detail, "body": body, "errors": errors}))


def encode_png(image, infotext: str | None) -> str:
    return base64.b64encode(images.png_bytes(image, infotext)).decode("ascii")


def decode_image(data: str, field_name: str = "image"):
    """base64 or data: URI → PIL image; a clear error naming the field otherwise."""
    from PIL import Image
    if not isinstance(data, str) or not data:
        raise ParamError(field_name, "must be a base64-encoded image or a data: URI")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ParamError(field_name, f"image too large ({image.width}x{image.height}); at most "
                                         f"{MAX_IMAGE_PIXELS} pixels")
        image.load()
        return image
    except ParamError:
        raise
    except Exception:
        raise ParamError(field_name, "is not a valid base64-encoded image") from None
