"""Sizes of control maps: the preprocessor's working size (§3.1), pixel perfect (§4.2) and the detected map resized
to the generation size by the unit's resize mode (§4.1 step 4), as sd-webui-controlnet does it.

The map resize is not a plain cv2.resize because control maps are not photos: a segmentation map or a pose drawing
must not get blended colours that mean another class or limb (nearest), and a binary 1-pixel edge map (canny,
scribble) must stay 1 pixel wide and binary after enlarging (non-maximum suppression, Otsu threshold, thinning).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
# Older names the extension still accepts (§1.5).
RESIZE_MODE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Envelope (Outer Fit)": "Resize and Fill",
}


def resize_mode_name(mode: str) -> str:
    """The canonical mode name; a ValueError naming the allowed values otherwise."""
    name = RESIZE_MODE_ALIASES.get(mode, mode)
    if name not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)} (got {mode!r})")
    return name


def to_rgb(image: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 from grey, 1-channel, RGB or RGBA (composited onto white, as the extension's HWC3 does)."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (got {image.dtype})")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be H×W, H×W×1, H×W×3 or H×W×4 (got shape {image.shape})")
    if image.shape[2] == 3:
        return image
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    return (image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def _pad_to_64(n: int) -> int:
    return int(np.ceil(n / 64.0) * 64 - n)


def preprocess_resize(image: np.ndarray, resolution: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """§3.1: scale so the short side is `resolution` (area when shrinking, cubic when enlarging, sizes rounded),
    then pad right and bottom with edge pixels to multiples of 64 (the networks' stride). Returns the padded image
    and a function that crops a result of the padded size back to the unpadded one. Grey input becomes RGB; other
    channel counts (RGBA for LaMa) are kept."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    k = float(resolution) / float(min(height, width))
    new_h, new_w = int(np.round(height * k)), int(np.round(width * k))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    if resized.ndim == 2:   # cv2 drops a single channel
        resized = resized[:, :, None]
    padded = np.pad(resized, [[0, _pad_to_64(new_h)], [0, _pad_to_64(new_w)], [0, 0]], mode="edge")

    def remove_pad(result: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(result[:new_h, :new_w])

    return np.ascontiguousarray(padded), remove_pad


def pixel_perfect_resolution(image_hw: tuple[int, int], target_hw: tuple[int, int], mode: str) -> int:
    """§4.2: the processor resolution at which the input's short side comes out exactly as large as it will be in
    the output (target = the base generation size, never the hires one)."""
    mode = resize_mode_name(mode)
    raw_h, raw_w = (int(v) for v in image_hw)
    target_h, target_w = (int(v) for v in target_hw)
    k0, k1 = target_h / raw_h, target_w / raw_w
    k = min(k0, k1) if mode == "Resize and Fill" else max(k0, k1)
    return int(np.round(k * min(raw_h, raw_w)))


# --- thinning (binary edge maps) ----------------------------------------------------------------------------------
# Morphological thinning by hit-or-miss: the two classic structuring elements (1 = foreground, -1 = background,
# 0 = either) in their four rotations remove boundary pixels that are not needed to keep a line connected. cv2 has
# MORPH_HITMISS but no thinning without opencv-contrib (ximgproc), which the project does not install.
_THIN_BASE = (
    np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]], dtype=np.int32),
    np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]], dtype=np.int32),
)
_THIN_KERNELS = tuple(np.rot90(k, r).copy() for r in range(4) for k in _THIN_BASE)
_LINE_FILTERS = tuple(np.array(f, dtype=np.uint8) for f in (
    [[0, 0, 0], [1, 1, 1], [0, 0, 0]], [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [1, 0, 0]]))


def _thin(binary: np.ndarray, prune: bool) -> np.ndarray:
    """Thin a 0/255 map to 1-pixel lines (at most 32 rounds); `prune` then removes one pixel from every line end,
    taking off the 1-pixel spurs that enlarging leaves."""
    y = binary.copy()
    for _ in range(32):
        changed = False
        for kernel in _THIN_KERNELS:
            hits = cv2.morphologyEx(y, cv2.MORPH_HITMISS, kernel) > 127
            if hits.any():
                y[hits] = 0
                changed = True
        if not changed:
            break
    if prune:
        y = _prune_ends(y)
    return y


def _prune_ends(y: np.ndarray) -> np.ndarray:
    """Remove end pixels: foreground pixels whose foreground neighbours are none, one, or one edge-neighbour plus
    the corner next to it (the two ways a 1-pixel line can end)."""
    fg = (y > 127).astype(np.uint8)
    p = np.pad(fg, 1)
    h, w = fg.shape
    # neighbours clockwise from the top-left corner
    offsets = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    ring = np.stack([p[dy:dy + h, dx:dx + w] for dy, dx in offsets])
    count = ring.sum(axis=0)
    adjacent_pair = np.zeros_like(fg, dtype=bool)
    for i in range(8):
        adjacent_pair |= (ring[i] == 1) & (ring[(i + 1) % 8] == 1)
    end = (fg == 1) & ((count <= 1) | ((count == 2) & adjacent_pair))
    out = y.copy()
    out[end] = 0
    return out


