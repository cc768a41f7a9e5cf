"""The preprocessors that need no weights (§3.2): OpenCV and numpy only, each exactly as sd-webui-controlnet computes
it so that a map made here and one made by the extension give the same picture.

Every function takes (image, resolution, a, b, seed, store) and returns a Detected; `a`/`b` are the module's two
sliders after the §0.4 clamp.
"""
from __future__ import annotations

import cv2
import numpy as np

from modules.controlnet.detected import Detected
from modules.controlnet.preprocessors.base import RESOLUTION, Preprocessor, Slider
from modules.controlnet.resize import preprocess_resize, to_rgb


def _done(image: np.ndarray) -> Detected:
    return Detected(np.ascontiguousarray(to_rgb(image)))


def none(image, resolution, a, b, seed, store) -> Detected:
    """The input as is (an RGB image; grey and RGBA are made RGB)."""
    return _done(image)


def canny(image, resolution, a, b, seed, store) -> Detected:
    """OpenCV Canny on the RGB image at processor resolution: white edges on black."""
    img, remove_pad = preprocess_resize(to_rgb(image), resolution)
    return _done(remove_pad(cv2.Canny(img, int(a), int(b))))


def invert(image, resolution, a, b, seed, store) -> Detected:
    """255 − image, no resize: turns black-on-white line art into the white-on-black lines the models expect."""
    return _done(255 - to_rgb(image))


def threshold(image, resolution, a, b, seed, store) -> Detected:
    """White where every channel is above `a`."""
    img, remove_pad = preprocess_resize(to_rgb(image), resolution)
    out = np.zeros_like(img)
    out[np.min(img, axis=2) > a] = 255
    return _done(remove_pad(out))


def scribble_xdog(image, resolution, a, b, seed, store) -> Detected:
    """Difference of Gaussians (σ 0.5 and 5), darkest channel; a line where twice the difference exceeds `a`."""
    img, remove_pad = preprocess_resize(to_rgb(image), resolution)
    fine = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    coarse = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
    # d = 255 − uint8(clip(255 − min(coarse − fine))) as the extension computes it; 2·d in int32 (the extension's
    # uint8 product wraps for d ≥ 128, dropping the very strongest lines; §3.2 states the intent, 2·d > a)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    out = np.zeros_like(img)
    out[2 * (255 - dog.astype(np.int32)) > a] = 255
    return _done(remove_pad(out))


def lineart_standard(image, resolution, a, b, seed, store) -> Detected:
    """Dark lines on a light background become white lines: how much darker each pixel is than its σ6 blur
    (darkest channel), scaled so a typical line (median of the values above 8, at least 16) maps to 127."""
    img, remove_pad = preprocess_resize(to_rgb(image), resolution)
    x = img.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(blurred - x, axis=2).clip(0, 255)
    lit = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(lit)) if lit.size else 0.0)
    intensity *= 127
    return _done(remove_pad(intensity.clip(0, 255).astype(np.uint8)))


def blur_gaussian(image, resolution, a, b, seed, store) -> Detected:
    """Gaussian blur with σ = `a` at processor resolution (the tile model's input)."""
    img, remove_pad = preprocess_resize(to_rgb(image), resolution)
    return _done(cv2.GaussianBlur(remove_pad(img), (0, 0), float(a)))


def tile_resample(image, resolution, a, b, seed, store) -> Detected:
    """No processor resize; shrunk by the rate `a` (area) when it is at least 1.1."""
    img = to_rgb(image)
    if a < 1.1:
        return _done(img)
    height, width = img.shape[:2]
    size = (max(1, int(width / float(a))), max(1, int(height / float(a))))
    return _done(cv2.resize(img, size, interpolation=cv2.INTER_AREA))


def identity(image, resolution, a, b, seed, store) -> Detected:
    """tile_colorfix(+sharp) and reference_*: the image itself; their effect happens during sampling (§4.8, §4.9)."""
    return _done(image)


