"""A ControlNet's architecture read from its weights (original key layout, no prefix), and the diffusers
ControlNetModel built from it.

CONTROLNET-REFERENCE §2.2 rule 7 decides SD1/SD2/SDXL and SDXL full/mid/small by looking for fixed key names of the
real 320-channel models; reading the same facts generically (channels, blocks per level, which levels have attention
and how many transformer blocks, the middle block's depth, linear or convolutional projections, context and ADM
sizes, the hint encoder) covers those files, diffusers' -mid/-small variants (attention with zero transformer blocks)
and the tiny test models alike. Only what weights cannot say (attention heads, the time-embedding details, SDXL's
time-id embedding size) comes from the loaded UNet's config, and only after control_models' checks found the
families and channels equal.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch

from modules.models.controlnet import hint_channels, to_diffusers_state_dict

FAMILY_LABEL = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
_CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


class ArchError(ValueError):
    """The weights do not describe a ControlNet we can build; the message says what is unusual."""


@dataclass(frozen=True)
class ControlNetArch:
    in_channels: int
    channels: tuple[int, ...]        # per level
    layers_per_block: int
    attention: tuple[bool, ...]      # per level
    depth: tuple[int, ...]           # transformer blocks per level (0 without attention)
    mid_depth: int
    linear_projection: bool
    context_dim: int | None          # None when no cross-attention exists (SDXL "small")
    adm_dim: int | None              # SDXL's label_emb input (2816); None for SD1/SD2
    hint_channels: int
    hint_widths: tuple[int, ...]

    @property
    def family(self) -> str:
        return weights_family(self.context_dim, self.adm_dim, self.linear_projection)

    @property
    def hint_factor(self) -> int:
        """How much the hint encoder downsamples: the VAE factor of the models it was trained for."""
        return 2 ** (len(self.hint_widths) - 1)


def weights_family(context_dim: int | None, adm_dim: int | None, linear_projection: bool) -> str:
    """SD1/SD2/SDXL from the sizes the real models have (context 768/1024/2048, ADM 2816); other sizes (test models):
    an ADM input means SDXL, linear projections SD2, else SD1."""
    if adm_dim is not None:
        return "sdxl"
    if context_dim in _CONTEXT_FAMILY:
        return _CONTEXT_FAMILY[context_dim]
    return "sd2" if linear_projection else "sd1"


def _indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _weight(sd: dict, layer: str) -> torch.Tensor | None:
    """A layer's weight, or its LoRA down matrix (Control-LoRA), whose second dimension is the same input size."""
    return sd.get(layer + ".weight", sd.get(layer + ".down"))


def read_facts(sd: dict) -> tuple[int | None, int | None, bool]:
    """(context dim, ADM dim, linear projections) from original-layout keys; also works on Control-LoRA files."""
    context = adm = linear = None
    for k in sorted(sd):
        if context is None and re.match(r".*\.attn2\.to_k\.(weight|down)$", k):
            context = int(sd[k].shape[1])
        if linear is None and re.match(r".*\.proj_in\.(weight|down)$", k):
            linear = sd[k].ndim == 2
    if any(k.startswith("label_emb.") for k in sd):
        w = _weight(sd, "label_emb.0.0")
        adm = int(w.shape[1]) if w is not None else -1
    return context, adm, bool(linear)


