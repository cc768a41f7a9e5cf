"""The preprocessor record: sliders as /controlnet/module_list shows them, the out-of-range rule (§0.4) and `run`.

Kept apart from the package's __init__ (the registry) so the modules that define preprocessors can import it without
importing the registry that imports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from modules.controlnet.detected import Detected

if TYPE_CHECKING:
    from modules.controlnet.annotators import AnnotatorFile, AnnotatorStore


class PreprocessorUnavailable(RuntimeError):
    """The preprocessor is listed (clients and infotexts name it) but its network is not built into this program."""


@dataclass(frozen=True)
class Slider:
    """A preprocessor slider; ints stay ints (the extension's JSON shows `100`, not `100.0`, for canny)."""
    name: str
    value: float
    minimum: float
    maximum: float
    step: float = 0.01   # the extension's default step when a module gives none

    def to_api(self) -> dict:
        return {"name": self.name, "value": self.value, "min": self.minimum, "max": self.maximum, "step": self.step}

    def clamp(self, value: float) -> float:
        """§0.4: a value outside [min, max] (e.g. the API's -1) becomes the default."""
        return self.value if value < self.minimum or value > self.maximum else value


# The resolution slider every module has unless it hides it (the extension's class default; the per-module
# resolution settings of its older modules are stored where nothing reads them, §0.4).
RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)
# A hidden slider still takes part in the §0.4 rule with these bounds (so threshold_a 64 on openpose becomes 0.5).
HIDDEN_MIN, HIDDEN_MAX, HIDDEN_DEFAULT = 0.0, 1.0, 0.5
# What a module without a resolution slider runs at (shuffle's fixed 512; the others ignore it).
HIDDEN_RESOLUTION = 512

# fn(image, resolution, a, b, seed, store) -> Detected
RunFn = Callable[[np.ndarray, int, float, float, int, "AnnotatorStore | None"], Detected]


@dataclass(frozen=True)
class Preprocessor:
    name: str                  # internal key ("depth", "hed", "pidinet_scribble", ...)
    label: str                 # UI label / alias ("depth_midas", ...); == name when there is none
    resolution: Slider | None  # None: no resolution slider
    slider_a: Slider | None
    slider_b: Slider | None
    slider_c: Slider | None
    tags: tuple[str, ...]
    priority: int              # module_list order: higher first
    model_free: bool           # §1.1: needs no ControlNet model (reference_*, revision_*)
    accepts_mask: bool         # RGBA in: the alpha is a mask (inpaint, CLIP masks)
    weights: tuple["AnnotatorFile", ...] = ()
    returns_image: bool = True
    requires_mask: bool = False   # /controlnet/detect answers 422 without one mask per image (inpaint*)
    fn: RunFn | None = field(default=None, repr=False, compare=False)

    def sliders(self) -> list[Slider]:
        """The visible sliders in module_detail order: resolution, a, b, c."""
        return [s for s in (self.resolution, self.slider_a, self.slider_b, self.slider_c) if s is not None]

    def clamp(self, resolution: float, a: float, b: float) -> tuple[int, float, float]:
        """§0.4 for processor_res, threshold_a, threshold_b. Defaults keep their type (100 stays int). Without a
        resolution slider the result is HIDDEN_RESOLUTION."""
        res = HIDDEN_RESOLUTION if self.resolution is None else int(self.resolution.clamp(resolution))
        return res, _clamp(self.slider_a, a), _clamp(self.slider_b, b)

    def run(self, image: np.ndarray, resolution: int, a: float, b: float, *, seed: int = 0,
            store: "AnnotatorStore | None" = None) -> Detected:
        """The detected map at processor resolution. Weight files come first (store.ensure each), so an offline user
        learns which file to fetch before anything else fails."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"{self.label}: image must be an H×W×C uint8 array")
        if self.weights:
            if store is None:
                names = ", ".join(f.filename for f in self.weights)
                raise ValueError(f"{self.label} needs annotator files ({names}) and no annotator store was given")
            for f in self.weights:
                store.ensure(f)
        if self.fn is None:
            raise PreprocessorUnavailable(f"{self.label}: no implementation")
        return self.fn(image, int(resolution), a, b, int(seed), store)


def _clamp(slider: Slider | None, value: float) -> float:
    if slider is not None:
        return slider.clamp(value)
    return HIDDEN_DEFAULT if value < HIDDEN_MIN or value > HIDDEN_MAX else value
