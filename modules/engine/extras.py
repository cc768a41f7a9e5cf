"""The Extras tab's resize/upscale (A1111's "extras"): scale by or scale to, two upscalers blended by visibility.

An upscaler is one of Pillow's Lanczos and Nearest ("None" leaves the size alone) or a model upscaler by name
(`models`: modules.models.upscaler_models.JobUpscalers): the model enlarges the image (as many passes as the scale
needs, tiled), then a Lanczos resize gives the exact size, as A1111 does.
"""
from __future__ import annotations

from PIL import Image

from modules.engine.params import ParamError

UPSCALERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


def _resolve(name: str, field_name: str, models):
    """A Pillow filter, None (the "None" upscaler), or a model upscaler."""
    if name in UPSCALERS:
        return UPSCALERS[name]
    model = models.find(name) if models is not None else None
    if model is None:
        choices = list(UPSCALERS) + (models.names() if models is not None else [])
        raise ParamError(field_name, f"unknown upscaler {name!r}; choose one of {choices}")
    return model


def _apply(upscaler, image: Image.Image, size: tuple[int, int], models, state) -> Image.Image:
    if upscaler is None or isinstance(upscaler, (int, Image.Resampling)):
        return image.resize(size, upscaler or Image.Resampling.LANCZOS)
    scale = max(size[0] / image.width, size[1] / image.height)
    out = models.upscale(upscaler, image, scale, state)
    return out if out.size == size else out.resize(size, Image.Resampling.LANCZOS)


def target_size(image: Image.Image, resize_mode: int, scale: float, width: int, height: int) -> tuple[int, int]:
    if resize_mode == 1:
        if width <= 0 or height <= 0:
            raise ParamError("upscaling_resize_w", "scale-to needs upscaling_resize_w and upscaling_resize_h > 0")
        return width, height
    if resize_mode != 0:
        raise ParamError("resize_mode", f"must be 0 (scale by) or 1 (scale to), got {resize_mode!r}")
    if not 0 < scale <= 8:
        raise ParamError("upscaling_resize", f"must be above 0 and at most 8, got {scale!r}")
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def upscale(image: Image.Image, upscaler_1: str = "None", upscaler_2: str = "None", visibility_2: float = 0.0,
            resize_mode: int = 0, scale: float = 2.0, width: int = 512, height: int = 512,
            crop: bool = True, models=None, state=None) -> Image.Image:
    first, second = _resolve(upscaler_1, "upscaler_1", models), _resolve(upscaler_2, "upscaler_2", models)
    image = image.convert("RGB")
    if first is None and (second is None or visibility_2 <= 0):
        return image
    w, h = target_size(image, resize_mode, scale, width, height)
    fit_w, fit_h = w, h
    if resize_mode == 1 and crop:  # cover the frame, then cut the overflow
        ratio = max(w / image.width, h / image.height)
        fit_w, fit_h = round(image.width * ratio), round(image.height * ratio)
    out = _apply(first, image, (fit_w, fit_h), models, state)
    if second is not None and visibility_2 > 0:
        out = Image.blend(out, _apply(second, image, (fit_w, fit_h), models, state), min(visibility_2, 1.0))
    if (fit_w, fit_h) != (w, h):
        left, top = (fit_w - w) // 2, (fit_h - h) // 2
        out = out.crop((left, top, left + w, top + h))
    return out
