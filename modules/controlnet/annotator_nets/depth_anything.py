"""depth_anything and depth_anything_v2: Depth Anything (dinov2_dpt) on the image at processor resolution, as
sd-webui-controlnet computes them (CONTROLNET-REFERENCE §3.3), grey maps.

After the usual resize and pad (§3.1), the detector swaps the channels (it converts "BGR to RGB" an image that is
already RGB, so the network sees BGR; kept, because the maps must match the extension's), scales to [0, 1], resizes
so both sides are at least 518 and multiples of 14 (aspect kept, cubic), normalises with the ImageNet mean and std,
runs the network, brings the depth back to the padded size (bilinear), stretches it to 0..255 (min → black) and
crops the padding off.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from modules.controlnet.annotator_nets import dinov2_dpt, loaded_nets
from modules.controlnet.annotator_nets.dinov2_dpt import DepthAnything
from modules.controlnet.annotators import HF, AnnotatorFile
from modules.controlnet.detected import Detected

V1_FILE = AnnotatorFile("depth_anything_vitl14.pth", "depth_anything",
                        HF + "spaces/LiheYoung/Depth-Anything/resolve/main/checkpoints/depth_anything_vitl14.pth")
V2_FILE = AnnotatorFile("depth_anything_v2_vitl.safetensors", "depth_anything_v2",
                        HF + "MackinationsAi/Depth-Anything-V2_Safetensors/resolve/main/"
                             "depth_anything_v2_vitl.safetensors")
FILES = {1: V1_FILE, 2: V2_FILE}
NET_SIDE = 518                   # the network's training size: the short side is brought to at least this
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
NETWORK_SIZE = dinov2_dpt.REAL   # the files' widths (tests narrow it to run on small files in the same key layout)


def load(version: int, path: str | Path) -> DepthAnything:
    """DepthAnything `version` (1 or 2) with the weights of its file (strict)."""
    return loaded_nets.load_strict(DepthAnything(version, NETWORK_SIZE), path,
                                   f"Depth Anything{' V2' if version == 2 else ''} ({FILES[version].filename})")


def network_size(height: int, width: int, side: int = NET_SIDE) -> tuple[int, int]:
    """(height, width) for the network: scaled so both are at least `side`, each rounded to a multiple of 14
    (up where rounding would fall below `side`)."""
    scale = max(side / height, side / width)

    def fit(x: float) -> int:
        y = int(np.round(x / dinov2_dpt.PATCH) * dinov2_dpt.PATCH)
        return y if y >= side else int(np.ceil(x / dinov2_dpt.PATCH) * dinov2_dpt.PATCH)

    return fit(scale * height), fit(scale * width)


def network_input(rgb: np.ndarray) -> np.ndarray:
    """3×h×w float32 network input of an H×W×3 uint8 RGB image (channels swapped to BGR, see the docstring)."""
    image = rgb[:, :, ::-1] / 255.0
    height, width = network_size(*image.shape[:2])
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    image = (image - MEAN) / STD
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)


def predict_depth(net: DepthAnything, rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """H×W relative inverse depth of an H×W×3 uint8 RGB image, at the image's size."""
    x = torch.from_numpy(network_input(rgb))[None].to(device)
    depth = net(x)
    return F.interpolate(depth[None], rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]


def depth_map(depth: torch.Tensor) -> np.ndarray:
    """H×W uint8: (depth − min) / (max − min) × 255, truncated. A flat prediction gives black, not 0/0."""
    low, high = depth.min(), depth.max()
    if not bool(high > low):
        return np.zeros(tuple(depth.shape), np.uint8)
    return ((depth - low) / (high - low) * 255.0).cpu().numpy().astype(np.uint8)


def run(image: np.ndarray, resolution: int, store, *, version: int = 1,
        device: torch.device | None = None) -> Detected:
    """depth_anything (version 1) or depth_anything_v2 (version 2) of an image: short side → `resolution`, padded to
    64, run, cropped back. Returns an H×W×3 uint8 grey map."""
    from modules.controlnet.resize import preprocess_resize, to_rgb
    if version not in FILES:
        raise ValueError(f"Depth Anything version must be 1 or 2 (got {version!r})")
    if store is None:
        raise ValueError(f"Depth Anything needs an annotator store to find {FILES[version].filename}")
    path = store.ensure(FILES[version])
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device(f"depth_anything_v{version}", path, lambda p: load(version, p), device) as (net, dev):
        grey = depth_map(predict_depth(net, padded, dev))
    return Detected(np.ascontiguousarray(to_rgb(remove_pad(grey))))