def _line_nms(x: np.ndarray) -> np.ndarray:
    """Keep a pixel where it is the maximum along at least one of the four line directions (non-maximum
    suppression without blur), so a blurred-up line gets its ridge back."""
    y = np.zeros_like(x)
    for f in _LINE_FILTERS:
        np.putmask(y, cv2.dilate(x, kernel=f) == x, x)
    return y


def _colour_count(x: np.ndarray) -> int:
    """Distinct RGB colours; packed into one int per pixel (np.unique on rows is several times slower)."""
    flat = x.reshape(-1, 3).astype(np.uint32)
    return len(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]))


def high_quality_resize(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """§4.1's map resize. 3–199 colours (segmentation, poses): nearest; else area when shrinking, cubic when
    enlarging. A binary map (exactly two colours, darkest < 16, brightest > 240) becomes grey, then, if it is mostly
    1-pixel lines, line-NMS + Otsu + thinning, else Otsu alone. An RGBA inpaint map keeps its mask (4th channel),
    re-binarised at 127."""
    mask = None
    if x.ndim == 3 and x.shape[2] == 4:
        mask, x = x[:, :, 3], x[:, :, :3]
    if x.shape[0] != height or x.shape[1] != width:
        new_area, old_area = width * height, x.shape[0] * x.shape[1]
        smaller, bigger = new_area < old_area, new_area > old_area
        colours = _colour_count(x)
        binary = one_pixel = False
        if colours == 2:
            binary = int(x.min()) < 16 and int(x.max()) > 240
            if binary:
                opened = cv2.dilate(cv2.erode(x, np.ones((3, 3), np.uint8)), np.ones((3, 3), np.uint8))
                thin_lost = int(np.count_nonzero(opened < x))
                lit = int(np.count_nonzero(x > 127))
                one_pixel = thin_lost * 2 > lit
        if 2 < colours < 200:
            interpolation = cv2.INTER_NEAREST
        elif smaller:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_CUBIC   # NMS below expects cubic's ridge
        y = cv2.resize(x, (width, height), interpolation=interpolation)
        if mask is not None:
            mask = cv2.resize(mask, (width, height), interpolation=interpolation)
        if binary:
            grey = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
            if one_pixel:
                grey = _line_nms(grey)
                _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
                grey = _thin(grey, prune=bigger)
            else:
                _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            y = np.stack([grey] * 3, axis=2)
    else:
        y = x
    if mask is not None:
        y = np.concatenate([y, np.where(mask > 127, 255, 0).astype(np.uint8)[:, :, None]], axis=2)
    return np.ascontiguousarray(y)


def resize_map(detected: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """The detected map at the generation size (§4.1 step 4). width and height are floored to multiples of 8 (the
    latent grid), as the extension sizes its maps. An H×W×4 map is an inpaint map: its alpha is the mask, kept
    through the resize; "Resize and Fill" fills its border with alpha 255 (= inpaint there: outpainting). Every
    other map is made RGB first. Returns uint8, H×W×3 or H×W×4."""
    mode = resize_mode_name(mode)
    width, height = int(width) // 8 * 8, int(height) // 8 * 8
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be at least 8 (got {width}×{height} after flooring to 8)")
    if detected.ndim == 3 and detected.shape[2] == 4:
        if detected.dtype != np.uint8:
            detected = np.clip(detected, 0, 255).astype(np.uint8)
    else:
        detected = to_rgb(detected)
    if mode == "Just Resize":
        return high_quality_resize(detected, width, height)
    old_h, old_w = detected.shape[:2]
    k0, k1 = height / old_h, width / old_w
    if mode == "Resize and Fill":
        k = min(k0, k1)
        border = np.concatenate([detected[0], detected[-1], detected[:, 0], detected[:, -1]], axis=0)
        fill = np.median(border, axis=0).astype(np.uint8)
        if fill.shape[0] == 4:
            fill[3] = 255
        canvas = np.tile(fill[None, None], [height, width, 1])
        inner = high_quality_resize(detected, int(np.round(old_w * k)), int(np.round(old_h * k)))
        new_h, new_w = inner.shape[:2]
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[top:top + new_h, left:left + new_w] = inner
        return canvas
    k = max(k0, k1)
    outer = high_quality_resize(detected, int(np.round(old_w * k)), int(np.round(old_h * k)))
    new_h, new_w = outer.shape[:2]
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(outer[top:top + height, left:left + width])
