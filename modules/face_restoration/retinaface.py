"""The face detector A1111's face restoration uses: RetinaFace with a ResNet-50 backbone (facexlib's
`detection_Resnet50_Final.pth`), giving each face a box, a score and five landmarks (eyes, nose, mouth corners).

Why our own module and not facexlib: facexlib imports torchvision (the ResNet-50 backbone, `IntermediateLayerGetter`,
`torchvision.ops.nms`, `normalize`), and `import facexlib` also pulls its tracking and recognition parts (filterpy,
numba) and opencv-python beside our headless OpenCV. torchvision is not installed here (it would pull a torch other
than the pinned one). So this module builds the same network under the same parameter names, so that the published
file loads as it is, and does the prior boxes, box/landmark decoding and non-maximum suppression in plain torch.

The widths are read from the file (the backbone's stem and bottleneck widths, the blocks per stage, the pyramid's
width), so a small file in the same key layout builds a small network: the tests use one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# facexlib's configuration of the ResNet-50 detector (cfg_re50): anchors per pyramid level and their strides,
# the box encoding's variances, and the mean (BGR) subtracted from the input.
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


# --- the network -------------------------------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck under its parameter names (conv1/bn1 … conv3/bn3, downsample.0/1)."""

    def __init__(self, inplanes: int, width: int, out: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False),
                                        nn.BatchNorm2d(out)) if downsample else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + identity)


