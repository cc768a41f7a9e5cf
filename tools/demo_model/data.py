"""Procedural training data for the demo model: 64x64 scenes of flat shapes with English captions.

Everything is deterministic from a seed (numpy ``Generator``); numpy only, so tests stay fast.

A scene has a plain background and one or two objects.  Each object is (colour, shape, size, position):

* 8 colours: red, green, blue, yellow, orange, purple, white, black
* 3 shapes: circle, square, triangle (pointing up)
* 2 sizes: small, large
* 5 positions: left, right, top, bottom, center

Captions: ``"a large red circle on the left, blue background"`` and, for two objects,
``"a small green square at the top and a large white triangle at the bottom, gray background"``.

Held-out split: ``HELDOUT`` lists 16 colour x shape x position combinations (2 per colour) that never occur in
training scenes, neither alone nor as one of two objects.  Every colour, shape and position, and every pair of them,
still occurs in training, so the held-out captions test composition, not unseen words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # shapes are rasterised at 4x and box-filtered: anti-aliased edges

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (35, 165, 60),
    "blue": (35, 70, 225),
    "yellow": (245, 220, 40),
    "orange": (245, 135, 20),
    "purple": (140, 50, 185),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# backgrounds: the object colours plus four that only occur as backgrounds
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    **COLORS,
    "gray": (128, 128, 128),
    "pink": (240, 160, 200),
    "brown": (125, 75, 40),
    "teal": (30, 140, 140),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                  "center": "in the center"}
# object centre (x, y) in pixels for each position
ANCHORS: dict[str, tuple[float, float]] = {
    "left": (16.0, 32.0), "right": (48.0, 32.0), "top": (32.0, 16.0), "bottom": (32.0, 48.0), "center": (32.0, 32.0),
}
# half extent of the shape's bounding box in pixels
EXTENT = {"small": 8.0, "large": 13.5}
SIZE_JITTER = 1.0     # extent +- this (uniform)
POSITION_JITTER = 2.0  # centre +- this in x and y (uniform)
MIN_BG_DISTANCE = 80.0  # RGB distance between the background and every object colour of a scene
TWO_OBJECT_FRACTION = 0.3


def _make_heldout() -> tuple[tuple[str, str, str], ...]:
    combos = []
    for ci, color in enumerate(COLORS):
        for k in range(2):
            combos.append((color, SHAPES[(ci + k) % len(SHAPES)], POSITIONS[(2 * ci + 3 * k) % len(POSITIONS)]))
    return tuple(combos)


HELDOUT: tuple[tuple[str, str, str], ...] = _make_heldout()
_HELDOUT_SET = frozenset(HELDOUT)


def is_heldout(color: str, shape: str, position: str) -> bool:
    return (color, shape, position) in _HELDOUT_SET


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    size: str
    position: str
    # exact geometry (pixels); the caption only names the discrete attributes
    cx: float = 0.0
    cy: float = 0.0
    extent: float = 0.0

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.position)

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} {POSITION_WORDS[self.position]}"


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]

    @property
    def caption(self) -> str:
        return " and ".join(o.phrase() for o in self.objects) + f", {self.background} background"


# ----------------------------------------------------------------------------- captions

_PHRASE = re.compile(
    r"a (?P<size>small|large) (?P<color>[a-z]+) (?P<shape>circle|square|triangle) "
    r"(?P<where>on the left|on the right|at the top|at the bottom|in the center)")
_WHERE = {v: k for k, v in POSITION_WORDS.items()}


def parse_caption(caption: str) -> tuple[str, list[dict]]:
    """(background, [{"color","shape","size","position"}, ...]) of a caption this module writes."""
    head, sep, bg = caption.rpartition(", ")
    if not sep or not bg.endswith(" background"):
        raise ValueError(f"not a demo caption: {caption!r}")
    background = bg[: -len(" background")]
    objs = []
    for part in head.split(" and "):
        m = _PHRASE.fullmatch(part)
        if not m or m["color"] not in COLORS:
            raise ValueError(f"not a demo caption: {caption!r}")
        objs.append({"color": m["color"], "shape": m["shape"], "size": m["size"], "position": _WHERE[m["where"]]})
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background in {caption!r}")
    return background, objs


# ----------------------------------------------------------------------------- sampling


# what a partial caption leaves out (``partial_caption``)
PARTIAL_KINDS = ("position", "color", "background")


def partial_caption(caption: str, leave_out: str) -> str:
    """The caption with one kind of attribute left out of every object (or the background clause dropped):
    ``a large red circle on the left, blue background`` -> ``a large red circle, blue background`` (position),
    ``a large circle on the left, blue background`` (color), ``a large red circle on the left`` (background).

    Training on some of these teaches each word its own effect, so shorter prompts such as "a red circle" (what
    people type) still work; the image keeps whatever the left-out attribute happened to be."""
    if leave_out not in PARTIAL_KINDS:
        raise ValueError(f"leave_out must be one of {PARTIAL_KINDS}, got {leave_out!r}")
    background, objs = parse_caption(caption)
    phrases = []
    for o in objs:
        words = ["a", o["size"]]
        if leave_out != "color":
            words.append(o["color"])
        words.append(o["shape"])
        if leave_out != "position":
            words.append(POSITION_WORDS[o["position"]])
        phrases.append(" ".join(words))
    head = " and ".join(phrases)
    return head if leave_out == "background" else f"{head}, {background} background"


def _color_distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.subtract(BACKGROUNDS[a], BACKGROUNDS[b], dtype=np.float64)))


def background_ok(background: str, colors) -> bool:
    return all(_color_distance(background, c) >= MIN_BG_DISTANCE for c in colors)


def _place(rng: np.random.Generator, color: str, shape: str, size: str, position: str, jitter: bool = True) -> Obj:
    ax, ay = ANCHORS[position]
    if jitter:
        ax += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        ay += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        ext = EXTENT[size] + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
    else:
        ext = EXTENT[size]
    return Obj(color, shape, size, position, float(ax), float(ay), float(ext))


def _boxes_overlap(a: Obj, b: Obj, margin: float = 2.0) -> bool:
    return (abs(a.cx - b.cx) < a.extent + b.extent + margin) and (abs(a.cy - b.cy) < a.extent + b.extent + margin)


def _random_obj(rng: np.random.Generator, split: str) -> Obj:
    """An object whose combination belongs to ``split`` ("train": not held out, "heldout": held out)."""
    if split == "heldout":
        color, shape, position = HELDOUT[rng.integers(len(HELDOUT))]
    else:
        while True:
            color = list(COLORS)[rng.integers(len(COLORS))]
            shape = SHAPES[rng.integers(len(SHAPES))]
            position = POSITIONS[rng.integers(len(POSITIONS))]
            if not is_heldout(color, shape, position):
                break
    size = SIZES[rng.integers(len(SIZES))]
    return _place(rng, color, shape, size, position)


def random_background(rng: np.random.Generator, colors) -> str:
    names = [b for b in BACKGROUNDS if background_ok(b, colors)]
    return names[rng.integers(len(names))]


def random_scene(rng: np.random.Generator, split: str = "train", n_objects: int | None = None) -> Scene:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if n_objects is None:
        n_objects = 2 if (split == "train" and rng.random() < TWO_OBJECT_FRACTION) else 1
    if n_objects == 1:
        objs = (_random_obj(rng, split),)
    elif n_objects == 2:
        if split != "train":
            raise ValueError("two-object scenes are training data only")
        while True:
            a, b = _random_obj(rng, split), _random_obj(rng, split)
            if a.position != b.position and not _boxes_overlap(a, b) and background_ok_any(a, b):
                objs = (a, b)
                break
    else:
        raise ValueError("a scene has one or two objects")
    return Scene(random_background(rng, [o.color for o in objs]), objs)


def background_ok_any(*objs: Obj) -> bool:
    """At least one background fits all object colours."""
    return any(background_ok(b, [o.color for o in objs]) for b in BACKGROUNDS)


def scene_from_caption(caption: str, rng: np.random.Generator | None = None) -> Scene:
    """The scene a caption describes (centred, nominal size unless ``rng`` adds the usual jitter)."""
    background, objs = parse_caption(caption)
    out = tuple(_place(rng, o["color"], o["shape"], o["size"], o["position"], jitter=rng is not None) for o in objs)
    return Scene(background, out)


# ----------------------------------------------------------------------------- rendering

_SS = IMAGE_SIZE * SUPERSAMPLE
# pixel-centre coordinates of the supersampled grid, in output-pixel units
_COORD = (np.arange(_SS, dtype=np.float32) + 0.5) / SUPERSAMPLE


def shape_mask(obj: Obj) -> np.ndarray:
    """Coverage of ``obj`` per output pixel, float32 [64, 64] in [0, 1]."""
    return coverage(shape_inside(obj))


def coverage(inside: np.ndarray) -> np.ndarray:
    """A supersampled [256, 256] bool mask box-filtered to coverage per output pixel, float32 [64, 64]."""
    return inside.astype(np.float32).reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def shape_inside(obj: Obj) -> np.ndarray:
    """The object's area on the 4x supersampled grid, bool [256, 256]."""
    x = _COORD[None, :]
    y = _COORD[:, None]
    e = obj.extent
    if obj.shape == "circle":
        inside = (x - obj.cx) ** 2 + (y - obj.cy) ** 2 <= e * e
    elif obj.shape == "square":
        h = e * 0.9  # a square of the same bounding extent looks bigger than the circle: shrink it a little
        inside = (np.abs(x - obj.cx) <= h) & (np.abs(y - obj.cy) <= h)
    elif obj.shape == "triangle":
        # isosceles, apex up, base 2e wide, height 2e, centred on its bounding box
        top, bottom = obj.cy - e, obj.cy + e
        t = (y - top) / (2 * e)  # 0 at the apex, 1 at the base
        inside = (y >= top) & (y <= bottom) & (np.abs(x - obj.cx) <= t * e)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return inside


