"""Helpers of A1111's outpainting scripts (scripts/outpainting_mk_2.py, scripts/poor_mans_outpainting.py): how much
each side grows, the direction argument checked, and Outpainting mk2's spectrum-matched noise for the new border.
Pixels only (numpy, scikit-image), no model."""
from __future__ import annotations

import math

import numpy as np
from skimage.exposure import match_histograms

from modules.engine.params import ParamError

WHERE = "script_args"
DIRECTIONS = ("left", "right", "up", "down")


def _spectrum(data: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Per channel, orthonormal 2-D (inverse) FFT with the zero frequency in the middle of the array."""
    transform = np.fft.ifft2 if inverse else np.fft.fft2
    centred = np.fft.fftshift(data, axes=(0, 1))
    return np.fft.ifftshift(transform(centred, axes=(0, 1), norm="ortho"), axes=(0, 1))


def _falloff_window(rows: int, cols: int) -> np.ndarray:
    """A smooth low-pass window over the centred spectrum, 1/((x²+1)(y²+1)) on coordinates scaled to the aspect."""
    short = min(rows, cols)
    y = (np.arange(rows) / rows * 2.0 - 1.0) * (rows / short)
    x = (np.arange(cols) / cols * 2.0 - 1.0) * (cols / short)
    return 1.0 / np.outer(y ** 2 + 1.0, x ** 2 + 1.0)


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float = 1.0,
                  color_variation: float = 0.05) -> np.ndarray:
    """`image` (H×W×3, 0..1) with its masked part (mask H×W×3, 1 = new) replaced by noise whose spectrum follows
    the kept part's (`noise_q` is the exponent on its magnitudes: lower keeps more fine detail) and whose colour
    histogram matches the kept pixels. The noise comes from a fixed generator, so the result depends only on the
    inputs (the image's own seed decides the rest), as in A1111 (after g-diffuser's outpainting)."""
    grey_mask = mask.mean(axis=2)
    new_area, kept_area = grey_mask > 1e-6, grey_mask < 1e-3
    windowed = image * (1.0 - mask)
    windowed = windowed / max(float(windowed.max()), 1e-8)
    windowed += image.mean() * mask           # the average colour where nothing is known: a gentler spectrum
    source = _spectrum(windowed)
    magnitude = np.abs(source)
    phase = source / np.where(magnitude == 0, 1.0, magnitude)

    rng = np.random.default_rng(0)
    noise = rng.random(image.shape)
    grey = noise.mean(axis=2, keepdims=True)
    noise = noise * color_variation + (1.0 - color_variation) * grey
    shaped = _spectrum(noise) * _falloff_window(*image.shape[:2])[..., None]
    noise = np.real(_spectrum(shaped, inverse=True))
    shaped = np.abs(_spectrum(noise)) ** 2 * magnitude ** noise_q * phase
    result = np.real(_spectrum(shaped, inverse=True))
    result -= result.min()
    result /= max(float(result.max()), 1e-8)
    if new_area.any() and kept_area.any():
        result[new_area, :] = match_histograms(result[new_area, :], image[kept_area, :], channel_axis=1)
    return np.clip(image * (1.0 - mask) + result * mask, 0.0, 1.0)


def side_pixels(width: int, height: int, pixels: int, direction: list) -> tuple[int, int, int, int]:
    """(left, right, up, down): the growth per side, so that the new size is a multiple of 64 each way and the
    growth is shared between opposite sides in proportion (A1111's rule)."""
    left, right, up, down = (pixels if side in direction else 0 for side in DIRECTIONS)
    target_w = math.ceil((width + left + right) / 64) * 64
    target_h = math.ceil((height + up + down) / 64) * 64
    if left:
        left = left * (target_w - width) // (left + right)
    if right:
        right = target_w - width - left
    if up:
        up = up * (target_h - height) // (up + down)
    if down:
        down = target_h - height - up
    return left, right, up, down


def check_direction(direction) -> list:
    if isinstance(direction, str):
        direction = [direction]
    unknown = [d for d in direction or [] if d not in DIRECTIONS]
    if unknown:
        raise ParamError(WHERE, f"outpainting direction {unknown} unknown; choose from {list(DIRECTIONS)}")
    return list(direction or [])
