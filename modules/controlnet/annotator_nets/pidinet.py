"""PiDiNet soft edges (softedge_pidinet, softedge_pidisafe, scribble_pidinet, t2ia_sketch_pidi) with
table5_pidinet.pth.

PiDiNet (Su et al., ICCV 2021), configuration "carv4" with CDCM (dilation module, 24 channels) and CSAM (spatial
attention): an initial 3×3 convolution to 60 channels, then 16 residual blocks in 4 stages (60, 120, 240, 240
channels; 2×2 max-pool and a 1×1 shortcut at the start of stages 2–4), each a depthwise 3×3 "pixel difference"
convolution, ReLU and a 1×1 convolution. Each stage's features go through CDCM and CSAM to one edge logit map;
the four maps are upsampled (bilinear) to the input size and mixed by a 1×1 classifier, then a sigmoid.

How the file is stored: the training checkpoint of the PiDiNet authors, {"state_dict": {...}} (plus its epoch
counter) with DataParallel's "module." prefix on every key, and the pixel-difference layers as the trained 3×3
kernels, not converted. A pixel-difference convolution is a plain convolution with a kernel derived from the stored
one (the authors' own "converted" evaluation does that); we derive it at every forward, which costs nothing next to
the convolutions, so the module's parameters are exactly the file's tensors:
  * cd (central difference): Σ w·(x_i − x_centre) → the stored 3×3 kernel with Σw taken off its centre (run as
    the plain convolution minus Σw times the centre pixel, the extension's order of sums, so that float32 maps
    agree with its maps bit for bit);
  * ad (angular difference): Σ w_i·(x_i − x at the next position clockwise around the centre) → each kernel
    position takes off the weight of the position before it (anticlockwise);
  * rd (radial difference): stored weights 1–8 (weight 0 is unused) act on (pixel 2 away − pixel 1 away) along
    the directions up-left, up, up-right, left, right, down-left, down, down-right → a 5×5 kernel with the weights
    on its outer ring and their negatives on the inner ring (padding 2);
  * cv: a plain 3×3 convolution.
The input is BGR in [0, 1] (the authors trained on cv2-loaded images); the preprocessor uses the fused (last) map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modules.controlnet.annotator_nets import edge_maps, loaded_nets
from modules.controlnet.annotators import annotators_file
from modules.controlnet.detected import Detected

PIDINET_FILE = annotators_file("table5_pidinet.pth", "pidinet")

WIDTH = 60                 # channels of stage 1 (then ×2, ×4, ×4)
DILATION_CHANNELS = 24     # CDCM's output channels
# "carv4": the pixel-difference type of the initial convolution and of the 15 blocks' depthwise convolutions.
CARV4 = ("cd", "ad", "rd", "cv") * 4
# "ad": for each kernel position (row-major 3×3), the position before it going clockwise around the centre.
_ANTICLOCKWISE = [3, 0, 1, 6, 4, 2, 7, 8, 5]
# "rd": where stored weights 1–8 go in the 5×5 kernel (outer ring) and their negatives (inner ring).
_RD_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]
_RD_INNER = [6, 7, 8, 11, 13, 16, 17, 18]


def difference_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The plain convolution kernel (and its padding) equal to pixel-difference convolution `kind` with the stored
    3×3 `weight`."""
    if kind == "cv":
        return weight, 1
    out_c, in_c = weight.shape[:2]
    flat = weight.reshape(out_c, in_c, 9)
    if kind == "cd":
        centre = torch.zeros_like(flat)
        centre[:, :, 4] = flat.sum(dim=2)
        return (flat - centre).reshape(weight.shape), 1
    if kind == "ad":
        return (flat - flat[:, :, _ANTICLOCKWISE]).reshape(weight.shape), 1
    if kind == "rd":
        kernel = flat.new_zeros(out_c, in_c, 25)
        kernel[:, :, _RD_OUTER] = flat[:, :, 1:]
        kernel[:, :, _RD_INNER] = -flat[:, :, 1:]
        return kernel.reshape(out_c, in_c, 5, 5), 2
    raise ValueError(f"pixel difference type must be one of cv, cd, ad, rd (got {kind!r})")


class PixelDifferenceConv(torch.nn.Module):
    """A bias-free 3×3 pixel-difference convolution holding the stored (unconverted) kernel as `weight`."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, groups: int = 1) -> None:
        super().__init__()
        self.kind = kind
        self.groups = groups
        self.weight = torch.nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        torch.nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)   # nn.Conv2d's default, for a fresh network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cd":
            # the same value as difference_kernel's, summed in the order the extension sums it (the plain 3×3
            # convolution minus the centre pixel times Σw), so float32 maps agree with its maps bit for bit
            centre = F.conv2d(x, self.weight.sum(dim=(2, 3), keepdim=True), groups=self.groups)
            return F.conv2d(x, self.weight, padding=1, groups=self.groups) - centre
        kernel, padding = difference_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class PdcBlock(torch.nn.Module):
    """Residual block: depthwise pixel-difference conv, ReLU, 1×1 conv; with `downsample` the input is max-pooled
    first and the residual goes through a 1×1 shortcut to the new width."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, downsample: bool = False) -> None:
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.shortcut = torch.nn.Conv2d(in_channels, out_channels, 1)
        self.conv1 = PixelDifferenceConv(kind, in_channels, in_channels, groups=in_channels)
        self.conv2 = torch.nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.downsample else x)


