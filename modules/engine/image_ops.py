"""Pixel-space helpers for img2img and inpainting: A1111's four resize modes, mask preparation and the crop box of
"inpaint only masked". Pillow and numpy only."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def resize_image(mode: int, image: Image.Image, width: int, height: int,
                 resample=Image.Resampling.LANCZOS) -> Image.Image:
    """0 just resize (stretch), 1 crop and resize (fill the frame, crop the overflow), 2 resize and fill (fit
    inside, extend the edges' colours into the bars), 3 latent upscale (the caller resizes latents; here like 0)."""
    if mode in (0, 3):
        return image.resize((width, height), resample)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        scale_w = width if ratio > src_ratio else image.width * height // image.height
        scale_h = height if ratio <= src_ratio else image.height * width // image.width
        resized = image.resize((scale_w, scale_h), resample)
        left, top = (scale_w - width) // 2, (scale_h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    scale_w = width if ratio < src_ratio else image.width * height // image.height
    scale_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = image.resize((max(scale_w, 1), max(scale_h, 1)), resample)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - resized.width) // 2, (height - resized.height) // 2
    canvas.paste(resized, (left, top))
    # fill the bars by stretching the resized image's edge rows/columns outwards
    if top > 0:
        canvas.paste(resized.resize((width, top), box=(0, 0, resized.width, 0)), (0, 0))
        canvas.paste(resized.resize((width, height - top - resized.height),
                                    box=(0, resized.height, resized.width, resized.height)), (0, top + resized.height))
    if left > 0:
        canvas.paste(resized.resize((left, height), box=(0, 0, 0, resized.height)), (0, 0))
        canvas.paste(resized.resize((width - left - resized.width, height),
                                    box=(resized.width, 0, resized.width, resized.height)), (left + resized.width, 0))
    return canvas


def prepare_mask(mask: Image.Image, invert: bool, blur: int) -> Image.Image:
    """Grey-scale mask, white = repaint; alpha masks use their alpha channel."""
    if mask.mode in ("RGBA", "LA"):
        mask = mask.getchannel("A").point(lambda a: 255 if a > 0 else 0) if mask.getextrema()[-1][0] < 255 \
            else mask.convert("L")
    mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def masked_box(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The region "inpaint only masked" works on: the mask's bounding box plus padding, grown to the output's aspect
    ratio and clamped to the image."""
    arr = np.asarray(mask) > 0
    if not arr.any():
        return 0, 0, mask.width, mask.height
    ys, xs = np.nonzero(arr)
    x1, y1, x2, y2 = max(xs.min() - padding, 0), max(ys.min() - padding, 0), \
        min(xs.max() + 1 + padding, mask.width), min(ys.max() + 1 + padding, mask.height)
    ratio = width / height
    w, h = x2 - x1, y2 - y1
    if w / h < ratio:
        grow = int(h * ratio) - w
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
    else:
        grow = int(w / ratio) - h
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
    if x1 < 0:
        x2, x1 = min(x2 - x1, mask.width), 0
    if x2 > mask.width:
        x1, x2 = max(x1 - (x2 - mask.width), 0), mask.width
    if y1 < 0:
        y2, y1 = min(y2 - y1, mask.height), 0
    if y2 > mask.height:
        y1, y2 = max(y1 - (y2 - mask.height), 0), mask.height
    return int(x1), int(y1), int(x2), int(y2)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill' masked content: the masked area painted with heavily blurred surrounding colours."""
    img = np.asarray(image).astype(np.float32)
    keep = (np.asarray(mask.convert("L")) < 128)[..., None]
    if not keep.any():
        return Image.new("RGB", image.size, tuple(int(v) for v in img.reshape(-1, 3).mean(0)))
    out = np.where(keep, img, img[keep[..., 0]].mean(0))
    for radius in (64, 32, 16, 8, 4, 2, 1):
        blurred = np.asarray(Image.fromarray(out.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)))
        out = np.where(keep, img, blurred.astype(np.float32))
    return Image.fromarray(out.astype(np.uint8))


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Pastes the generated pixels into the original through the (blurred) mask: pixels where the mask is 0 stay
    exactly as they were."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask.convert("L"))


def outpaint_canvas(image: Image.Image, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0
                    ) -> tuple[Image.Image, Image.Image]:
    """Extends the canvas for outpainting: returns the bigger image (new area filled from the edges) and the mask of
    the new area, ready to inpaint."""
    width, height = image.width + left + right, image.height + top + bottom
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image, (left, top))
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (left, top, left + image.width, top + image.height))
    return fill_masked(canvas, mask), mask
