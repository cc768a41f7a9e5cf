"""MiDaS v3 DPT-Hybrid, the depth network of dpt_hybrid-midas-501f0c75.pt (depth_midas, normal_midas).

A ViT-Hybrid encoder: the first three stages of a ResNet-50 (weight-standardised convolutions with TensorFlow-style
"same" padding, GroupNorm) turn the image into a 1/16 grid of 1024 features, projected to 768-wide tokens for twelve
ViT-B blocks. The DPT decoder takes four maps (ResNet stages 1 and 2, the tokens after blocks 9 and 12, their class
token mixed in by a learned projection), brings them to 256 channels and fuses them coarse to fine, each fusion
doubling the size; a small head returns a non-negative relative inverse depth at the input size.

Written here rather than taken from transformers: its DPT-Hybrid (DPTViTHybridEmbeddings) refuses any input size
other than the configured one (the model never asks it to interpolate its position embeddings), while the extension
runs the network on the whole padded image at the processor resolution; and our modules carry the file's own timm
key names ("pretrained.model.patch_embed.backbone.stages.0.blocks.0.conv1.weight", "scratch.refinenet4.out_conv…"),
so the file loads strictly without a renaming table. Parameters the forward pass does not use are still registered
(the ViT's final norm and ImageNet head, refinenet4's first residual unit) because the file has them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

PATCH = 16             # the ResNet stem + stages 2, 3 reduce by 16: one token per 16×16 pixels
TAPS = (8, 11)         # ViT blocks whose outputs feed the decoder (0-based), after ResNet stages 1 and 2
STAGE_BLOCKS = (3, 4, 9)
DEPTH = 12             # ViT blocks


@dataclass(frozen=True)
class Size:
    """Widths of the network. REAL is the file's; tests build the same layout (every key, every block) narrower,
    so a weight file in the real key layout is small. Widths must be multiples of 32 (GroupNorm's 32 groups), stage
    widths multiples of 128 (their bottlenecks are a quarter as wide)."""
    stem: int = 64
    stages: tuple[int, int, int] = (256, 512, 1024)
    embed: int = 768       # ViT-B
    heads: int = 12
    grid: int = 24         # trained at 384×384: 24×24 position embeddings
    classes: int = 1000    # ImageNet head (unused)
    features: int = 256    # DPT decoder width


REAL = Size()


def _same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow "SAME" padding for a strided window: the output has ceil(size / stride) positions and any odd
    padding goes to the right/bottom (so 3×3 stride 2 on an even size pads only right and bottom)."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=value)


class StdConv2d(nn.Conv2d):
    """Convolution whose weights are standardised per output channel (zero mean, unit biased variance, eps 1e-8)
    before use, with "same" padding; no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> None:
        # stride 1 pads statically (kernel // 2 on each side); strided windows pad per input size in forward
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0,
                         bias=False)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = _same_pad(x, self.kernel, self.stride[0])
        flat = self.weight.reshape(self.out_channels, -1)
        var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
        weight = ((flat - mean) / torch.sqrt(var + 1e-8)).reshape_as(self.weight)
        return F.conv2d(x, weight, None, self.stride, self.padding)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-5)


class Stem(nn.Module):
    """7×7 stride-2 convolution, GroupNorm, ReLU, 3×3 stride-2 max-pool ("same", padded with −inf): 1/4 size."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = StdConv2d(3, width, 7, stride=2)
        self.norm = _group_norm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(_same_pad(x, 3, 2, value=-math.inf), 3, 2)


class Downsample(nn.Module):
    """The shortcut of a stage's first block: 1×1 convolution (strided where the stage is) and GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = StdConv2d(in_channels, out_channels, 1, stride=stride)
        self.norm = _group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck without pre-activation: 1×1, 3×3 (carries the stride), 1×1 at a quarter of the width,
    GroupNorm after each, ReLU after the first two and after the residual sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, first: bool) -> None:
        super().__init__()
        mid = out_channels // 4
        if first:
            self.downsample = Downsample(in_channels, out_channels, stride)
        self.conv1 = StdConv2d(in_channels, mid, 1)
        self.norm1 = _group_norm(mid)
        self.conv2 = StdConv2d(mid, mid, 3, stride=stride)
        self.norm2 = _group_norm(mid)
        self.conv3 = StdConv2d(mid, out_channels, 1)
        self.norm3 = _group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if hasattr(self, "downsample") else x
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + shortcut)


