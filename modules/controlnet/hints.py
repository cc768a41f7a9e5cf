"""From a unit to its control: the input image (the unit's own, or img2img's), the preprocessor, the detected map
at each size the sampler needs, and the tensor the model takes (CONTROLNET-REFERENCE §4.1, §4.2, §6.4)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from modules.controlnet.units import ControlImage, ControlNetUnit
from modules.engine.params import ParamError


@dataclass
class UnitInput:
    """What a unit's preprocessor gets: RGB (RGBA for inpaint modules, the mask as alpha) and the size the
    detected map is computed from."""
    array: np.ndarray
    source: str          # "unit", "img2img", "openpose_json"


@dataclass
class UnitControl:
    """A unit's detected map, and the map resized to each generation size, as tensors on demand."""
    detected: np.ndarray | None                      # at preprocessor resolution (None for a pose drawn directly)
    resize_mode: str
    pose_doc: object = None                          # a parsed pose document drawn at each target size
    maps: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    tensors: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def map_at(self, width: int, height: int) -> np.ndarray:
        key = (height, width)
        if key not in self.maps:
            if self.pose_doc is not None:
                from modules.controlnet.openpose import draw
                self.maps[key] = draw.draw(self.pose_doc, width, height, scale_strokes=True)
            else:
                from modules.controlnet.resize import resize_map
                self.maps[key] = resize_map(self.detected, width, height, self.resize_mode)
        return self.maps[key]

    def tensor_at(self, width: int, height: int, channels: int, device, dtype) -> torch.Tensor:
        key = (height, width, channels, str(device), dtype)
        if key not in self.tensors:
            m = self.map_at(width, height)
            t = torch.from_numpy(np.array(m, dtype=np.float32)).div(255).permute(2, 0, 1)[None]
            if m.shape[2] == 4:     # inpaint maps: the inpaint ControlNet's protocol, −1 where repainted (§4.7)
                t = torch.where(t[:, 3:4] > 0.5, torch.full_like(t[:, :3], -1.0), t[:, :3])
            t = t[:, :channels] if channels < t.shape[1] else t
            self.tensors[key] = t.to(device=device, dtype=dtype)
        return self.tensors[key]


def unit_input(unit: ControlNetUnit, pre, p, where: str, ignore_noninpaint_mask: bool = False) -> UnitInput:
    """§4.1 step 1: the unit's image, else img2img's first init image (with img2img's mask for inpaint modules)."""
    image: ControlImage | None = unit.image
    source = "unit"
    if image is None and getattr(p, "init_images", None):
        from modules.controlnet.units import to_mask, to_rgb
        from modules.engine import image_ops
        init = image_ops.resize_image(_a1111_resize(p.resize_mode), p.init_images[0], p.width, p.height)
        mask = None
        if getattr(p, "image_mask", None) is not None and pre.accepts_mask:
            prepared = image_ops.prepare_mask(p.image_mask, bool(p.inpainting_mask_invert), 0)
            mask = to_mask(image_ops.resize_image(_a1111_resize(p.resize_mode), prepared, p.width, p.height),
                           where + ".mask")
        image, source = ControlImage(to_rgb(init, where), mask), "img2img"
    if image is None:
        raise ParamError(f"{where}.image", "this ControlNet unit is enabled but has no input image (give an image, "
                                           "an openpose_json, or use img2img, whose image it then takes)")
    rgb, mask = image.image, image.mask
    if pre.accepts_mask:
        if mask is None:
            if source == "img2img":
                mask = np.zeros(rgb.shape[:2], np.uint8)
            else:
                raise ParamError(f"{where}.mask", f"preprocessor {pre.label} needs a mask (white = repaint)")
        return UnitInput(np.dstack([rgb, mask]), source)
    if mask is not None and not ignore_noninpaint_mask and _is_drawing(mask):
        # the "canvas scribble" rule: a real drawing on the canvas is the control, not the photo under it
        return UnitInput(np.repeat(mask[..., None], 3, axis=2), source)
    return UnitInput(rgb, source)


def _is_drawing(mask: np.ndarray) -> bool:
    n = mask.size
    return not (np.count_nonzero(mask <= 5) > 0.99 * n or np.count_nonzero(mask >= 250) > 0.99 * n)


def _a1111_resize(mode: int) -> int:
    """img2img's resize mode as image_ops takes it; 3 (latent upscale) resizes the control like Just resize."""
    return 0 if mode == 3 else int(mode)


def processor_resolution(unit: ControlNetUnit, pre, image_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
    res, _, _ = pre.clamp(unit.processor_res, unit.threshold_a, unit.threshold_b)
    if unit.pixel_perfect and pre.resolution is not None:
        from modules.controlnet.resize import pixel_perfect_resolution
        res = pixel_perfect_resolution(image_hw, target_hw, unit.resize_mode)
    return int(res)


def prepare_control(unit: ControlNetUnit, pre, p, where: str, seed: int, store,
                    ignore_noninpaint_mask: bool = False, cache=None) -> UnitControl:
    """Runs the preprocessor once; the result is resized per generation size later (base and hires)."""
    if unit.openpose_json is not None:
        from modules.controlnet.openpose import pose_json
        try:
            docs = pose_json.parse_documents(unit.openpose_json)
        except ValueError as exc:
            raise ParamError(f"{where}.openpose_json", str(exc)) from None
        if not docs:
            raise ParamError(f"{where}.openpose_json", "holds no pose document")
        return UnitControl(None, unit.resize_mode, pose_doc=docs[0])
    given = unit_input(unit, pre, p, where, ignore_noninpaint_mask)
    res = processor_resolution(unit, pre, given.array.shape[:2], (p.height, p.width))
    _, a, b = pre.clamp(unit.processor_res, unit.threshold_a, unit.threshold_b)
    if cache is not None:
        detected = cache.run(pre, given.array, res, a, b, seed=seed, store=store)
    else:
        detected = pre.run(given.array, res, a, b, seed=seed, store=store)
    if detected.image is None:
        raise ParamError(f"{where}.module", f"preprocessor {pre.label} gives no image; it serves models this "
                                            "program does not run yet")
    return UnitControl(detected.image, unit.resize_mode)
