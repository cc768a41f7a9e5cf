"""Denoised line art from anime pictures (lineart_anime_denoise, manga_line/erika.pth).

The network is the MangaLineExtraction residual U-Net: pre-activation residual blocks (batch norm with ε 1e-3,
LeakyReLU 0.2, convolution) in five encoder groups of 2, 3, 5, 7 and 12 blocks (24, 48, 96, 192, 384 channels; the
last block of every group but the first halves the size), four decoder groups of 7, 5, 3 and 2 blocks whose first
block doubles the size (nearest) and whose output is added to the encoder's of the same size, then 2 blocks of 16
channels and a 1×1 projection to one channel. A block's shortcut is a 1×1 convolution where the channels or the size
change, the identity elsewhere. Keys: `block<i>.model.<j>.{conv1,residual}.model.{0,2}` (norm, convolution),
`block<i>.model.<j>.shortcut.model.0`, `conv15.model.{0,2}`; DataParallel's "module." prefix is dropped if present.

It reads the grey image in 0..255 (not normalised) and gives paper brightness; 255 − that is the map: white lines
on black.
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

MANGA_LINE_FILE = annotators_file("erika.pth", "manga_line")

ENCODER = ((1, 24, 2), (24, 48, 3), (48, 96, 5), (96, 192, 7), (192, 384, 12))   # (in, out, blocks)
DECODER = ((384, 192, 7), (192, 96, 5), (96, 48, 3), (48, 24, 2))


class NormActConv(nn.Module):
    """Batch norm, LeakyReLU 0.2, k×k convolution ("same" padding); `upsample`: then 2× nearest."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, upsample: bool = False) -> None:
        super().__init__()
        layers = [nn.BatchNorm2d(cin, eps=1e-3), nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, kernel, stride, kernel // 2)]
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Shortcut(nn.Module):
    """x + y, x first brought to y's channels and size by a 1×1 convolution (and 2× nearest) where they differ."""

    def __init__(self, cin: int, cout: int, stride: int = 1, upsample: bool = False) -> None:
        super().__init__()
        self.model = None
        if cin != cout or stride != 1:
            layers = [nn.Conv2d(cin, cout, 1, stride)]
            if upsample:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y + (x if self.model is None else self.model(x))


class ResBlock(nn.Module):
    """Two NormActConv and a shortcut; `stride` 2 halves the size, `upsample` doubles it."""

    def __init__(self, cin: int, cout: int, stride: int = 1, upsample: bool = False) -> None:
        super().__init__()
        self.conv1 = NormActConv(cin, cout, 3, stride, upsample)
        self.residual = NormActConv(cout, cout)
        self.shortcut = Shortcut(cin, cout, stride, upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x, self.residual(self.conv1(x)))


class ResGroup(nn.Module):
    """`count` blocks. Encoder groups halve the size in their last block (unless `keep_size`); decoder groups
    (`upsample`) double it in their first."""

    def __init__(self, cin: int, cout: int, count: int, keep_size: bool = False, upsample: bool = False) -> None:
        super().__init__()
        blocks = []
        for i in range(count):
            stride = 2 if i == count - 1 and not keep_size and not upsample else 1
            blocks.append(ResBlock(cin if i == 0 else cout, cout, stride, upsample and i == 0))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MangaLineNet(nn.Module):
    """Grey 0..255 (N×1×H×W, H and W multiples of 16) → N×1×H×W paper brightness (≈ 0..255)."""

    def __init__(self) -> None:
        super().__init__()
        for i, (cin, cout, count) in enumerate(ENCODER):
            self.add_module(f"block{i}", ResGroup(cin, cout, count, keep_size=i == 0))
        for i, (cin, cout, count) in enumerate(DECODER):
            self.add_module(f"block{5 + i}", ResGroup(cin, cout, count, upsample=True))
        self.block9 = ResGroup(24, 16, 2, keep_size=True)
        self.conv15 = NormActConv(16, 1, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(len(ENCODER)):
            x = getattr(self, f"block{i}")(x)
            skips.append(x)
        skips.pop()                        # the deepest output is the decoder's input, not a skip
        for i in range(len(DECODER)):
            x = getattr(self, f"block{5 + i}")(x) + skips.pop()
        return self.conv15(self.block9(x))


def load_network(path: str | Path) -> MangaLineNet:
    return loaded_nets.load_strict(MangaLineNet(), path, "manga_line (lineart_anime_denoise)", strip_prefix="module.")


def ink_map(paper: np.ndarray) -> np.ndarray:
    """The network's paper brightness (float, ≈ 0..255) → white lines on black, uint8: 255 − it, clipped."""
    return (255 - paper).clip(0, 255).astype(np.uint8)


def run(image: np.ndarray, resolution: int, store, *, device: torch.device | None = None) -> Detected:
    """White lines on black at processor resolution (§3.1 resize and padding)."""
    if store is None:
        raise ValueError("lineart_anime_denoise needs an annotator store to find erika.pth")
    path = store.ensure(MANGA_LINE_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    grey = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
    with loaded_nets.on_device("manga_line", path, load_network, device) as (net, dev):
        paper = net(torch.from_numpy(grey).to(dev).float()[None, None])[0, 0].cpu().numpy()
    return Detected(to_rgb(remove_pad(ink_map(paper))))
