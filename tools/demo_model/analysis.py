"""Pixel analysis of a 64x64 scene image: what is the largest object, what colour, where, which shape, how big.

Used by the evaluation (generated images vs. their captions) and by the data tests (rendered scenes vs. their
captions).  numpy only.

* background: per-channel median of the 1-pixel border
* foreground: pixels farther than ``FG_THRESHOLD`` (RGB distance) from the background
* object: the largest 4-connected foreground component
* colour: nearest named object colour to the mean of the component's interior pixels
* position: nearest anchor (left/right/top/bottom/center) to the component's centroid
* shape: a triangle is much narrower in its top quarter than in its bottom quarter; otherwise the fill ratio
  (area / bounding-box area) separates squares (~1) from circles (~pi/4)
* size: half the larger bounding-box side, small below ``SIZE_SPLIT`` pixels
* background: nearest named background colour to the border's median (also when no object is found)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.demo_model.data import ANCHORS, BACKGROUNDS, COLORS, EXTENT, IMAGE_SIZE

FG_THRESHOLD = 60.0
MIN_AREA = 12            # smaller components are noise, not an object
SIZE_SPLIT = (EXTENT["small"] + EXTENT["large"]) / 2
SQUARE_FILL = 0.88
TRIANGLE_TAPER = 0.6

_COLOR_NAMES = list(COLORS)
_COLOR_RGB = np.asarray([COLORS[c] for c in _COLOR_NAMES], dtype=np.float32)
_BG_NAMES = list(BACKGROUNDS)
_BG_RGB = np.asarray([BACKGROUNDS[c] for c in _BG_NAMES], dtype=np.float32)
_ANCHOR_NAMES = list(ANCHORS)
_ANCHOR_XY = np.asarray([ANCHORS[a] for a in _ANCHOR_NAMES], dtype=np.float32)


@dataclass
class Analysis:
    found: bool
    color: str | None = None
    position: str | None = None
    shape: str | None = None
    size: str | None = None
    area: int = 0
    centroid: tuple[float, float] = (0.0, 0.0)
    fill: float = 0.0
    taper: float = 0.0
    mean_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def background(self) -> str:
        """The named background colour (object colours and gray, pink, brown, teal) nearest to the border's."""
        return _nearest(_BG_NAMES, _BG_RGB, self.background_rgb)


def background_rgb(img: np.ndarray) -> np.ndarray:
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]]).astype(np.float32)
    return np.median(border, axis=0)


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels (int32, -1 = background) by min-label propagation (fine for 64x64)."""
    h, w = mask.shape
    big = np.int32(h * w)
    labels = np.where(mask, np.arange(h * w, dtype=np.int32).reshape(h, w), big)
    while True:
        p = labels
        n = p.copy()
        n[1:, :] = np.minimum(n[1:, :], p[:-1, :])
        n[:-1, :] = np.minimum(n[:-1, :], p[1:, :])
        n[:, 1:] = np.minimum(n[:, 1:], p[:, :-1])
        n[:, :-1] = np.minimum(n[:, :-1], p[:, 1:])
        n = np.where(mask, n, big)
        if np.array_equal(n, labels):
            break
        labels = n
    return np.where(mask, labels, -1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels = label_components(mask)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    if len(ids) == 0:
        return np.zeros_like(mask)
    return labels == ids[np.argmax(counts)]


def _nearest(names: list[str], table: np.ndarray, rgb) -> str:
    d = np.linalg.norm(table - np.asarray(rgb, dtype=np.float32)[None], axis=1)
    return names[int(np.argmin(d))]


def nearest_color(rgb) -> str:
    return _nearest(_COLOR_NAMES, _COLOR_RGB, rgb)


def analyze(img: np.ndarray) -> Analysis:
    """``img``: uint8 [64, 64, 3] RGB."""
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image, got {img.shape}")
    f = img.astype(np.float32)
    bg = background_rgb(img)
    fg = np.linalg.norm(f - bg[None, None], axis=2) > FG_THRESHOLD
    comp = largest_component(fg)
    area = int(comp.sum())
    if area < MIN_AREA:
        return Analysis(False, area=area, background_rgb=tuple(float(v) for v in bg))
    ys, xs = np.nonzero(comp)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    fill = area / float(bw * bh)
    # interior: component pixels whose 4 neighbours are in the component too (no anti-aliased edge colours)
    inner = comp.copy()
    inner[1:, :] &= comp[:-1, :]
    inner[:-1, :] &= comp[1:, :]
    inner[:, 1:] &= comp[:, :-1]
    inner[:, :-1] &= comp[:, 1:]
    sel = inner if inner.sum() >= 4 else comp
    mean = f[sel].mean(axis=0)
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    pos = _ANCHOR_NAMES[int(np.argmin(np.linalg.norm(_ANCHOR_XY - np.asarray([cx, cy])[None], axis=1)))]
    rows = comp[y0:y1 + 1, x0:x1 + 1].sum(axis=1).astype(np.float32)
    q = max(1, bh // 4)
    taper = float(rows[:q].mean() / max(rows[-q:].mean(), 1.0))
    if taper < TRIANGLE_TAPER:
        shape = "triangle"
    elif fill >= SQUARE_FILL:
        shape = "square"
    else:
        shape = "circle"
    size = "large" if max(bw, bh) / 2.0 >= SIZE_SPLIT else "small"
    return Analysis(True, nearest_color(mean), pos, shape, size, area, (cx, cy), fill, taper,
                    tuple(float(v) for v in mean), tuple(float(v) for v in bg))


# ----------------------------------------------------------------------------- the demo LoRA's and embedding's effects

INTERIOR_MARGIN = 3.5  # pixels (Euclidean) peeled off the object's hull before its interior is inspected (the outline's width)


def hollowness(img: np.ndarray) -> float:
    """How hollow the largest object is: the fraction of its interior (its convex hull less INTERIOR_MARGIN pixels
    all round) that has the background's colour. About 0 for a filled shape, about 1 for an outline; 0 when no
    object is found. The hull (every demo shape is convex) makes a ring with a gap count as a ring."""
    import cv2

    bg = background_rgb(img)
    fg = np.linalg.norm(img.astype(np.float32) - bg[None, None], axis=2) > FG_THRESHOLD
    comp = largest_component(fg)
    if comp.sum() < MIN_AREA:
        return 0.0
    ys, xs = np.nonzero(comp)
    hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
    filled = np.zeros(comp.shape, np.uint8)
    cv2.fillConvexPoly(filled, hull, 1)
    filled |= comp.astype(np.uint8)
    depth = cv2.distanceTransform(np.pad(filled, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    interior = depth > INTERIOR_MARGIN
    if not interior.any():
        return 0.0
    return float((~fg[interior]).mean())


def rgb_distance(img: np.ndarray, rgb) -> float | None:
    """RGB distance between the largest object's interior colour and ``rgb``; None when no object is found."""
    res = analyze(img)
    if not res.found:
        return None
    return float(np.linalg.norm(np.subtract(res.mean_rgb, rgb)))
