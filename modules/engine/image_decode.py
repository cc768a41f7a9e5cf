"""Images that arrive as text (base64 or data: URIs), decoded with one size limit and errors that name the field.
The API's request images and ControlNet's unit images both come this way."""
from __future__ import annotations

import base64
import binascii
import io

from modules.engine.params import ParamError

MAX_IMAGE_PIXELS = 4096 * 4096


def decode_base64_image(data: str, field_name: str = "image"):
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
    except (OSError, ValueError, binascii.Error, Image.DecompressionBombError):
        raise ParamError(field_name, "is not a valid base64-encoded image") from None
