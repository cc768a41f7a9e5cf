"""Face restoration (A1111's `modules.face_restoration`): GFPGAN and CodeFormer.

- `FaceRestoration`: A1111's base class (`name()`, `restore(np_image)`); shared.face_restorers lists the runtime's
  restorers (CodeFormer, GFPGAN), and an extension may append its own.
- `restore_faces(np_image)`: A1111's function; restores with the restorer the face_restoration_model setting names.
- `for_runtime(rt)`: the runtime's FaceRestorers, made on first use (weights are read only when a restorer runs).
- `apply(image, …)`: the step txt2img/img2img ("Restore faces") and Extras (visibility, CodeFormer weight) run.

The networks: restorers.py (spandrel), retinaface.py (the detector), align.py (alignment and paste-back), weights.py
(A1111's folders, file names and URLs; download on first use).
"""
from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from modules.face_restoration.restorers import (CodeFormerRestorer, CommonFaceRestoration, FaceRestoration,
                                                FaceRestorers, GFPGANRestorer, for_paths)
from modules.face_restoration.weights import WeightsMissing

__all__ = ["FaceRestoration", "CommonFaceRestoration", "GFPGANRestorer", "CodeFormerRestorer", "FaceRestorers",
           "WeightsMissing", "for_runtime", "restore_faces", "apply", "postprocess"]

_guard = threading.Lock()
# the restorers of the runtime that last asked for them (modules.shared is bound to that runtime): what A1111's
# restore_faces(np_image), which takes no runtime, works with
_current: FaceRestorers | None = None


def for_runtime(rt) -> FaceRestorers:
    """The runtime's restorers: A1111's folders under the models folder (or --gfpgan-models-path /
    --codeformer-models-path where given), on the runtime's device."""
    global _current
    with _guard:
        restorers = getattr(rt, "face_restorers", None)
        if restorers is None:
            args = rt.args
            restorers = rt.face_restorers = for_paths(
                rt.paths.models, rt.device.device, getattr(args, "gfpgan_models_path", None),
                getattr(args, "codeformer_models_path", None))
            options = rt.options
            restorers.setting = lambda key, default=None: getattr(options, key, default)
            info = options.info.get("face_restoration_model")
            if info is not None:   # Settings offers every restorer, an extension's too (A1111's radio does)
                info.choices = restorers.names
        _current = restorers
        return restorers


def restore_faces(np_image: np.ndarray) -> np.ndarray:
    """A1111's modules.face_restoration.restore_faces: the restorer named by the face_restoration_model setting
    (the first one when the setting is None); the image unchanged when there is none."""
    restorers = _current
    if restorers is None:
        return np_image
    name = restorers.setting("face_restoration_model", None)
    for restorer in restorers.list:
        if name is None or restorer.name() == name:
            if isinstance(restorer, CodeFormerRestorer):
                return restorer.restore(np_image, w=float(restorers.setting("code_former_weight", 0.5)))
            return restorer.restore(np_image)
    return np_image


def apply(image: Image.Image, restorers: FaceRestorers, name: str, codeformer_weight: float | None = None,
          unload: bool = False) -> Image.Image:
    """One image through the restorer `name` (txt2img/img2img's "Restore faces")."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    out = Image.fromarray(restorers.restore(rgb, name, codeformer_weight, unload))
    out.info = dict(image.info)
    return out


def postprocess(image: Image.Image, restorers: FaceRestorers, gfpgan_visibility: float = 0.0,
                codeformer_visibility: float = 0.0, codeformer_weight: float = 0.0,
                unload: bool = False) -> tuple[Image.Image, dict]:
    """Extras' face restoration, in A1111's order (GFPGAN, then CodeFormer): each restorer's result blended over
    its input by its visibility; a visibility of 0 skips it. Returns the image and the infotext entries A1111
    writes ("GFPGAN visibility", "CodeFormer visibility", "CodeFormer weight")."""
    from modules.engine.params import ParamError
    for field, value in (("gfpgan_visibility", gfpgan_visibility), ("codeformer_visibility", codeformer_visibility),
                         ("codeformer_weight", codeformer_weight)):
        if not 0.0 <= float(value) <= 1.0:
            raise ParamError(field, f"must be between 0 and 1, got {value!r}")
    info: dict = {}
    if gfpgan_visibility > 0:
        image = _blend(image, apply(image, restorers, "GFPGAN", unload=unload), gfpgan_visibility)
        info["GFPGAN visibility"] = round(float(gfpgan_visibility), 3)
    if codeformer_visibility > 0:
        image = _blend(image, apply(image, restorers, "CodeFormer", codeformer_weight, unload),
                       codeformer_visibility)
        info["CodeFormer visibility"] = round(float(codeformer_visibility), 3)
        info["CodeFormer weight"] = round(float(codeformer_weight), 3)
    return image, info


def _blend(before: Image.Image, after: Image.Image, visibility: float) -> Image.Image:
    before = before.convert("RGB")
    return after if visibility >= 1.0 else Image.blend(before, after, float(visibility))
