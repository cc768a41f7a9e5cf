"""The openpose JSON that pose editors, `/controlnet/detect` and `/controlnet/render_openpose_json` exchange
(CONTROLNET-REFERENCE §6.3), read into one normalised form: COCO-18 bodies in canvas pixels.

What we accept beyond the extension (which read only its own output): real OpenPose BODY_25 files and DWPose/mmpose
COCO-17 bodies (converted to COCO-18), `[]` for an absent part, a missing `people` (an animals-only document), and
any key we do not know (editors add "version" and the like). Anything else is a ValueError naming the document and
the field, because these documents come from users and other programs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

Point = tuple[float, float] | None   # canvas pixels; None = absent (confidence < 1)

BODY_POINTS = 18
HAND_POINTS = 21
FACE_POINTS = (70, 68)      # OpenPose: 68 landmarks + 2 pupils; DWPose writes the 68 only
ANIMAL_POINTS = 17          # AP10K
MAX_CANVAS = 8192           # a canvas is an image we allocate: 8192² RGB is 200 MB

# BODY_25 → COCO-18: drop 8 (mid-hip) and 19–24 (feet)
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# COCO-17 index for each COCO-18 point; None = the neck, the mean of the two shoulders (COCO-17 5 and 6)
COCO17_TO_COCO18 = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

_PERSON_FIELDS = (("pose_keypoints_2d", "body"), ("hand_left_keypoints_2d", "left_hand"),
                  ("hand_right_keypoints_2d", "right_hand"), ("face_keypoints_2d", "face"))


@dataclass
class Person:
    body: list = field(default_factory=lambda: [None] * BODY_POINTS)   # 18 points, COCO-18 order
    left_hand: list | None = None      # 21 points
    right_hand: list | None = None     # 21 points
    face: list | None = None           # 70 (or 68) points


@dataclass
class PoseDocument:
    canvas_width: int
    canvas_height: int
    people: list[Person] = field(default_factory=list)
    animals: list[list] = field(default_factory=list)   # 17 AP10K points each


def parse_documents(value) -> list[PoseDocument]:
    """One document (a dict or JSON text) or a list of them → documents in canvas pixels."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        value = _load_json(value, "pose 0")
    items = value if isinstance(value, list) else [value]
    docs = []
    for index, item in enumerate(items):
        where = f"pose {index}"
        if isinstance(item, (bytes, bytearray)):
            item = item.decode("utf-8", errors="replace")
        if isinstance(item, str):
            item = _load_json(item, where)
        docs.append(_parse_document(item, where))
    return docs


def parse_document(value) -> PoseDocument:
    """Exactly one document."""
    docs = parse_documents(value)
    if len(docs) != 1:
        raise ValueError(f"expected one pose document, got {len(docs)}")
    return docs[0]


def to_json(doc: PoseDocument, *, normalised: bool = False) -> dict:
    """The §6.3 dict: pixel coordinates, or coordinates divided by the canvas size (what the classic openpose
    detector reports). An absent point is written 0, 0, 0 (confidence 0)."""
    sx, sy = (1.0 / doc.canvas_width, 1.0 / doc.canvas_height) if normalised else (1.0, 1.0)

    def flat(points):
        if points is None:
            return None
        out = []
        for p in points:
            out.extend((float(p[0]) * sx, float(p[1]) * sy, 1.0) if p is not None else (0.0, 0.0, 0.0))
        return out

    return {
        "people": [{
            "pose_keypoints_2d": flat(person.body),
            "face_keypoints_2d": flat(person.face),
            "hand_left_keypoints_2d": flat(person.left_hand),
            "hand_right_keypoints_2d": flat(person.right_hand),
        } for person in doc.people],
        "animals": [flat(animal) for animal in doc.animals],
        "canvas_width": int(doc.canvas_width),
        "canvas_height": int(doc.canvas_height),
    }


# --- parsing ---------------------------------------------------------------------------------------------------

