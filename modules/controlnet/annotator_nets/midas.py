"""depth_midas and normal_midas: MiDaS DPT-Hybrid (dpt_hybrid-midas-501f0c75.pt) on the image at processor
resolution, as sd-webui-controlnet computes them (CONTROLNET-REFERENCE §3.3).

The network sees the whole padded image (short side = resolution, sides padded to multiples of 64), RGB scaled to
[−1, 1], and returns relative inverse depth. depth_midas is that depth stretched to 0..255 (min → black, max →
white). normal_midas derives normals from the depth's gradients: 3×3 Sobel x and y of the raw depth, a constant
z of 2π, gradients zeroed where the stretched depth is below the background threshold (so the far background faces
the viewer), normalised, mapped to 0..255 and written in the order (z, y, x), which is what the ControlNet 1.0 normal
model was trained on.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from modules.controlnet.annotator_nets import loaded_nets
from modules.controlnet.annotator_nets import dpt_hybrid
from modules.controlnet.annotator_nets.dpt_hybrid import MidasDptHybrid
from modules.controlnet.annotators import HF, AnnotatorFile
from modules.controlnet.detected import Detected

MIDAS_FILE = AnnotatorFile("dpt_hybrid-midas-501f0c75.pt", "midas",
                           HF + "lllyasviel/ControlNet/resolve/main/annotator/ckpts/dpt_hybrid-midas-501f0c75.pt")
NORMAL_Z = 2.0 * np.pi       # the extension's fixed `a`: larger flattens the normals towards the viewer
NETWORK_SIZE = dpt_hybrid.REAL   # the file's widths (tests narrow it to run on small files in the same key layout)


def load(path: str | Path) -> MidasDptHybrid:
    """MidasDptHybrid with the weights of a dpt_hybrid-midas-501f0c75.pt (strict)."""
    return loaded_nets.load_strict(MidasDptHybrid(NETWORK_SIZE), path,
                                   "MiDaS DPT-Hybrid (dpt_hybrid-midas-501f0c75.pt)")


def predict_depth(net: MidasDptHybrid, rgb: np.ndarray, device: torch.device) -> np.ndarray:
    """H×W float32 relative inverse depth of an H×W×3 uint8 RGB image whose sides are multiples of 32."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device=device, dtype=torch.float32)
    x = (x / 127.5 - 1.0).permute(2, 0, 1)[None]
    return net(x)[0].float().cpu().numpy()


def normalised(depth: np.ndarray) -> np.ndarray:
    """Depth stretched to [0, 1]. A flat prediction (no relief at all) is 0 everywhere rather than 0/0."""
    low = depth - depth.min()
    top = float(low.max())
    return low / top if top > 0 else np.zeros_like(low)


def depth_map(depth: np.ndarray) -> np.ndarray:
    """H×W uint8: the stretched depth × 255 (truncated, as the extension's astype does)."""
    return (normalised(depth) * 255.0).clip(0, 255).astype(np.uint8)


def normal_map(depth: np.ndarray, background: float, z: float = NORMAL_Z) -> np.ndarray:
    """H×W×3 uint8 normals from the depth's gradients (see the module docstring); `background` in [0, 1]."""
    depth = depth.astype(np.float32)
    gx = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    far = normalised(depth) < background
    gx[far] = 0
    gy[far] = 0
    normal = np.stack([gx, gy, np.full_like(gx, z)], axis=2)
    normal /= np.sqrt(np.sum(normal ** 2.0, axis=2, keepdims=True))
    return np.ascontiguousarray((normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)[:, :, ::-1])


def run(image: np.ndarray, resolution: int, store, *, normals: bool = False, background: float = 0.4,
        device: torch.device | None = None) -> Detected:
    """depth_midas (default) or normal_midas (`normals`, with the background threshold) of an image: short side →
    `resolution`, padded to 64, run, cropped back. Returns an H×W×3 uint8 map."""
    from modules.controlnet.resize import preprocess_resize, to_rgb
    if store is None:
        raise ValueError("MiDaS needs an annotator store to find dpt_hybrid-midas-501f0c75.pt")
    if normals and not 0.0 <= float(background) <= 1.0:
        raise ValueError(f"normal_midas: Normal Background Threshold must be within 0..1 (got {background})")
    path = store.ensure(MIDAS_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device("midas", path, load, device) as (net, dev):
        depth = predict_depth(net, padded, dev)
    result = normal_map(depth, float(background)) if normals else to_rgb(depth_map(depth))
    return Detected(np.ascontiguousarray(to_rgb(remove_pad(result))))
