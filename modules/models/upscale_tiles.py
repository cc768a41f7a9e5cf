"""Running an image-to-image model (an upscaler) over an image in overlapping tiles, so that large images fit.

Our own code, because spandrel runs a model on one tensor and leaves tiling to its users, and A1111's tile grid
(modules/image_tiles.py) works on 8-bit Pillow tiles. Here the image stays a float tensor:

- the image is cut into cores of `tile` × `tile` pixels (the last row/column may be narrower); each core is run with
  `overlap` pixels of its neighbours around it as context (clamped at the image edge), as Real-ESRGAN's `tile_pad`
  does, so a pixel near a cut still sees its neighbourhood;
- the outputs are blended across each cut with complementary linear ramps `overlap // 2` pixels wide on either side
  (scaled to the output), so there is no hard seam, and everywhere each output pixel comes from tiles that saw at
  least `overlap // 2` pixels of context around it. When that covers the model's receptive field, the tiled result
  equals the untiled one up to float rounding (tests/unit/test_upscaler_models.py checks it).

Tensors are BCHW floats in 0..1; `model` is any callable tensor → tensor whose output is `scale` times larger
(a spandrel ImageModelDescriptor: it pads odd sizes itself).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image


def _cores(length: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def _ramp(out_len: int, scale: int, core: tuple[int, int], length: int, feather: int) -> torch.Tensor:
    """The 1-D weight of one tile's output along one axis: 1 over its core, linear ramps of `feather` input pixels
    on each side of an inner cut (0 at `feather` outside the core, ½ at the cut), none at the image's edges.
    Neighbouring tiles' ramps add up to exactly 1."""
    centres = (torch.arange(out_len, dtype=torch.float32) + 0.5) / scale   # output pixel centres, input units
    weight = torch.ones(out_len)
    if feather <= 0:
        inside = (centres >= core[0]) & (centres < core[1])
        return inside.float()
    if core[0] > 0:
        weight = torch.minimum(weight, ((centres - core[0] + feather) / (2 * feather)).clamp(0, 1))
    if core[1] < length:
        weight = torch.minimum(weight, ((core[1] + feather - centres) / (2 * feather)).clamp(0, 1))
    return weight


@torch.inference_mode()
def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
              overlap: int, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`model(image)`, computed tile by tile (tile <= 0, or an image no larger than one tile: in one go).
    `on_tile(done, total)` is called after each tile (progress, interruption by raising)."""
    _, channels, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        out = model(image)
        if on_tile:
            on_tile(1, 1)
        return out
    overlap = max(0, int(overlap))
    feather = min(overlap // 2, tile // 2)
    rows, cols = _cores(height, tile), _cores(width, tile)
    out = None
    total, done = len(rows) * len(cols), 0
    for y0, y1 in rows:
        for x0, x1 in cols:
            # the core with `overlap` pixels of context, clamped to the image
            cy0, cy1 = max(0, y0 - overlap), min(height, y1 + overlap)
            cx0, cx1 = max(0, x0 - overlap), min(width, x1 + overlap)
            result = model(image[:, :, cy0:cy1, cx0:cx1])
            if out is None:
                out = torch.zeros(image.shape[0], result.shape[1], height * scale, width * scale,
                                  dtype=torch.float32, device=result.device)
            # keep the part within `feather` of the core, weighted by the ramps
            ky0, ky1 = max(0, y0 - feather), min(height, y1 + feather)
            kx0, kx1 = max(0, x0 - feather), min(width, x1 + feather)
            wy = _ramp(height * scale, scale, (y0, y1), height, feather)[ky0 * scale:ky1 * scale]
            wx = _ramp(width * scale, scale, (x0, x1), width, feather)[kx0 * scale:kx1 * scale]
            piece = result[:, :, (ky0 - cy0) * scale:(ky1 - cy0) * scale, (kx0 - cx0) * scale:(kx1 - cx0) * scale]
            weight = (wy[:, None] * wx[None, :]).to(piece.device, torch.float32)
            out[:, :, ky0 * scale:ky1 * scale, kx0 * scale:kx1 * scale] += piece.float() * weight
            done += 1
            if on_tile:
                on_tile(done, total)
    return out


def pil_to_tensor_bgr(image: Image.Image) -> torch.Tensor:
    """1×3×H×W float 0..1 in BGR order: A1111 feeds upscaler models BGR (ESRGAN's OpenCV heritage), so the same
    model file gives the same colours here."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)[:, :, ::-1] / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)


def tensor_bgr_to_pil(tensor: torch.Tensor) -> Image.Image:
    arr = tensor[0].detach().float().cpu().clamp(0, 1).mul(255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)[:, :, ::-1]), "RGB")