class _Backbone(nn.Module):
    """ResNet-50 up to layer4 (what facexlib's IntermediateLayerGetter keeps); returns layer2..layer4."""

    def __init__(self, stem: int, widths: list[int], blocks: list[int], expansion: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        inplanes = stem
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layer = []
            for b in range(count):
                out = width * expansion
                layer.append(_Bottleneck(inplanes, width, out, stride if b == 0 else 1,
                                         b == 0 and (stride != 1 or inplanes != out)))
                inplanes = out
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = [w * expansion for w in widths[1:]]

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


def _conv_bn(inp: int, out: int, kernel: int, leaky: float | None) -> nn.Sequential:
    layers = [nn.Conv2d(inp, out, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(out)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


class _FPN(nn.Module):
    def __init__(self, in_channels: list[int], out: int, leaky: float):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, 1, leaky)
        self.output2 = _conv_bn(in_channels[1], out, 1, leaky)
        self.output3 = _conv_bn(in_channels[2], out, 1, leaky)
        self.merge1 = _conv_bn(out, out, 3, leaky)
        self.merge2 = _conv_bn(out, out, 3, leaky)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    """The context module: 3×3, 5×5 (two 3×3) and 7×7 (three 3×3) branches, concatenated."""

    def __init__(self, ch: int, leaky: float):
        super().__init__()
        self.conv3X3 = _conv_bn(ch, ch // 2, 3, None)
        self.conv5X5_1 = _conv_bn(ch, ch // 4, 3, leaky)
        self.conv5X5_2 = _conv_bn(ch // 4, ch // 4, 3, None)
        self.conv7X7_2 = _conv_bn(ch // 4, ch // 4, 3, leaky)
        self.conv7x7_3 = _conv_bn(ch // 4, ch // 4, 3, None)

    def forward(self, x):
        a = self.conv3X3(x)
        b1 = self.conv5X5_1(x)
        b = self.conv5X5_2(b1)
        c = self.conv7x7_3(self.conv7X7_2(b1))
        return F.relu(torch.cat([a, b, c], dim=1))


class _Head(nn.Module):
    def __init__(self, ch: int, per_anchor: int, anchors: int = 2):
        super().__init__()
        self.conv1x1 = nn.Conv2d(ch, anchors * per_anchor, 1)
        self.per_anchor = per_anchor

    def forward(self, x):
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


class RetinaFaceNet(nn.Module):
    """The network under facexlib's parameter names (body.*, fpn.*, ssh1..3.*, ClassHead/BboxHead/LandmarkHead.N)."""

    def __init__(self, stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), expansion=4, out_channels=256):
        super().__init__()
        self.body = _Backbone(stem, list(widths), list(blocks), expansion)
        leaky = 0.1 if out_channels <= 64 else 0.0   # facexlib's rule for the pyramid and context modules
        self.fpn = _FPN(self.body.out_channels, out_channels, leaky)
        self.ssh1, self.ssh2, self.ssh3 = (_SSH(out_channels, leaky) for _ in range(3))
        self.ClassHead = nn.ModuleList(_Head(out_channels, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(out_channels, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(out_channels, 10) for _ in range(3))

    def forward(self, x):
        feats = self.fpn(self.body(x))
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landmarks

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "RetinaFaceNet":
        """Builds the network the file describes and loads it (strict: every key must match)."""
        sd = {k.removeprefix("module."): v for k, v in sd.items()}   # saved from DataParallel
        if "body.conv1.weight" not in sd or "LandmarkHead.0.conv1x1.weight" not in sd:
            raise ValueError("not a RetinaFace (ResNet) detector file: body.conv1.weight or LandmarkHead keys missing")
        widths, blocks = [], []
        for n in range(1, 5):
            widths.append(sd[f"body.layer{n}.0.conv1.weight"].shape[0])
            blocks.append(len({k.split(".")[2] for k in sd if k.startswith(f"body.layer{n}.")}))
        expansion = sd["body.layer1.0.conv3.weight"].shape[0] // widths[0]
        net = cls(stem=sd["body.conv1.weight"].shape[0], widths=widths, blocks=blocks, expansion=expansion,
                  out_channels=sd["fpn.output1.0.weight"].shape[0])
        net.load_state_dict(sd, strict=True)
        return net.eval()


# --- anchors, decoding, suppression ------------------------------------------------------------------------------
def prior_boxes(height: int, width: int) -> torch.Tensor:
    """The anchors (cx, cy, w, h), relative to the image, in the order the heads emit them: per level, row by row,
    two sizes per cell."""
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [torch.stack([gx, gy, torch.full_like(gx, s / width), torch.full_like(gx, s / height)], dim=-1)
                    for s in sizes]
        out.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(out)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """The regression → (x1, y1, x2, y2), relative to the image (the SSD encoding with VARIANCES)."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """The five landmark offsets → (x, y) × 5, relative to the image."""
    offsets = pre.reshape(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]
    return (priors[:, None, :2] + offsets).reshape(-1, 10)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, best first (what torchvision.ops.nms returns;
    written here because torchvision is not installed). Boxes are (x1, y1, x2, y2)."""
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):   # one row of overlaps at a time: memory stays linear in the number of boxes
        if not alive[i]:
            continue
        keep.append(i)
        rest = boxes[i + 1:]
        lt = torch.maximum(boxes[i, :2], rest[:, :2])
        rb = torch.minimum(boxes[i, 2:], rest[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (areas[i] + areas[i + 1:] - inter).clamp(min=1e-12)
        alive[i + 1:] &= iou <= iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)] if keep else order[:0]


@dataclass
class Face:
    box: np.ndarray        # x1, y1, x2, y2 in image pixels
    score: float
    landmarks: np.ndarray  # 5 × 2: left eye, right eye, nose, left and right mouth corner


class RetinaFaceDetector:
    def __init__(self, net: RetinaFaceNet, device: torch.device | str = "cpu"):
        self.net, self.device = net.to(device), torch.device(device)

    def to(self, device) -> "RetinaFaceDetector":
        self.net.to(device)
        self.device = torch.device(device)
        return self

    @torch.no_grad()
    def detect(self, bgr: np.ndarray, conf_threshold: float = 0.97, nms_threshold: float = 0.4) -> list[Face]:
        """Faces in a BGR uint8 image, best first (A1111 asks facexlib for score > 0.97, IoU 0.4)."""
        height, width = bgr.shape[:2]
        x = torch.from_numpy(bgr.astype(np.float32)).permute(2, 0, 1)[None]
        x = (x - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)).to(self.device)
        loc, conf, landms = self.net(x)
        return faces_from_outputs(loc[0].float().cpu(), conf[0].float().cpu(), landms[0].float().cpu(),
                                  height, width, conf_threshold, nms_threshold)


def faces_from_outputs(loc, conf, landms, height: int, width: int, conf_threshold: float = 0.97,
                       nms_threshold: float = 0.4) -> list[Face]:
    """The network's raw outputs for one image → its faces in pixels: decode, score threshold, NMS."""
    priors = prior_boxes(height, width)
    if len(priors) != len(loc):
        raise ValueError(f"{len(loc)} predictions for {len(priors)} anchors of a {width}x{height} image")
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = decode_boxes(loc, priors) * scale.repeat(2)
    points = decode_landmarks(landms, priors) * scale.repeat(5)
    scores = conf[:, 1]
    mask = scores > conf_threshold
    boxes, points, scores = boxes[mask], points[mask], scores[mask]
    keep = nms(boxes, scores, nms_threshold)
    return [Face(boxes[i].numpy(), float(scores[i]), points[i].reshape(5, 2).numpy()) for i in keep.tolist()]
