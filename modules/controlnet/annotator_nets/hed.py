"""HED soft edges (softedge_hed, softedge_hedsafe, scribble_hed) with lllyasviel's ControlNetHED.pth.

The network is lllyasviel's re-trained HED: five VGG-like stages (2, 2, 3, 3, 3 convolutions of 64…512 channels,
2×2 max-pool between stages), each ending in a 1×1 projection to one edge logit map. It takes RGB in 0..255 minus a
learned per-channel offset (`norm`); the five maps are brought to the input size (bilinear), averaged, and a sigmoid
gives the edge strength. The file is a plain state dict: `norm`, `block<i>.convs.<j>.{weight,bias}`,
`block<i>.projection.{weight,bias}`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from modules.controlnet.annotator_nets import edge_maps, loaded_nets
from modules.controlnet.annotators import annotators_file
from modules.controlnet.detected import Detected

HED_FILE = annotators_file("ControlNetHED.pth", "hed")

# (input channels, output channels, convolutions) per stage
STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


class HedStage(torch.nn.Module):
    """3×3 convolutions with ReLU, and a 1×1 projection of the result to one edge logit map."""

    def __init__(self, in_channels: int, out_channels: int, layers: int) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1) for i in range(layers))
        self.projection = torch.nn.Conv2d(out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HedNet(torch.nn.Module):
    """Five stages, each after a 2×2 max-pool except the first; returns the five logit maps (full size to 1/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, layers) in enumerate(STAGES, start=1):
            self.add_module(f"block{i}", HedStage(cin, cout, layers))

    def forward(self, rgb255: torch.Tensor) -> list[torch.Tensor]:
        x = rgb255 - self.norm
        maps = []
        for i in range(1, len(STAGES) + 1):
            if i > 1:
                x = F.max_pool2d(x, 2, 2)
            x, logits = getattr(self, f"block{i}")(x)
            maps.append(logits)
        return maps


def load(path: str | Path) -> HedNet:
    """HedNet with the weights of a ControlNetHED.pth (strict)."""
    return loaded_nets.load_strict(HedNet(), path, "HED (ControlNetHED.pth)")


def edge_strength(net: HedNet, rgb: np.ndarray, device: torch.device) -> np.ndarray:
    """H×W float64 edge strength in [0, 1] of an H×W×3 uint8 RGB image. The five maps are resized with OpenCV's
    bilinear filter on the CPU, as the reference does, so our maps match the extension's to the last grey level."""
    height, width = rgb.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device=device, dtype=torch.float32).permute(2, 0, 1)[None]
    maps = [m[0, 0].float().cpu().numpy() for m in net(x)]
    resized = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps], axis=2)
    return 1.0 / (1.0 + np.exp(-np.mean(resized, axis=2).astype(np.float64)))


def run(image: np.ndarray, resolution: int, store, *, safe: bool = False, scribble: bool = False,
        device: torch.device | None = None) -> Detected:
    """softedge_hed (default), softedge_hedsafe (`safe`: strengths quantised to 0, ½, 1) or scribble_hed
    (`scribble`: binary strokes) of an image: short side → `resolution`, padded to 64, run, cropped back."""
    from modules.controlnet.resize import preprocess_resize, to_rgb
    if store is None:
        raise ValueError("HED needs an annotator store to find ControlNetHED.pth")
    path = store.ensure(HED_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device("hed", path, load, device) as (net, dev):
        edge = edge_strength(net, padded, dev)
    if safe:
        edge = edge_maps.safe_step(edge)
    grey = remove_pad(edge_maps.to_uint8(edge))
    if scribble:
        grey = edge_maps.scribble(grey)
    return Detected(np.ascontiguousarray(to_rgb(grey)))