def _load_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _parse_document(item, where: str) -> PoseDocument:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be an object with canvas_width, canvas_height and people "
                         f"(got {_kind(item)})")
    width = _canvas_size(item, "canvas_width", where)
    height = _canvas_size(item, "canvas_height", where)
    people_raw = item.get("people")
    if people_raw is None:
        people_raw = []
    if not isinstance(people_raw, list):
        raise ValueError(f"{where}: people must be a list of objects (got {_kind(people_raw)})")
    people = []
    for i, raw in enumerate(people_raw):
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: people[{i}] must be an object with pose_keypoints_2d "
                             f"(got {_kind(raw)})")
        person = Person()
        for key, attr in _PERSON_FIELDS:
            points = _parse_part(raw.get(key), key, f"{where}: people[{i}].{key}", width, height)
            if attr == "body":
                person.body = points if points is not None else [None] * BODY_POINTS
            else:
                setattr(person, attr, points)
        people.append(person)
    animals_raw = item.get("animals")
    if animals_raw is None:
        animals_raw = []
    if not isinstance(animals_raw, list):
        raise ValueError(f"{where}: animals must be a list of keypoint lists (got {_kind(animals_raw)})")
    animals = []
    for i, raw in enumerate(animals_raw):
        points = _parse_part(raw, "animals", f"{where}: animals[{i}]", width, height)
        if points is not None:
            animals.append(points)
    return PoseDocument(width, height, people, animals)


def _canvas_size(item: dict, key: str, where: str) -> int:
    value = item.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and float(value).is_integer() and 1 <= value <= MAX_CANVAS
    if not ok:
        shown = "missing" if key not in item else f"got {value!r}"
        raise ValueError(f"{where}: {key} must be an integer from 1 to {MAX_CANVAS} ({shown})")
    return int(value)


_ALLOWED = {
    "pose_keypoints_2d": ((BODY_POINTS, 25, 17), "18, 25 or 17 points"),
    "hand_left_keypoints_2d": ((HAND_POINTS,), "21 points"),
    "hand_right_keypoints_2d": ((HAND_POINTS,), "21 points"),
    "face_keypoints_2d": (FACE_POINTS, "70 or 68 points"),
    "animals": ((ANIMAL_POINTS,), "17 points"),
}


def _parse_part(raw, key: str, where: str, width: int, height: int) -> list | None:
    """A flat x, y, c list → points in canvas pixels (COCO-18 for bodies); None for null or []."""
    if raw is None or (isinstance(raw, list) and not raw):
        return None
    counts, counts_text = _ALLOWED[key]
    message = f"{where} must be a flat list of x, y, confidence triples ({counts_text})"
    if not isinstance(raw, list):
        raise ValueError(f"{message}; got {_kind(raw)}")
    for n, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{message}; item {n} is {v!r}")
    if len(raw) % 3 or len(raw) // 3 not in counts:
        raise ValueError(f"{message}; got {len(raw)} numbers")
    points = [(float(raw[i]), float(raw[i + 1])) if raw[i + 2] >= 1.0 else None for i in range(0, len(raw), 3)]
    if key == "pose_keypoints_2d":
        points = _to_coco18(points)
    present = [p for p in points if p is not None]
    # the extension's rule, per part: every coordinate within ±1 means "normalised to the canvas"
    if present and all(abs(x) <= 1.0 and abs(y) <= 1.0 for x, y in present):
        points = [(p[0] * width, p[1] * height) if p is not None else None for p in points]
    return points


def _to_coco18(points: list) -> list:
    if len(points) == 25:
        return [points[i] for i in BODY25_TO_COCO18]
    if len(points) == 17:
        out = []
        for source in COCO17_TO_COCO18:
            if source is not None:
                out.append(points[source])
            else:
                left, right = points[5], points[6]
                out.append(((left[0] + right[0]) / 2, (left[1] + right[1]) / 2) if left and right else None)
        return out
    return points


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