def color_grid(image, resolution, a, b, seed, store) -> Detected:
    """t2ia_color_grid: short side → resolution (area), then down 64× (cubic) and back up (nearest): 64-px blocks
    of the image's colours for the T2I colour adapter."""
    img = to_rgb(image)
    height, width = img.shape[:2]
    if height < width:
        new_h, new_w = int(resolution), int(round(width / height * resolution))
    else:
        new_h, new_w = int(round(height / width * resolution)), int(resolution)
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    small = cv2.resize(img, (max(1, new_w // 64), max(1, new_h // 64)), interpolation=cv2.INTER_CUBIC)
    return _done(cv2.resize(small, (new_w, new_h), interpolation=cv2.INTER_NEAREST))


def shuffle(image, resolution, a, b, seed, store) -> Detected:
    """A random smooth warp (the shuffle model's input): two noise fields, each from a (H/256+2)×(W/256+2) grid of
    uniform values upsampled (cubic) and normalised to [0, 1], give every pixel the x and y it is taken from.
    Seeded by `seed` (the extension seeds numpy's global generator with (seed + subseed) & 0xFFFFFFFF; a
    RandomState with that seed draws the same numbers without touching global state)."""
    img, remove_pad = preprocess_resize(to_rgb(image), resolution)
    img = remove_pad(img)
    height, width = img.shape[:2]
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    x = _noise_field(rng, height, width) * float(width - 1)
    y = _noise_field(rng, height, width) * float(height - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return _done(cv2.remap(img, flow, None, cv2.INTER_LINEAR))


def _noise_field(rng: np.random.RandomState, height: int, width: int, cell: int = 256) -> np.ndarray:
    noise = rng.uniform(low=0, high=1, size=((height // cell) + 2, (width // cell) + 2, 1))
    noise = cv2.resize(noise, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    noise = noise[cell:cell + height, cell:cell + width]
    noise -= np.min(noise)
    noise /= max(float(np.max(noise)), 1e-12)
    return noise[:, :, None]


def recolor_luminance(image, resolution, a, b, seed, store) -> Detected:
    """The L channel of Lab (OpenCV's BGR→Lab applied to the RGB array, as the extension does), raised to the
    gamma `a`, as grey RGB. The generated image gets its colours back after decoding (§4.9)."""
    lum = cv2.cvtColor(to_rgb(image), cv2.COLOR_BGR2LAB)[:, :, 0].astype(np.float32) / 255.0
    return _done(cv2.cvtColor(((lum ** float(a)) * 255.0).clip(0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB))


def recolor_intensity(image, resolution, a, b, seed, store) -> Detected:
    """The V channel of HSV (the largest channel) raised to the gamma `a`, as grey RGB."""
    value = cv2.cvtColor(to_rgb(image), cv2.COLOR_BGR2HSV)[:, :, 2].astype(np.float32) / 255.0
    return _done(cv2.cvtColor(((value ** float(a)) * 255.0).clip(0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB))


def inpaint_display(rgba: np.ndarray) -> np.ndarray:
    """What the UI and /controlnet/detect show for an inpaint map: alpha = 255 − mask/2 (the masked area
    half transparent)."""
    shown = rgba.copy()
    shown[:, :, 3] = 255 - rgba[:, :, 3] // 2
    return shown


def inpaint(image, resolution, a, b, seed, store) -> Detected:
    """inpaint_global_harmonious and inpaint_only: the RGBA input as is (alpha = the mask, white = repaint); the
    mask-aware work happens at sampling time (§4.7). An RGB input gets an empty mask (nothing to repaint)."""
    if image.ndim == 3 and image.shape[2] == 4:
        rgba = np.ascontiguousarray(image)
    else:
        rgb = to_rgb(image)
        rgba = np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=2)
    return Detected(rgba, display=inpaint_display(rgba))


# --- the §3.2 entries ---------------------------------------------------------------------------------------------
# Labels, sliders, tags and priorities as sd-webui-controlnet 1.1.455 registers them (ints where it has ints).

_FIDELITY = Slider("Style Fidelity (only for Balanced mode)", 0.5, 0.0, 1.0, 0.01)
_GAMMA = Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001)
_VARIATION = Slider("Variation", 8.0, 3.0, 32.0, 1.0)


def _entry(name, fn, label=None, resolution=RESOLUTION, a=None, b=None, tags=(), priority=0, model_free=False,
           mask=False) -> Preprocessor:
    return Preprocessor(name=name, label=label or name, resolution=resolution, slider_a=a, slider_b=b, slider_c=None,
                        tags=tuple(tags), priority=priority, model_free=model_free, accepts_mask=mask,
                        requires_mask=mask, fn=fn)


BASIC: tuple[Preprocessor, ...] = (
    _entry("none", none, tags=("InstructP2P",), priority=10),
    _entry("canny", canny, a=Slider("Low Threshold", 100, 1, 255, 1), b=Slider("High Threshold", 200, 1, 255, 1),
           tags=("Canny",), priority=100),
    _entry("invert", invert, label="invert (from white bg & black line)", resolution=None,
           tags=("Canny", "Lineart", "Scribble", "MLSD"), priority=20),
    _entry("threshold", threshold, a=Slider("Binarization Threshold", 127, 0, 255)),
    _entry("scribble_xdog", scribble_xdog, a=Slider("XDoG Threshold", 32, 1, 64), tags=("Scribble", "SparseCtrl")),
    _entry("lineart_standard", lineart_standard, label="lineart_standard (from white bg & black line)",
           tags=("Lineart",), priority=100),
    _entry("blur_gaussian", blur_gaussian, a=Slider("Sigma", 9.0, 0.01, 64.0), tags=("Tile",)),
    _entry("tile_resample", tile_resample, a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01), tags=("Tile",),
           priority=100),
    _entry("tile_colorfix", identity, a=_VARIATION, tags=("Tile",)),
    _entry("tile_colorfix+sharp", identity, a=_VARIATION, b=Slider("Sharpness", 1.0, 0.0, 2.0, 0.01), tags=("Tile",)),
    _entry("color", color_grid, label="t2ia_color_grid", tags=("T2I-Adapter",)),
    _entry("shuffle", shuffle, resolution=None, tags=("Shuffle",)),
    _entry("recolor_luminance", recolor_luminance, a=_GAMMA, tags=("Recolor",), priority=100),
    _entry("recolor_intensity", recolor_intensity, a=_GAMMA, tags=("Recolor",)),
    _entry("reference_only", identity, a=_FIDELITY, tags=("Reference",), priority=100, model_free=True),
    _entry("reference_adain", identity, a=_FIDELITY, tags=("Reference",), model_free=True),
    _entry("reference_adain+attn", identity, a=_FIDELITY, tags=("Reference",), model_free=True),
    _entry("inpaint", inpaint, label="inpaint_global_harmonious", resolution=None, tags=("Inpaint",), mask=True),
    _entry("inpaint_only", inpaint, resolution=None, tags=("Inpaint",), priority=100, mask=True),
)
