"""TEED soft edges (softedge_teed, slider "Safe Steps") with 7_model.pth.

TEED ("Tiny and Efficient Edge Detector", Soria et al. 2023; ~58k parameters) is a small LDC-like network with the
Smish activation, x·tanh(ln(1 + sigmoid(x))): two double-conv blocks (16 channels at ½ size, 32 at ½), one dense
layer (48 channels at ¼) fed by a max-pooled skip, three upsampling heads (1×1 conv, Smish, transposed conv ×2 per
octave) each giving one full-size edge logit map, and a depthwise "double fusion" of the three into a fourth. It
takes RGB in 0..255 as is (no normalisation); the four maps are averaged and a sigmoid gives the edge strength, as
the extension does. The file is a plain state dict of the authors' module names (block_1, dblock_3.denselayer1,
up_block_<n>.features.<i>, block_cat.DWconv<n>, ...).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modules.controlnet.annotator_nets import edge_maps, loaded_nets
from modules.controlnet.annotators import HF, AnnotatorFile
from modules.controlnet.detected import Detected

TEED_FILE = AnnotatorFile("7_model.pth", "TEED",
                          HF + "bdsqlsz/qinglong_controlnet-lllite/resolve/main/Annotators/7_model.pth")


def smish(x: torch.Tensor) -> torch.Tensor:
    """x·tanh(ln(1 + sigmoid(x))) — not in torch, so written out (log of 1 + s rather than log1p: the extension's
    rounding, so maps agree with its maps)."""
    return x * torch.tanh(torch.log(1 + torch.sigmoid(x)))


class Smish(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smish(x)


class DoubleConv(torch.nn.Module):
    """3×3 conv (optionally strided), Smish, 3×3 conv, and Smish again unless `last_activation` is False."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1,
                 last_activation: bool = True) -> None:
        super().__init__()
        self.last_activation = last_activation
        self.conv1 = torch.nn.Conv2d(in_channels, mid_channels, 3, padding=1, stride=stride)
        self.conv2 = torch.nn.Conv2d(mid_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(smish(self.conv1(x)))
        return smish(x) if self.last_activation else x


class DenseLayer(torch.nn.Module):
    """Smish, 3×3 conv padded 2, Smish, unpadded 3×3 conv (same size again); averaged with the skip input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, padding=2)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.conv2(smish(self.conv1(smish(x)))) + skip)


class DenseBlock(torch.nn.Module):
    """One dense layer under the authors' name (dblock_3.denselayer1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.denselayer1 = DenseLayer(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.denselayer1(x, skip)


class PointConv(torch.nn.Module):
    """A 1×1 convolution (optionally strided), under the authors' name `conv`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpHead(torch.nn.Module):
    """`octaves` times: 1×1 conv (to 16 channels, the last to 1), Smish, transposed conv doubling the size."""

    def __init__(self, in_channels: int, octaves: int) -> None:
        super().__init__()
        kernel, padding = 2 ** octaves, (0, 0, 1)[octaves]
        layers: list[torch.nn.Module] = []
        for i in range(octaves):
            out_channels = 1 if i == octaves - 1 else 16
            layers += [torch.nn.Conv2d(in_channels, out_channels, 1), Smish(),
                       torch.nn.ConvTranspose2d(out_channels, out_channels, kernel, stride=2, padding=padding)]
            in_channels = out_channels
        self.features = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class DoubleFusion(torch.nn.Module):
    """The three head maps → one: depthwise 3×3 to 24 channels (8 per map), depthwise 3×3 again, both after Smish;
    the sum of both results over channels, through Smish."""

    def __init__(self) -> None:
        super().__init__()
        self.DWconv1 = torch.nn.Conv2d(3, 24, 3, padding=1, groups=3)
        self.DWconv2 = torch.nn.Conv2d(24, 24, 3, padding=1, groups=24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.DWconv1(smish(x))
        second = self.DWconv2(smish(first))
        return smish((first + second).sum(dim=1, keepdim=True))


class TeedNet(torch.nn.Module):
    """Returns the four full-size edge logit maps (three heads and their fusion). H and W: multiples of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.block_1 = DoubleConv(3, 16, 16, stride=2)
        self.block_2 = DoubleConv(16, 32, 32, last_activation=False)
        self.dblock_3 = DenseBlock(32, 48)
        self.side_1 = PointConv(16, 32, stride=2)
        self.pre_dense_3 = PointConv(32, 48)
        self.up_block_1 = UpHead(16, 1)
        self.up_block_2 = UpHead(32, 1)
        self.up_block_3 = UpHead(48, 2)
        self.block_cat = DoubleFusion()

    def forward(self, rgb255: torch.Tensor) -> list[torch.Tensor]:
        half = self.block_1(rgb255)
        mid = self.block_2(half)
        quarter = F.max_pool2d(mid, 3, stride=2, padding=1)
        dense = self.dblock_3(quarter + self.side_1(half), self.pre_dense_3(quarter))
        heads = [self.up_block_1(half), self.up_block_2(mid), self.up_block_3(dense)]
        return [*heads, self.block_cat(torch.cat(heads, dim=1))]


def load(path: str | Path) -> TeedNet:
    """TeedNet with the weights of a 7_model.pth (strict)."""
    return loaded_nets.load_strict(TeedNet(), path, "TEED (7_model.pth)")


def edge_strength(net: TeedNet, rgb: np.ndarray, device: torch.device) -> np.ndarray:
    """H×W float64 edge strength in [0, 1] of an H×W×3 uint8 RGB image (H, W multiples of 4): the sigmoid of the
    four maps' mean."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device=device, dtype=torch.float32).permute(2, 0, 1)[None]
    maps = np.stack([m[0, 0].float().cpu().numpy() for m in net(x)], axis=2)
    return 1.0 / (1.0 + np.exp(-np.mean(maps, axis=2).astype(np.float64)))


def run(image: np.ndarray, resolution: int, store, *, safe_steps: int = 2,
        device: torch.device | None = None) -> Detected:
    """softedge_teed: short side → `resolution`, padded to 64, run, strengths quantised to `safe_steps` levels
    (0: not quantised), cropped back."""
    from modules.controlnet.resize import preprocess_resize, to_rgb
    if store is None:
        raise ValueError("TEED needs an annotator store to find 7_model.pth")
    path = store.ensure(TEED_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device("teed", path, load, device) as (net, dev):
        edge = edge_strength(net, padded, dev)
    steps = int(safe_steps)
    if steps != 0:
        edge = edge_maps.safe_step(edge, steps)
    return Detected(np.ascontiguousarray(to_rgb(remove_pad(edge_maps.to_uint8(edge)))))