def read_arch(sd: dict[str, torch.Tensor]) -> ControlNetArch:
    """The architecture of complete original-layout ControlNet weights. Raises ArchError for a layout diffusers'
    ControlNetModel cannot express."""
    try:
        conv_in = sd["input_blocks.0.0.weight"]
        blocks = _indices(sd, r"input_blocks\.(\d+)\.")
        levels: list[list[int]] = [[]]
        for b in blocks[1:]:
            if f"input_blocks.{b}.0.op.weight" in sd:
                levels.append([])
            else:
                levels[-1].append(b)
        lpb = {len(level) for level in levels}
        if len(lpb) != 1 or 0 in lpb:
            raise ArchError(f"levels with different numbers of blocks ({[len(lv) for lv in levels]})")
        channels, attention, depth = [], [], []
        for level in levels:
            channels.append(int(sd[f"input_blocks.{level[0]}.0.out_layers.3.weight"].shape[0]))
            has = {any(k.startswith(f"input_blocks.{b}.1.") for k in sd) for b in level}
            if len(has) != 1:
                raise ArchError("a level where only some blocks have attention")
            attention.append(has.pop())
            depth.append(len(_indices(sd, re.escape(f"input_blocks.{level[0]}.1.transformer_blocks.") + r"(\d+)\."))
                         if attention[-1] else 0)
        if not any(k.startswith("middle_block.1.") for k in sd):
            raise ArchError("a middle block without attention")
        mid_depth = len(_indices(sd, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
        hint_in, widths = hint_channels(sd)
    except KeyError as exc:
        raise ArchError(f"incomplete ControlNet weights (no {exc})") from None
    except ValueError as exc:
        raise ArchError(str(exc)) from None
    if attention[-1] and depth[-1] != mid_depth:
        raise ArchError(f"the middle block has {mid_depth} transformer blocks, the deepest level {depth[-1]}")
    context, adm, linear = read_facts(sd)
    return ControlNetArch(in_channels=int(conv_in.shape[1]), channels=tuple(channels), layers_per_block=lpb.pop(),
                          attention=tuple(attention), depth=tuple(depth), mid_depth=mid_depth,
                          linear_projection=linear, context_dim=context, adm_dim=adm, hint_channels=hint_in,
                          hint_widths=widths)


def diffusers_config(arch: ControlNetArch, unet_config) -> dict:
    """ControlNetModel arguments: the structure from the weights, the rest (heads, time embedding) from the loaded
    UNet, whose channels control_models.check_structure made sure are the same."""
    from diffusers import ControlNetModel

    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    cfg = {k: v for k, v in dict(unet_config).items() if k in accepted}
    depth = list(arch.depth)
    if not arch.attention[-1]:
        depth[-1] = arch.mid_depth        # diffusers gives the middle block the last level's depth
    cfg.update(
        in_channels=arch.in_channels,
        block_out_channels=list(arch.channels),
        layers_per_block=arch.layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in arch.attention],
        transformer_layers_per_block=depth,
        mid_block_type="UNetMidBlock2DCrossAttn",
        use_linear_projection=arch.linear_projection,
        conditioning_channels=arch.hint_channels,
        conditioning_embedding_out_channels=arch.hint_widths,
        global_pool_conditions=False,      # the caller pools shuffle residuals after scaling them (§4.4)
    )
    if arch.context_dim is not None:
        cfg["cross_attention_dim"] = arch.context_dim
    if arch.adm_dim is not None:
        cfg.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=arch.adm_dim)
    else:
        cfg.update(addition_embed_type=None, projection_class_embeddings_input_dim=None)
    return cfg


def build_controlnet(sd: dict[str, torch.Tensor], arch: ControlNetArch, unet_config):
    """ControlNetModel holding exactly these weights (every weight used, none missing); raises ArchError."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    converted, left = to_diffusers_state_dict(sd)
    try:
        with init_empty_weights():
            model = ControlNetModel(**diffusers_config(arch, unet_config))
        missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ArchError(f"its weights do not fit the architecture they describe: {first_line(exc)}") from None
    unexpected = list(unexpected) + left
    if missing or unexpected:
        raise ArchError(f"{len(missing)} missing and {len(unexpected)} unknown weights "
                        f"(such as {', '.join((list(missing) + unexpected)[:4])})")
    return model.eval().requires_grad_(False)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def merge_difference(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A difference model (§2.2 rule 7, key `difference`) made whole: stored tensors whose name the base UNet also
    has hold (ControlNet − base) and get the base weight added; encoder weights the exporter left out (no
    difference) are the base's; the hint encoder and zero convolutions are used as stored."""
    out = base_encoder(base)
    for k, v in sd.items():
        if k == "difference":
            continue
        if k in base:
            if base[k].shape != v.shape:
                raise ArchError(f"{k} has shape {tuple(v.shape)}, the loaded UNet's {tuple(base[k].shape)}")
            b = base[k]
            out[k] = v.to(b.device, torch.promote_types(v.dtype, b.dtype)) + b
        else:
            out[k] = v
    return out


_ENCODER = ("time_embed.", "label_emb.", "input_blocks.", "middle_block.")


def base_encoder(base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the base UNet's encoder weights (what a ControlNet copies from its UNet), own storage so that
    patching the UNet later leaves the ControlNet alone."""
    return {k: v.detach().clone() for k, v in base.items() if k.startswith(_ENCODER)}