def render(scene: Scene, colors: dict[str, tuple[int, int, int]] = COLORS, mask=shape_mask) -> np.ndarray:
    """uint8 [64, 64, 3] RGB image of the scene. ``colors`` and ``mask`` (object -> coverage [64, 64]) let the demo
    LoRA and embedding recipes draw variants: outlines, objects in a colour the base model never saw on objects."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    img[:] = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    for obj in scene.objects:
        a = mask(obj)[..., None]
        img = img * (1.0 - a) + np.asarray(colors[obj.color], dtype=np.float32) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_batch(rng: np.random.Generator, n: int, split: str = "train") -> tuple[np.ndarray, list[str]]:
    """n random scenes: (uint8 [n, 64, 64, 3], captions)."""
    scenes = [random_scene(rng, split) for _ in range(n)]
    return np.stack([render(s) for s in scenes]), [s.caption for s in scenes]


def to_tensor_range(images: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [-1, 1] (torch imported lazily)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# ----------------------------------------------------------------------------- evaluation prompts


def heldout_captions(n: int | None = None, seed: int = 1234) -> list[str]:
    """Single-object captions whose combination is held out: every held-out combination x size x fitting background,
    in a seeded order (the first n; the combinations stay balanced because the order is interleaved)."""
    rng = np.random.default_rng(seed)
    per_combo = []
    for color, shape, position in HELDOUT:
        caps = [Obj(color, shape, size, position).phrase() + f", {bg} background"
                for size in SIZES for bg in BACKGROUNDS if background_ok(bg, [color])]
        rng.shuffle(caps)
        per_combo.append(caps)
    out = []
    for i in range(max(len(c) for c in per_combo)):
        for caps in per_combo:
            if i < len(caps):
                out.append(caps[i])
    return out if n is None else out[:n]


def heldout_scenes(n: int, seed: int = 4321) -> list[Scene]:
    """Rendered-data counterpart for autoencoder evaluation: random held-out single-object scenes."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, "heldout") for _ in range(n)]


def cli(args) -> None:
    """`python -m tools.train_demo_model data`: a preview grid, the split and a few counts."""
    from collections import Counter

    from tools.demo_model import common

    rng = np.random.default_rng(args.seed)
    images, captions = make_batch(rng, args.n)
    path = common.TRAINING_DIR / "data" / "preview.png"
    common.save_grid(images, path, captions=captions)
    rng = np.random.default_rng(args.seed)
    scenes = [random_scene(rng) for _ in range(5000)]
    n_obj = Counter(len(s.objects) for s in scenes)
    combos = Counter(o.combo for s in scenes for o in s.objects)
    print(f"preview: {path} (captions in {path.with_suffix('.txt')})")
    print(f"held-out combinations ({len(HELDOUT)} of {len(COLORS) * len(SHAPES) * len(POSITIONS)}):")
    for c in HELDOUT:
        print("   ", " ".join(c))
    print(f"5000 training scenes: {dict(n_obj)} objects per scene, {len(combos)} distinct combinations, "
          f"held-out ones among them: {sum(1 for c in combos if is_heldout(*c))}")
    print(f"held-out evaluation captions available: {len(heldout_captions())}")
