"""T2I-Adapters (TencentARC; CONTROLNET-REFERENCE §2.2 rules 4, 8–10): full, light and style.

Full and light adapters are assembled from diffusers' own blocks (AdapterBlock, LightAdapterBlock), not diffusers'
FullAdapter/FullAdapterXL/LightAdapter: those fix the level count and which levels downsample for the 320-wide
4-level SD and 3-level SDXL UNets, and cannot downsample with a strided convolution or use a kernel other than 1.
What the weights cannot say (where the average-pool downsampling sits, the pixel-unshuffle factor) is what the UNet
needs: the adapter's features must arrive where diffusers adds `down_intrablock_additional_residuals` (§4.4: the end
of each down block, before its downsampler when it has attention, after it when not; then the middle block). For the
real UNets that gives the original layouts exactly (SD: unshuffle 8, downsample before levels 1–3; SDXL: unshuffle
16, downsample before level 2 only).

The style adapter has no diffusers class; `StyleAdapter` is the original's small transformer (CLIP residual blocks).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

STYLE_HEADS = 8            # t2iadapter_style_sd14v1: not recoverable from the weights
ORIGINAL_RES_BLOCKS = 2    # TencentARC's full adapters: two res blocks per level (the original names number them flat)
_STANDARD_CIN = {64: ("sd1", 1, 8), 192: ("sd1", 3, 8), 256: ("sdxl", 1, 16), 768: ("sdxl", 3, 16)}


class AdapterError(ValueError):
    pass


@dataclass(frozen=True)
class AdapterArch:
    light: bool
    cin: int                       # input channels after pixel-unshuffle (hint channels × factor²)
    channels: tuple[int, ...]      # feature channels per level
    num_res_blocks: int
    kernel: int                    # full adapters: kernel of in_conv and block2 (1 in every TencentARC file)
    conv_down: tuple[bool, ...]    # full adapters: levels downsampling with a strided convolution (down_opt.op)

    @property
    def standard_family(self) -> str | None:
        """The family the real files' input size means (64/192: SD, 256/768: SDXL), None for other sizes."""
        return _STANDARD_CIN.get(self.cin, (None,))[0]


