"""Depth Anything (v1: depth_anything_vitl14.pth; v2: depth_anything_v2_vitl.safetensors): a DINOv2 ViT-L/14
encoder and a DPT decoder, relative inverse depth out.

The encoder cuts the image into 14×14 patches (1024-wide tokens, a class token in front, position embeddings trained
on a 37×37 grid and resized bicubically to the image's grid) and runs 24 pre-norm blocks whose two branches are
scaled by learned per-channel factors (LayerScale). Four blocks feed the decoder, after the encoder's final
LayerNorm: the last four in v1, blocks 5, 12, 18 and 24 in v2 — the only difference between the two networks. The
decoder projects each tap to 256/512/1024/1024 channels at 4×, 2×, 1× and ½× the token grid, fuses them coarse to
fine to twice the grid (each fusion resized to the next tap's size), and a head brings the result to the input
size.

Written here rather than taken from transformers (DepthAnythingForDepthEstimation with a Dinov2Backbone): the files
use the original names ("pretrained.blocks.0.ls1.gamma", "depth_head.scratch.refinenet1.out_conv.weight"), which
our modules carry so the files load strictly without a renaming table, and transformers resizes the position
embeddings to an output size where the original scales by (grid + 0.1) / 37, which samples slightly different
points. The decoder's fusion and residual blocks are MiDaS's (dpt_hybrid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from modules.controlnet.annotator_nets.dpt_hybrid import Attention, Fusion, Mlp  # the same ViT layers

PATCH = 14
DEPTH = 24
TAPS_V1 = (20, 21, 22, 23)      # get_intermediate_layers(x, 4): the last four blocks
TAPS_V2 = (4, 11, 17, 23)


@dataclass(frozen=True)
class Size:
    """Widths of the network. REAL is the files' (ViT-L); tests build the same layout narrower."""
    embed: int = 1024
    heads: int = 16
    grid: int = 37                                      # trained at 518×518
    taps: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    features: int = 256


REAL = Size()


class LayerScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6) with LayerScale on both branches."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(size.embed, eps=1e-6)
        self.attn = Attention(size)
        self.ls1 = LayerScale(size.embed)
        self.norm2 = nn.LayerNorm(size.embed, eps=1e-6)
        self.mlp = Mlp(size.embed)
        self.ls2 = LayerScale(size.embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, size: Size) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, size.embed, PATCH, stride=PATCH)


class DinoV2(nn.Module):
    """DINOv2 ViT/14 without registers. `mask_token` (used only in training) is kept: the files have it."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + size.grid ** 2, size.embed))
        self.mask_token = nn.Parameter(torch.zeros(1, size.embed))
        self.patch_embed = PatchEmbed(size)
        self.blocks = nn.ModuleList(Block(size) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(size.embed, eps=1e-6)

    def position_embeddings(self, rows: int, cols: int) -> torch.Tensor:
        """The trained table for a rows×cols grid: unchanged for the square training grid, else the patch part
        resized bicubically by the scale factors (rows + 0.1) / grid and (cols + 0.1) / grid (DINOv2's offset
        against rounding; the factor, not the output size, places the samples)."""
        side = int(math.sqrt(self.pos_embed.shape[1] - 1))
        if rows == cols == side:
            return self.pos_embed
        table = self.pos_embed.float()
        width = table.shape[2]
        grid = table[:, 1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic",
                             antialias=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, width)
        return torch.cat([table[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """The patch tokens after each tapped block, passed through the final norm (class token dropped)."""
        rows, cols = x.shape[2] // PATCH, x.shape[3] // PATCH
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embeddings(rows, cols)
        outputs = []
        for i, block in enumerate(self.blocks[:max(taps) + 1]):
            tokens = block(tokens)
            if i in taps:
                outputs.append(self.norm(tokens)[:, 1:])
        return outputs


class Scratch(nn.Module):
    """3×3 convolutions of the four maps to one width, four fusions, and the two-part head."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        width = size.features
        for i, channels in enumerate(size.taps, start=1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(channels, width, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", Fusion(width))
        self.output_conv1 = nn.Conv2d(width, width // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(width // 2, 32, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(32, 1, 1), nn.ReLU())


class DptHead(nn.Module):
    def __init__(self, size: Size) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(size.embed, channels, 1) for channels in size.taps)
        c1, c2, _, c4 = size.taps
        self.resize_layers = nn.ModuleList([nn.ConvTranspose2d(c1, c1, 4, stride=4),
                                            nn.ConvTranspose2d(c2, c2, 2, stride=2),
                                            nn.Identity(),
                                            nn.Conv2d(c4, c4, 3, stride=2, padding=1)])
        self.scratch = Scratch(size)

    def forward(self, taps: list[torch.Tensor], rows: int, cols: int) -> torch.Tensor:
        maps = []
        for i, tokens in enumerate(taps):
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)
            maps.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = s.layer1_rn(maps[0]), s.layer2_rn(maps[1]), s.layer3_rn(maps[2]), s.layer4_rn(maps[3])
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1)
        out = F.interpolate(s.output_conv1(path), size=(rows * PATCH, cols * PATCH), mode="bilinear",
                            align_corners=True)
        return s.output_conv2(out)


class DepthAnything(nn.Module):
    """Input: N×3×H×W, ImageNet-normalised, H and W multiples of 14. Output: N×H×W relative inverse depth ≥ 0.
    `version` 1 or 2 picks the tapped blocks."""

    def __init__(self, version: int = 1, size: Size = REAL) -> None:
        super().__init__()
        if version not in (1, 2):
            raise ValueError(f"Depth Anything version must be 1 or 2 (got {version!r})")
        self.taps = TAPS_V1 if version == 1 else TAPS_V2
        self.pretrained = DinoV2(size)
        self.depth_head = DptHead(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % PATCH or x.shape[3] % PATCH:
            raise ValueError(f"Depth Anything input height and width must be multiples of 14 "
                             f"(got {x.shape[2]}×{x.shape[3]})")
        rows, cols = x.shape[2] // PATCH, x.shape[3] // PATCH
        return F.relu(self.depth_head(self.pretrained(x, self.taps), rows, cols))[:, 0]