class Stage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, blocks: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Bottleneck(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, i == 0)
            for i in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResNetStages(nn.Module):
    """Stem and the three ResNet-50 stages (real widths: 256 at 1/4, 512 at 1/8, 1024 at 1/16); returns all
    three outputs."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.stem = Stem(size.stem)
        widths = (size.stem, *size.stages)
        self.stages = nn.ModuleList(Stage(widths[i], widths[i + 1], n, 1 if i == 0 else 2)
                                    for i, n in enumerate(STAGE_BLOCKS))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class HybridEmbed(nn.Module):
    def __init__(self, size: Size) -> None:
        super().__init__()
        self.backbone = ResNetStages(size)
        self.proj = nn.Conv2d(size.stages[-1], size.embed, 1)


class Attention(nn.Module):
    def __init__(self, size: Size) -> None:
        super().__init__()
        self.heads = size.heads
        self.qkv = nn.Linear(size.embed, size.embed * 3)
        self.proj = nn.Linear(size.embed, size.embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width * 4)
        self.fc2 = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6)."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(size.embed, eps=1e-6)
        self.attn = Attention(size)
        self.norm2 = nn.LayerNorm(size.embed, eps=1e-6)
        self.mlp = Mlp(size.embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HybridViT(nn.Module):
    """The ViT-B/16 hybrid; trained at 384×384 (a 24×24 token grid), run at any size that is a multiple of 32 by
    resizing the grid of position embeddings bilinearly."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + size.grid ** 2, size.embed))
        self.patch_embed = HybridEmbed(size)
        self.blocks = nn.ModuleList(Block(size) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(size.embed, eps=1e-6)    # unused by DPT (it taps blocks), kept: the file has it
        self.head = nn.Linear(size.embed, size.classes)   # the ImageNet classifier, unused, kept: the file has it

    def position_embeddings(self, rows: int, cols: int) -> torch.Tensor:
        width = self.pos_embed.shape[2]
        grid = self.pos_embed[:, 1:]
        side = int(math.sqrt(grid.shape[1]))
        grid = grid.reshape(1, side, side, width).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, width)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(ResNet stage outputs 1 and 2, token sequences after the TAPS blocks, class token first)."""
        rows, cols = x.shape[2] // PATCH, x.shape[3] // PATCH
        stages = self.patch_embed.backbone(x)
        tokens = self.patch_embed.proj(stages[-1]).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embeddings(rows, cols)
        taps = []
        for i, block in enumerate(self.blocks[:TAPS[-1] + 1]):
            tokens = block(tokens)
            if i in TAPS:
                taps.append(tokens)
        return stages[:2], taps


class ProjectReadout(nn.Module):
    """Mixes the class token into every patch token: concatenate it, project back to the width, GELU."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        return self.project(torch.cat([patches, tokens[:, :1].expand_as(patches)], dim=-1))


def _reassemble(width: int, downsample: bool) -> nn.Sequential:
    """Readout (index 0), then a 1×1 convolution (index 3) and for the deepest map a 3×3 stride-2 one (index 4).
    Indices 1 and 2 are the original's token-to-grid reshapes, parameter-free: placeholders keep the file's
    numbering ("act_postprocess4.4.weight"). `Pretrained.reassemble` runs it."""
    layers = [ProjectReadout(width), nn.Identity(), nn.Identity(), nn.Conv2d(width, width, 1)]
    if downsample:
        layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class Pretrained(nn.Module):
    """The encoder: the hybrid ViT and the reassembly of its two token taps into 1/16 and 1/32 maps."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.model = HybridViT(size)
        self.act_postprocess3 = _reassemble(size.embed, downsample=False)
        self.act_postprocess4 = _reassemble(size.embed, downsample=True)

    @staticmethod
    def reassemble(steps: nn.Sequential, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        x = steps[0](tokens).transpose(1, 2)
        x = x.reshape(x.shape[0], x.shape[1], rows, cols)
        for layer in list(steps)[3:]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rows, cols = x.shape[2] // PATCH, x.shape[3] // PATCH
        stages, (tap3, tap4) = self.model(x)
        return [*stages, self.reassemble(self.act_postprocess3, tap3, rows, cols),
                self.reassemble(self.act_postprocess4, tap4, rows, cols)]


class ResidualUnit(nn.Module):
    """ReLU, 3×3, ReLU, 3×3, plus the input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Fusion(nn.Module):
    """Adds the refined skip map (if any) to the coarser path, refines, resizes (bilinear, corners aligned; to
    `size`, by default twice the size), 1×1 convolution. Depth Anything's decoder uses it too."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualUnit(width)
        self.resConfUnit2 = ResidualUnit(width)
        self.out_conv = nn.Conv2d(width, width, 1)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        size = size or (path.shape[2] * 2, path.shape[3] * 2)
        path = F.interpolate(path, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(path)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    """The DPT decoder: 3×3 convolutions to one width (layerN_rn), four fusions, and the depth head."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        width = size.features
        for i, channels in enumerate((*size.stages[:2], size.embed, size.embed), start=1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(channels, width, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", Fusion(width))
        self.output_conv = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1), Upsample2x(),
            nn.Conv2d(width // 2, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 1, 1), nn.ReLU())

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(layers, start=1))
        path = self.refinenet4(l4)
        path = self.refinenet3(path, l3)
        path = self.refinenet2(path, l2)
        path = self.refinenet1(path, l1)
        return self.output_conv(path)


class MidasDptHybrid(nn.Module):
    """Input: N×3×H×W RGB scaled to [−1, 1], H and W multiples of 32. Output: N×H×W relative inverse depth ≥ 0
    (larger = nearer)."""

    def __init__(self, size: Size = REAL) -> None:
        super().__init__()
        self.pretrained = Pretrained(size)
        self.scratch = Scratch(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"MiDaS input height and width must be multiples of 32 (got {x.shape[2]}×{x.shape[3]})")
        return self.scratch(self.pretrained(x))[:, 0]
