"""Line art from photos (lineart_realistic with sk_model.pth, lineart_coarse with sk_model2.pth).

The network of both files is the same small image-to-image generator (the "informative drawings" sketch model): a
7×7 stem to 64 channels, two stride-2 convolutions to 256, three residual blocks, two transposed convolutions back
to full size and a 7×7 projection to one channel through a sigmoid. Instance normalisation without learned
parameters after every convolution but the last; reflection padding around the 7×7 and residual convolutions. The
files are plain state dicts: `model0.1`, `model1.{0,3}`, `model2.<i>.conv_block.{1,5}`, `model3.{0,3}`,
`model4.1`, each `.weight` and `.bias`.

It takes RGB in [0, 1] and gives ink darkness as brightness (1 = paper); the map is inverted so that the lines are
white on black, as the lineart ControlNet expects (§3.3).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from modules.controlnet.annotator_nets import loaded_nets
from modules.controlnet.annotators import annotators_file
from modules.controlnet.detected import Detected
from modules.controlnet.resize import preprocess_resize, to_rgb

LINEART_FILE = annotators_file("sk_model.pth", "lineart")
LINEART_COARSE_FILE = annotators_file("sk_model2.pth", "lineart")


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """x + (pad, 3×3, norm, ReLU, pad, 3×3, norm)(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), *_norm_relu(channels),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """RGB [0, 1] (N×3×H×W, H and W multiples of 4) → N×1×H×W in (0, 1)."""

    def __init__(self, residual_blocks: int = 3) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), *_norm_relu(64))
        self.model1 = nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1), *_norm_relu(128),
                                    nn.Conv2d(128, 256, 3, stride=2, padding=1), *_norm_relu(256))
        self.model2 = nn.Sequential(*(ResidualBlock(256) for _ in range(residual_blocks)))
        self.model3 = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1), *_norm_relu(128),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1), *_norm_relu(64))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = stage(x)
        return x


def load_network(path: str | Path) -> LineartGenerator:
    """sk_model.pth or sk_model2.pth, strictly."""
    return loaded_nets.load_strict(LineartGenerator(), path, "lineart")


def ink_map(paper: np.ndarray) -> np.ndarray:
    """The network's paper brightness (0..1, float) → white lines on black, uint8: 255 − trunc(255 · paper)."""
    return 255 - (paper * 255.0).clip(0, 255).astype(np.uint8)


def run(image: np.ndarray, resolution: int, store, *, coarse: bool = False,
        device: torch.device | None = None) -> Detected:
    """White lines on black at processor resolution (§3.1 resize and padding); `coarse` uses sk_model2.pth."""
    if store is None:
        raise ValueError("lineart needs an annotator store to find its weight file")
    f = LINEART_COARSE_FILE if coarse else LINEART_FILE
    path = store.ensure(f)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device("lineart_coarse" if coarse else "lineart", path, load_network, device) as (net, dev):
        x = torch.from_numpy(padded).to(dev).float().div(255.0).permute(2, 0, 1)[None]
        paper = net(x)[0, 0].cpu().numpy()
    return Detected(to_rgb(remove_pad(ink_map(paper))))
