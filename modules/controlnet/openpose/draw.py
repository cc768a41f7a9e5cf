"""The openpose skeleton image the openpose ControlNets were trained on (CONTROLNET-REFERENCE §6.2).

The geometry follows the extension's drawing to the pixel (integer truncation of centres, ellipse limbs built by
cv2.ellipse2Poly in 1° steps, joints after limbs), because the models learnt exactly those shapes and colours.
"""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from modules.controlnet.openpose.pose_json import PoseDocument

# COCO-18 colours, RGB; limb i and joint i use colour i
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
# the 17 limbs, in drawing order (0-based COCO-18 indices)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
LIMB_COLORS = tuple(tuple(int(float(c) * 0.6) for c in color) for color in COLORS)
# hand: wrist → each finger's four points, 20 edges
HAND_EDGES = tuple((0 if j == 0 else 4 * finger + j, 4 * finger + j + 1) for finger in range(5) for j in range(4))
HAND_EDGE_COLORS = tuple(tuple(v * 255.0 for v in colorsys.hsv_to_rgb(e / len(HAND_EDGES), 1.0, 1.0))
                         for e in range(len(HAND_EDGES)))
HAND_POINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)
# AP10K animals (animal_openpose): 0-based point pairs and their RGB colours, drawn as 5-px lines
ANIMAL_LIMBS = ((0, 1), (1, 2), (0, 2), (2, 3), (3, 8), (8, 9), (9, 10), (3, 5), (5, 6), (6, 7), (3, 4), (4, 14),
                (14, 15), (15, 16), (4, 11), (11, 12), (12, 13))
ANIMAL_COLORS = ((255, 255, 255), (100, 255, 100), (150, 255, 255), (100, 50, 255), (50, 150, 200), (0, 255, 255),
                 (0, 150, 0), (0, 0, 255), (0, 0, 150), (255, 50, 255), (255, 0, 255), (255, 0, 0), (150, 0, 0),
                 (255, 255, 100), (0, 150, 0), (255, 255, 0), (150, 150, 150))

# sizes in pixels on the ~512-px maps the models were trained on
STICK_HALF_WIDTH = 4
JOINT_RADIUS = 4
HAND_LINE = 2
HAND_POINT_RADIUS = 4
FACE_RADIUS = 3
ANIMAL_LINE = 5


def draw(doc: PoseDocument, width: int | None = None, height: int | None = None, *, scale_strokes: bool = False,
         body: bool = True, hands: bool = True, face: bool = True) -> np.ndarray:
    """H×W×3 uint8 RGB on black. width/height default to the canvas; other sizes scale the coordinates.
    scale_strokes: scale half-widths, radii and line widths by short side / 512 (a JSON drawn straight at a large
    generation size then looks like a 512-px map resized, §6.4)."""
    width = int(width or doc.canvas_width)
    height = int(height or doc.canvas_height)
    if width < 1 or height < 1:
        raise ValueError(f"draw: width and height must be positive (got {width}×{height})")
    sx, sy = width / doc.canvas_width, height / doc.canvas_height
    k = min(width, height) / 512.0 if scale_strokes else 1.0

    def size(v: int) -> int:
        return max(1, int(round(v * k)))

    def px(points):
        return None if points is None else [None if p is None else (p[0] * sx, p[1] * sy) for p in points]

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in doc.people:
        if body:
            _draw_body(canvas, px(person.body), size(STICK_HALF_WIDTH), size(JOINT_RADIUS))
        if hands:
            for hand in (person.left_hand, person.right_hand):
                _draw_hand(canvas, px(hand), size(HAND_LINE), size(HAND_POINT_RADIUS))
        if face:
            _draw_face(canvas, px(person.face), size(FACE_RADIUS))
    for animal in doc.animals:
        _draw_animal(canvas, px(animal), size(ANIMAL_LINE))
    return canvas


def _draw_body(canvas: np.ndarray, points: list, half_width: int, radius: int) -> None:
    for (a, b), color in zip(LIMBS, LIMB_COLORS):
        p, q = points[a], points[b]
        if p is None or q is None:
            continue
        length = math.hypot(p[0] - q[0], p[1] - q[1])
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        centre = (int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), half_width), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, color)
    for p, color in zip(points, COLORS):
        if p is not None:
            cv2.circle(canvas, (int(p[0]), int(p[1])), radius, color, thickness=-1)


def _visible(p) -> tuple[int, int] | None:
    """Hands and faces: a point at or left/above the canvas origin counts as absent (detectors write 0, 0)."""
    if p is None:
        return None
    x, y = int(p[0]), int(p[1])
    return (x, y) if x > 0 and y > 0 else None


def _draw_hand(canvas: np.ndarray, points: list | None, line: int, radius: int) -> None:
    if not points:
        return
    visible = [_visible(p) for p in points]
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if visible[a] and visible[b]:
            cv2.line(canvas, visible[a], visible[b], color, thickness=line)
    for p in visible:
        if p:
            cv2.circle(canvas, p, radius, HAND_POINT_COLOR, thickness=-1)


def _draw_face(canvas: np.ndarray, points: list | None, radius: int) -> None:
    for p in points or ():
        p = _visible(p)
        if p:
            cv2.circle(canvas, p, radius, FACE_COLOR, thickness=-1)


def _draw_animal(canvas: np.ndarray, points: list, line: int) -> None:
    for (a, b), color in zip(ANIMAL_LIMBS, ANIMAL_COLORS):
        p, q = points[a], points[b]
        if p is not None and q is not None:
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), color, thickness=line)
