"""Post-processing shared by the soft-edge networks (HED, PiDiNet, TEED), as sd-webui-controlnet applies it.

"safe" variants quantise the edge strength to a few levels so the map carries less of the photo's texture (the
hidden information a soft-edge ControlNet could otherwise copy); "scribble" variants turn the soft map into thick
binary strokes like a hand-drawn scribble (§3.3: NMS at 127 after a σ3 blur, blur σ3 again, all above 4 white).
"""
from __future__ import annotations

import cv2
import numpy as np

# The four line directions a ridge pixel must be the maximum along (at least one), for non-maximum suppression.
_DIRECTIONS = tuple(np.array(k, dtype=np.uint8) for k in (
    [[0, 0, 0], [1, 1, 1], [0, 0, 0]], [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [1, 0, 0]]))


def safe_step(x: np.ndarray, steps: int = 2) -> np.ndarray:
    """Edge strengths in [0, 1] quantised to `steps` levels: floor(x · (steps + 1)) / steps (so 1 can become more
    than 1; callers clip after scaling to 255)."""
    y = x.astype(np.float32) * float(steps + 1)
    return y.astype(np.int32).astype(np.float32) / float(steps)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats → 0..255 uint8 (truncating, as the extension does)."""
    return (x * 255.0).clip(0, 255).astype(np.uint8)


def ridge_nms(x: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """Blur by `sigma`, keep pixels that are the maximum along at least one line direction, and mark those above
    `threshold` white (0/255 uint8). Written here because cv2 has no ridge-style NMS for grey maps."""
    blurred = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    kept = np.zeros_like(blurred)
    for kernel in _DIRECTIONS:
        np.putmask(kept, cv2.dilate(blurred, kernel=kernel) == blurred, blurred)
    out = np.zeros(kept.shape, dtype=np.uint8)
    out[kept > threshold] = 255
    return out


def scribble(edge: np.ndarray) -> np.ndarray:
    """A grey uint8 soft-edge map as scribble strokes (0/255 uint8): ridges above 127 (σ3), widened by a σ3 blur,
    everything above 4 white."""
    strokes = cv2.GaussianBlur(ridge_nms(edge, 127, 3.0), (0, 0), 3.0)
    return np.where(strokes > 4, 255, 0).astype(np.uint8)
