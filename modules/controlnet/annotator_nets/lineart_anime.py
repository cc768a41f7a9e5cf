"""Line art from anime pictures (lineart_anime, netG.pth).

The network is a pix2pix U-Net with 8 levels (64, 128, 256, 512, 512, 512, 512, 512 channels): each level a 4×4
stride-2 convolution down (LeakyReLU 0.2 before it, except on the input) and a 4×4 transposed convolution up (ReLU
before it), the level's input concatenated to its output (the skip connection), instance normalisation without
learned parameters between, tanh at the top. The file nests the levels as `model.model.<i>` down to the innermost
(indices 0/1/3 at the top, 1/3/5 in the middle, 1/3 innermost, as pix2pix builds them) and may carry DataParallel's
"module." before every key (the references drop it; so do we).

Its input must be a multiple of 256 px on each side, so the padded image is enlarged to the next multiples (cubic),
the result brought back; RGB in [-1, 1] in, ink darkness (1 = paper) out, inverted to white lines on black.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from modules.controlnet.annotator_nets import loaded_nets
from modules.controlnet.annotators import annotators_file
from modules.controlnet.detected import Detected
from modules.controlnet.resize import preprocess_resize, to_rgb

LINEART_ANIME_FILE = annotators_file("netG.pth", "lineart_anime")

LEVELS = 8
BASE = 64
MULTIPLE = 2 ** LEVELS   # the input side the 8 halvings need


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)


class UnetLevel(nn.Module):
    """One level: down, the inner levels, up; every level but the outermost returns [input, output] stacked."""

    def __init__(self, outer: int, inner: int, inside: "UnetLevel | None", in_channels: int | None = None) -> None:
        super().__init__()
        self.outermost = in_channels is not None
        if self.outermost:
            layers = [_down(in_channels, inner), inside, nn.ReLU(True), _up(inner * 2, outer), nn.Tanh()]
        elif inside is None:
            layers = [nn.LeakyReLU(0.2, True), _down(outer, inner), nn.ReLU(True), _up(inner, outer),
                      nn.InstanceNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), _down(outer, inner), nn.InstanceNorm2d(inner), inside, nn.ReLU(True),
                      _up(inner * 2, outer), nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class LineartAnimeUnet(nn.Module):
    """RGB [-1, 1] (N×3×H×W, H and W multiples of 256) → N×1×H×W in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        # channels per level from the top: 64, 128, 256, then 512 for the remaining five
        widths = [min(BASE * 2 ** i, BASE * 8) for i in range(LEVELS)]
        level = None
        for i in range(LEVELS - 1, 0, -1):
            level = UnetLevel(widths[i - 1], widths[i], level)
        self.model = UnetLevel(1, widths[0], level, in_channels=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def load_network(path: str | Path) -> LineartAnimeUnet:
    return loaded_nets.load_strict(LineartAnimeUnet(), path, "lineart_anime", strip_prefix="module.")


def ink_map(paper: np.ndarray, width: int, height: int) -> np.ndarray:
    """The network's paper brightness (float, ≈ 0..255, at the enlarged size) → white lines on black, uint8, at
    width × height (cubic)."""
    paper = cv2.resize(paper, (width, height), interpolation=cv2.INTER_CUBIC)
    return 255 - paper.clip(0, 255).astype(np.uint8)


def run(image: np.ndarray, resolution: int, store, *, device: torch.device | None = None) -> Detected:
    """White lines on black at processor resolution (§3.1 resize and padding)."""
    if store is None:
        raise ValueError("lineart_anime needs an annotator store to find netG.pth")
    path = store.ensure(LINEART_ANIME_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    height, width = padded.shape[:2]
    big_h, big_w = (MULTIPLE * int(np.ceil(n / MULTIPLE)) for n in (height, width))
    enlarged = cv2.resize(padded, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    with loaded_nets.on_device("lineart_anime", path, load_network, device) as (net, dev):
        x = torch.from_numpy(enlarged).to(dev).float().div(127.5).sub(1.0).permute(2, 0, 1)[None]
        paper = (net(x)[0, 0] * 127.5 + 127.5).cpu().numpy()
    return Detected(to_rgb(remove_pad(ink_map(paper, width, height))))
