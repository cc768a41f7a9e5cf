"""Hands and faces: square crops placed from a body skeleton, then the hand or face network on each crop.

Crop rules (OpenPose's own hand detector and the ControlNet authors' face box): a hand box is centred a third of the
forearm beyond the wrist, 1.5× the longer of forearm and 0.9× upper arm wide; a face box is centred on the nose,
twice the larger of 3× nose–eye and 1.5× nose–ear distances wide. Boxes narrower than 20 px are skipped.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from scipy import ndimage
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F

from modules.controlnet.openpose import maps

MIN_BOX = 20
HAND_BEYOND_WRIST = 0.33
HAND_SCALES = (184, 368, 552, 736)      # square sizes the hand crop is run at (box 368 × 0.5, 1, 1.5, 2)
HAND_MAP = 128                          # the averaged hand maps are compared at 128×128
HAND_THRESHOLD = 0.05
FACE_INPUT = 384
FACE_THRESHOLD = 0.05
FACE_POINTS = 70

# COCO-18 indices: (shoulder, elbow, wrist) of the person's left and right arm
LEFT_ARM, RIGHT_ARM = (5, 6, 7), (2, 3, 4)
NOSE, FACE_REFS = 0, ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5))   # eyes ×3, ears ×1.5


def hand_boxes(body: list, width: int, height: int) -> list[tuple[int, int, int, bool]]:
    """(x, y, side, is_left) per hand whose shoulder, elbow and wrist were all found."""
    boxes = []
    for arm, is_left in ((LEFT_ARM, True), (RIGHT_ARM, False)):
        shoulder, elbow, wrist = (body[i] for i in arm)
        if shoulder is None or elbow is None or wrist is None:
            continue
        cx = wrist[0] + HAND_BEYOND_WRIST * (wrist[0] - elbow[0])
        cy = wrist[1] + HAND_BEYOND_WRIST * (wrist[1] - elbow[1])
        side = 1.5 * max(math.dist(wrist, elbow), 0.9 * math.dist(elbow, shoulder))
        x, y = max(cx - side / 2, 0.0), max(cy - side / 2, 0.0)
        side = min(width - x if x + side > width else side, height - y if y + side > height else side)
        if side >= MIN_BOX:
            boxes.append((int(x), int(y), int(side), is_left))
    return boxes


def face_box(body: list, width: int, height: int) -> tuple[int, int, int] | None:
    nose = body[NOSE]
    refs = [(body[i], k) for i, k in FACE_REFS if body[i] is not None]
    if nose is None or not refs:
        return None
    half = max(max(abs(nose[0] - p[0]), abs(nose[1] - p[1])) * k for p, k in refs)
    x, y = max(nose[0] - half, 0.0), max(nose[1] - half, 0.0)
    # the reference compares x + half (not x + 2·half) with the image edge; kept, so boxes match its output
    side_x = width - x if x + half > width else 2 * half
    side_y = height - y if y + half > height else 2 * half
    side = min(side_x, side_y)
    return (int(x), int(y), int(side)) if side >= MIN_BOX else None


def estimate_hand(net: torch.nn.Module, crop_bgr: np.ndarray, device: torch.device,
                  scales: tuple[int, ...] | None = None) -> list:
    """21 (x, y) points in crop pixels, None where the part was not found. The crop runs at every size of `scales`
    (default HAND_SCALES) and the maps are averaged."""
    h, w = crop_bgr.shape[:2]
    scales = scales or HAND_SCALES
    blurred = cv2.GaussianBlur(crop_bgr, (0, 0), 0.8)
    avg = np.zeros((HAND_MAP, HAND_MAP, 22))
    for size in scales:
        image = maps.resize(blurred, size, size)
        padded, bottom, right = maps.pad_to_stride(image)
        with torch.no_grad():
            out = net(maps.to_input(padded, device))
        avg += maps.upsample_maps(out, padded.shape[:2], (bottom, right), (HAND_MAP, HAND_MAP)) / len(scales)
    points = []
    for part in range(21):
        raw = avg[:, :, part].copy()
        mask = gaussian_filter(raw, sigma=3) > HAND_THRESHOLD
        if not mask.any():
            points.append(None)
            continue
        # keep the connected blob holding the most heat, take its maximum
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        sums = ndimage.sum(raw, labels, index=np.arange(1, count + 1))
        raw[labels != int(np.argmax(sums)) + 1] = 0
        y, x = np.unravel_index(int(np.argmax(raw)), raw.shape)
        px, py = int(x * w / HAND_MAP), int(y * h / HAND_MAP)
        points.append(_found(px, py))
    return points


def estimate_face(net: torch.nn.Module, crop_bgr: np.ndarray, device: torch.device, size: int | None = None) -> list:
    """70 (x, y) points in crop pixels (68 landmarks + 2 pupils), None where no map value exceeds the threshold.
    The crop runs at size×size (default FACE_INPUT)."""
    h, w = crop_bgr.shape[:2]
    size = size or FACE_INPUT
    image = maps.resize(crop_bgr, size, size)
    with torch.no_grad():
        out = net(maps.to_input(image, device))
        heat = F.interpolate(out, (h, w), mode="bilinear", align_corners=True)[0].float().cpu().numpy()
    points = []
    for part in range(FACE_POINTS):
        m = heat[part]
        index = int(np.argmax(m))
        y, x = divmod(index, w)
        points.append(_found(x, y) if m.flat[index] > FACE_THRESHOLD else None)
    return points


def _found(x: int, y: int) -> tuple[int, int] | None:
    """A coordinate of 0 is the reference's "not found" (it is never drawn), so such a point is absent."""
    return (x, y) if x > 0 and y > 0 else None