def to_diffusers_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original TencentARC names (flat `body.N` for full adapters, `body.i.body.j` for light ones) or diffusers'
    (`adapter.` prefix) → diffusers' inner names (`conv_in`, `body.i.in_conv`, `body.i.resnets.j.block1`, ...;
    `body.i.downsample` for a strided-convolution downsampler). Unknown names are kept, so loading reports them."""
    sd = {k[len("adapter."):] if k.startswith("adapter.") else k: v for k, v in sd.items()}
    if any(".resnets." in k for k in sd):
        return sd
    out = {}
    for k, v in sd.items():
        if m := re.match(r"body\.(\d+)\.body\.(\d+)\.(.*)", k):                      # light
            k = f"body.{m.group(1)}.resnets.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"body\.(\d+)\.(block1|block2)\.(.*)", k):                 # full
            n = int(m.group(1))
            k = f"body.{n // ORIGINAL_RES_BLOCKS}.resnets.{n % ORIGINAL_RES_BLOCKS}.{m.group(2)}.{m.group(3)}"
        elif (m := re.match(r"body\.(\d+)\.(in_conv|down_opt\.op)\.(.*)", k)) and "body.0.out_conv.weight" not in sd:
            n = int(m.group(1))
            if n % ORIGINAL_RES_BLOCKS == 0:
                part = "in_conv" if m.group(2) == "in_conv" else "downsample"
                k = f"body.{n // ORIGINAL_RES_BLOCKS}.{part}.{m.group(3)}"
        out[k] = v
    return out


def read_arch(sd: dict[str, torch.Tensor]) -> AdapterArch:
    """The adapter's structure from its weights (diffusers' inner names)."""
    light = "conv_in.weight" not in sd
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k))})
    if not levels or levels != list(range(len(levels))):
        raise AdapterError(f"adapter levels {levels} are not numbered 0..n-1")
    try:
        if light:
            cin = int(sd["body.0.in_conv.weight"].shape[1])
            channels = tuple(int(sd[f"body.{i}.out_conv.weight"].shape[0]) for i in levels)
        else:
            cin = int(sd["conv_in.weight"].shape[1])
            channels = tuple(int(sd[f"body.{i}.resnets.0.block1.weight"].shape[0]) for i in levels)
        kernel = 1 if light else int(sd["body.0.resnets.0.block2.weight"].shape[-1])
    except KeyError as exc:
        raise AdapterError(f"incomplete adapter weights (no {exc})") from None
    res_blocks = len({m.group(1) for k in sd if (m := re.match(r"body\.0\.resnets\.(\d+)\.", k))})
    conv_down = tuple(f"body.{i}.downsample.weight" in sd for i in levels)
    return AdapterArch(light, cin, channels, res_blocks, kernel, conv_down)


def feature_points(unet_config) -> list[tuple[int, int]]:
    """(downscale relative to the latent, channels) where diffusers' UNet adds each adapter feature: per down block,
    then the middle block."""
    types, chans = list(unet_config["down_block_types"]), list(unet_config["block_out_channels"])
    n = len(types)
    pts = [(2 ** i if "CrossAttn" in t or i == n - 1 else 2 ** (i + 1), chans[i]) for i, t in enumerate(types)]
    return pts + [(2 ** (n - 1), chans[-1])]


def fit(arch: AdapterArch, unet_config, vae_factor: int) -> tuple[int, int, list[bool]]:
    """(hint channels, pixel-unshuffle factor, downsampling per level) for this adapter on this UNet; raises
    AdapterError saying what does not fit."""
    pts = feature_points(unet_config)
    if len(arch.channels) > len(pts):
        raise AdapterError(f"{len(arch.channels)} feature levels; the loaded UNet takes {len(pts)}")
    want = [c for _, c in pts[: len(arch.channels)]]
    if list(arch.channels) != want:
        raise AdapterError(f"feature channels {list(arch.channels)}; the loaded UNet needs {want}")
    scales = [s for s, _ in pts[: len(arch.channels)]]
    downs = [i > 0 and scales[i] != scales[i - 1] for i in range(len(scales))]
    factor = vae_factor * scales[0]
    hint, rest = divmod(arch.cin, factor * factor)
    if rest or hint not in (1, 3):
        raise AdapterError(f"its input has {arch.cin} channels; on the loaded model (pixel-unshuffle {factor}) that "
                           f"would be {arch.cin / factor ** 2:g} image channels, not 1 or 3")
    if any(arch.conv_down) and list(arch.conv_down) != downs:
        raise AdapterError("its strided-convolution downsamplers do not sit where the loaded UNet's levels change size")
    return hint, factor, downs


class AdapterNet(nn.Module):
    """Pixel-unshuffle, (conv_in,) one diffusers adapter block per level; returns every level's output."""

    def __init__(self, arch: AdapterArch, factor: int, downs: list[bool]):
        from diffusers.models.adapter import AdapterBlock, LightAdapterBlock

        super().__init__()
        ch = arch.channels
        self.unshuffle = nn.PixelUnshuffle(factor)
        if arch.light:
            self.conv_in = None
            self.body = nn.ModuleList(LightAdapterBlock(arch.cin if i == 0 else ch[i - 1], ch[i], arch.num_res_blocks,
                                                        down=downs[i]) for i in range(len(ch)))
            return
        self.conv_in = nn.Conv2d(arch.cin, ch[0], kernel_size=3, padding=1)
        self.body = nn.ModuleList(AdapterBlock(ch[max(i - 1, 0)], ch[i], arch.num_res_blocks, down=downs[i])
                                  for i in range(len(ch)))
        k = arch.kernel
        for i, block in enumerate(self.body):
            if arch.conv_down[i]:
                c_in = ch[max(i - 1, 0)]
                block.downsample = nn.Conv2d(c_in, c_in, kernel_size=3, stride=2, padding=1)
            if k != 1:
                if block.in_conv is not None:
                    block.in_conv = nn.Conv2d(ch[i - 1], ch[i], kernel_size=k, padding=k // 2)
                for r in block.resnets:
                    r.block2 = nn.Conv2d(ch[i], ch[i], kernel_size=k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.unshuffle(x)
        if self.conv_in is not None:
            x = self.conv_in(x)
        features = []
        for block in self.body:
            x = block(x)
            features.append(x)
        return features


class _LayerNorm(nn.LayerNorm):
    """In float32 whatever the weights' dtype, as the original (fp16 LayerNorm overflows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                                        self.eps).to(x.dtype)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = _LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = _LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapter(nn.Module):
    """t2iadapter_style: learnt style tokens appended to the CLIP vision tokens, a few transformer blocks, and the
    style tokens projected to the text context size (they are appended to the prompt's context)."""

    def __init__(self, width: int, context_dim: int, heads: int, layers: int, tokens: int):
        super().__init__()
        self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
        self.ln_pre = _LayerNorm(width)
        self.transformer_layes = nn.Sequential(*[_ResidualAttentionBlock(width, heads) for _ in range(layers)])
        self.ln_post = _LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    @classmethod
    def from_weights(cls, sd: dict[str, torch.Tensor]) -> "StyleAdapter":
        try:
            _, tokens, width = sd["style_embedding"].shape
            context = sd["proj"].shape[1]
        except (KeyError, ValueError) as exc:
            raise AdapterError(f"incomplete style adapter weights ({exc})") from None
        layers = len({m.group(1) for k in sd if (m := re.match(r"transformer_layes\.(\d+)\.", k))})
        return cls(int(width), int(context), STYLE_HEADS, layers, int(tokens))

    @property
    def context_dim(self) -> int:
        return int(self.proj.shape[1])

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.style_embedding.shape[1]
        x = torch.cat([image_embeds, self.style_embedding.expand(image_embeds.shape[0], -1, -1)], dim=1)
        x = self.transformer_layes(self.ln_pre(x))
        return self.ln_post(x[:, -tokens:]) @ self.proj