class DilationModule(torch.nn.Module):
    """CDCM: ReLU, 1×1 to 24 channels, then the sum of four 3×3 convolutions dilated 5, 7, 9 and 11."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 1)
        for i, d in enumerate((5, 7, 9, 11), start=1):
            self.add_module(f"conv2_{i}", torch.nn.Conv2d(out_channels, out_channels, 3, padding=d, dilation=d,
                                                          bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class SpatialAttention(torch.nn.Module):
    """CSAM: x times a sigmoid mask from ReLU → 1×1 (4 channels) → 3×3 (1 channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, 4, 1)
        self.conv2 = torch.nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(torch.nn.Module):
    """1×1 convolution to one edge logit map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# Blocks per stage: names block<stage>_<n>; stage 1 has 3 (the initial conv is the 4th layer), the others 4.
_BLOCKS = ((1, 3), (2, 4), (3, 4), (4, 4))


class PiDiNet(torch.nn.Module):
    """table5_pidinet's network; forward returns the fused edge strength (N×1×H×W, after the sigmoid). H and W
    should be multiples of 8 (three 2×2 pools)."""

    def __init__(self) -> None:
        super().__init__()
        self.init_block = PixelDifferenceConv(CARV4[0], 3, WIDTH)
        widths = (WIDTH, 2 * WIDTH, 4 * WIDTH, 4 * WIDTH)
        layer = 1
        in_c = WIDTH
        for stage, count in _BLOCKS:
            out_c = widths[stage - 1]
            for n in range(1, count + 1):
                down = stage > 1 and n == 1
                self.add_module(f"block{stage}_{n}", PdcBlock(CARV4[layer], in_c, out_c, downsample=down))
                in_c = out_c
                layer += 1
        self.dilations = torch.nn.ModuleList(DilationModule(w, DILATION_CHANNELS) for w in widths)
        self.attentions = torch.nn.ModuleList(SpatialAttention(DILATION_CHANNELS) for _ in widths)
        self.conv_reduces = torch.nn.ModuleList(MapReduce(DILATION_CHANNELS) for _ in widths)
        self.classifier = torch.nn.Conv2d(4, 1, 1)

    def forward(self, bgr01: torch.Tensor) -> torch.Tensor:
        height, width = bgr01.shape[2:]
        x = self.init_block(bgr01)
        features = []
        for stage, count in _BLOCKS:
            for n in range(1, count + 1):
                x = getattr(self, f"block{stage}_{n}")(x)
            features.append(x)
        maps = []
        for i, f in enumerate(features):
            logits = self.conv_reduces[i](self.attentions[i](self.dilations[i](f)))
            maps.append(F.interpolate(logits, (height, width), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(maps, dim=1)))


def load(path: str | Path) -> PiDiNet:
    """PiDiNet with the weights of a table5_pidinet.pth (strict; the "module." prefix is taken off)."""
    return loaded_nets.load_strict(PiDiNet(), path, "PiDiNet (table5_pidinet.pth)", strip_prefix="module.")


def edge_strength(net: PiDiNet, rgb: np.ndarray, device: torch.device) -> np.ndarray:
    """H×W float32 edge strength in [0, 1] of an H×W×3 uint8 RGB image (fed as BGR / 255)."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    x = torch.from_numpy(bgr).to(device=device, dtype=torch.float32).div(255.0).permute(2, 0, 1)[None]
    return net(x)[0, 0].float().cpu().numpy()


def run(image: np.ndarray, resolution: int, store, *, safe: bool = False, scribble: bool = False,
        sketch: bool = False, device: torch.device | None = None) -> Detected:
    """softedge_pidinet (default), softedge_pidisafe (`safe`: strengths quantised to 0, ½, 1), scribble_pidinet
    (`scribble`: binary strokes) or t2ia_sketch_pidi (`sketch`: white where the strength is above ½) of an image:
    short side → `resolution`, padded to 64, run, cropped back."""
    from modules.controlnet.resize import preprocess_resize, to_rgb
    if store is None:
        raise ValueError("PiDiNet needs an annotator store to find table5_pidinet.pth")
    path = store.ensure(PIDINET_FILE)
    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    with loaded_nets.on_device("pidinet", path, load, device) as (net, dev):
        edge = edge_strength(net, padded, dev)
    if sketch:
        edge = (edge > 0.5).astype(np.float32)
    if safe:
        edge = edge_maps.safe_step(edge)
    grey = remove_pad(edge_maps.to_uint8(edge))
    if scribble:
        grey = edge_maps.scribble(grey)
    return Detected(np.ascontiguousarray(to_rgb(grey)))
