"""Straight line segments (mlsd, mlsd_large_512_fp32.pth): M-LSD's large model and its segment decoding, drawn as
1-pixel white lines on black.

The network: a MobileNetV2 trunk cut after the 96-channel stage (inverted residual stages of 16, 24, 32, 64, 96
channels; its stride-2 convolutions pad only right and bottom, as TFLite does) fed a 4-channel image (RGB and a
constant plane); a decoder that merges the trunk's outputs from 1/16 back to 1/2 of the input size (1×1 convolutions
of both inputs, the deeper one enlarged bilinearly with aligned corners, concatenated, then two 3×3 convolutions
with a residual around the first); a head (dilated 3×3, 3×3, 1×1 to 16 channels) of which channels 7..15 are the
output. Channel 0 of those is the segment-centre logit, 1..4 the displacements (x, y) from a centre to the segment's
two ends, in half-size pixels. Keys: `backbone.features.<i>…` (torchvision's MobileNetV2 names), `block15`..`block23`
with `conv1`, `conv2` (`conv3` in the head).

Decoding, as the extension does it: centres are local maxima (3×3) of the sigmoid map, the 200 strongest; a
segment is kept when its centre scores above the value threshold (slider a) and it is longer than the distance
threshold (slider b, half-size pixels); its ends are scaled by 2 to the image and drawn with cv2.line.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.controlnet.annotator_nets import loaded_nets
from modules.controlnet.annotators import HF, AnnotatorFile
from modules.controlnet.detected import Detected
from modules.controlnet.resize import preprocess_resize, to_rgb

MLSD_FILE = AnnotatorFile("mlsd_large_512_fp32.pth", "mlsd",
                          HF + "lllyasviel/ControlNet/resolve/main/annotator/ckpts/mlsd_large_512_fp32.pth")

TOP_K = 200          # candidate centres
PEAK_WINDOW = 3      # local-maximum window of the centre map
# (expansion, channels, blocks, first stride) of the trunk's inverted-residual stages
TRUNK_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
TRUNK_TAPS = (1, 3, 6, 10, 13)   # features whose outputs the decoder uses (1/2, 1/4, 1/8, 1/16, 1/16 size)


class ConvBNReLU6(nn.Sequential):
    """Convolution without bias, batch norm, ReLU6. Stride 2 pads one pixel right and bottom (TFLite's "same"),
    other strides pad symmetrically."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        return super().forward(x)


class InvertedResidual(nn.Module):
    """1×1 expansion (when `expand` > 1), depthwise 3×3, 1×1 projection with batch norm; a residual where the
    shape is unchanged."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [ConvBNReLU6(cin, hidden, kernel=1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class Trunk(nn.Module):
    """MobileNetV2's first 14 feature layers on a 4-channel input; returns the outputs of TRUNK_TAPS."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(4, 32, stride=2)]
        channels = 32
        for expand, cout, blocks, stride in TRUNK_STAGES:
            for i in range(blocks):
                layers.append(InvertedResidual(channels, cout, stride if i == 0 else 1, expand))
                channels = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TRUNK_TAPS:
                taps.append(x)
        return taps


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Merge(nn.Module):
    """1×1 of the deep input (`conv1`) and of the skip (`conv2`); the deep one enlarged 2× unless `same_size`;
    concatenated [skip, deep]."""

    def __init__(self, skip_channels: int, deep_channels: int, same_size: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(deep_channels, 64, 1)
        self.conv2 = _conv_bn_relu(skip_channels, 64, 1)
        self.same_size = same_size

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = self.conv1(deep)
        skip = self.conv2(skip)
        if not self.same_size:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((skip, deep), dim=1)


class Refine(nn.Module):
    """3×3 with a residual around it, then 3×3 to 64 channels."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels, 3)
        self.conv2 = _conv_bn_relu(channels, 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class Head(nn.Module):
    """Dilated (5) 3×3, 3×3, then a 1×1 projection to 16 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(64, 64, 3, dilation=5)
        self.conv2 = _conv_bn_relu(64, 64, 3)
        self.conv3 = nn.Conv2d(64, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MlsdLarge(nn.Module):
    """N×4×H×W in [-1, 1] (H and W multiples of 32) → N×9×(H/2)×(W/2): centre logit, 4 displacements, 4 more."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Trunk()
        self.block15, self.block16 = Merge(64, 96, same_size=True), Refine()
        self.block17, self.block18 = Merge(32, 64), Refine()
        self.block19, self.block20 = Merge(24, 64), Refine()
        self.block21, self.block22 = Merge(16, 64), Refine()
        self.block23 = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


def load_network(path: str | Path) -> MlsdLarge:
    return loaded_nets.load_strict(MlsdLarge(), path, "mlsd")


def network_input(rgb: np.ndarray) -> torch.Tensor:
    """1×4×H×W float: RGB and a plane of 255-equivalent ones, all mapped v/127.5 − 1."""
    planes = np.concatenate([rgb.astype(np.float32), np.ones(rgb.shape[:2] + (1,), np.float32)], axis=2)
    return torch.from_numpy(planes.transpose(2, 0, 1)[None] / 127.5 - 1.0)


def decode_segments(output: torch.Tensor, score_threshold: float, length_threshold: float) -> np.ndarray:
    """K×4 float64 (x0, y0, x1, y1) in input pixels from the network's 1×9×h×w output."""
    heat = torch.sigmoid(output[:, 0])
    peaks = F.max_pool2d(heat, PEAK_WINDOW, stride=1, padding=PEAK_WINDOW // 2)
    heat = (heat * (peaks == heat).float()).reshape(-1)
    scores, indices = torch.topk(heat, min(TOP_K, heat.numel()))
    width = output.shape[3]
    ys, xs = (indices // width).cpu().numpy(), (indices % width).cpu().numpy()
    scores = scores.cpu().numpy()
    ends = output[0, 1:5].permute(1, 2, 0).cpu().numpy()[ys, xs].astype(np.float64)   # K×4 (dx0, dy0, dx1, dy1)
    length = np.sqrt(np.sum((ends[:, :2] - ends[:, 2:]) ** 2, axis=1))
    keep = (scores > score_threshold) & (length > length_threshold)
    centre = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64)
    return 2.0 * (centre + ends)[keep]


def draw_segments(segments: np.ndarray, height: int, width: int) -> np.ndarray:
    """1-pixel white lines on black (H×W uint8); end coordinates truncated towards zero as int() does."""
    canvas = np.zeros((height, width), np.uint8)
    for x0, y0, x1, y1 in np.trunc(segments).astype(np.int64):
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return canvas


def run(image: np.ndarray, resolution: int, value_threshold: float, distance_threshold: float, store, *,
        device: torch.device | None = None) -> Detected:
    """The segments of the image at processor resolution (§3.1 resize and padding), drawn white on black."""
    if store is None:
        raise ValueError("mlsd needs an annotator store to find mlsd_large_512_fp32.pth")
    path = store.ensure(MLSD_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device("mlsd", path, load_network, device) as (net, dev):
        output = net(network_input(padded).to(dev))
        segments = decode_segments(output, float(value_threshold), float(distance_threshold))
    lines = draw_segments(segments, *padded.shape[:2])
    return Detected(to_rgb(remove_pad(lines)))
