"""Component configs of the demo model, written so that our loader (modules/models/architecture.py), which infers
configs from the weights, rebuilds exactly these models:

* configs start from the SD1 family defaults (modules/models/configs/sd1.json) and only change what the weights
  carry (channels, depths, block types, context size, vocabulary, ...);
* UNet attention heads: the exported yaml sets ``num_head_channels`` (UNET_HEAD_CHANNELS), which the loader turns
  into ``attention_head_dim = [channels // head_channels per level]`` (diffusers' legacy meaning: number of heads);
* text encoder heads: hidden // 64 (hidden >= 64), quick_gelu, conditioning = last_hidden_state;
* VAE channels are multiples of 32 (GroupNorm(32)).
"""
from __future__ import annotations

import copy

from modules.models.architecture import family_defaults, heads_for

UNET_HEAD_CHANNELS = 32

# Autoencoders compared for the f4/f8 choice: same widths and depth per level, f8 adds one more 8x8 level.
# The full-resolution level is 96 wide on purpose: the decoder ends in GroupNorm(32) -> SiLU -> conv_out, and with
# 32 channels every group is a single channel, i.e. an instance norm that erases the absolute colour of flat regions
# (measured: 32-wide decoders return grey-ish backgrounds after 400 steps); 96 channels = 3 per group keep it.
VAE_VARIANTS = {
    "f4": dict(block_out_channels=(96, 64, 128), layers_per_block=1, latent_channels=4),
    "f8": dict(block_out_channels=(96, 64, 128, 128), layers_per_block=1, latent_channels=4),
    # the narrow first tries (kept for reference / re-measurement)
    "f4-n32": dict(block_out_channels=(32, 64, 128), layers_per_block=1, latent_channels=4),
    "f8-n32": dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, latent_channels=4),
    "f4-w128": dict(block_out_channels=(128, 128, 128), layers_per_block=1, latent_channels=4),
}

UNET_VARIANTS = {
    # 16x16 latents (f4): 3 levels 16/8/4, attention everywhere
    "s": dict(block_out_channels=(32, 64, 128), layers_per_block=2, attention=(True, True, True)),
    # same without attention at the 16x16 level (cheaper)
    "s-noattn0": dict(block_out_channels=(32, 64, 128), layers_per_block=2, attention=(False, True, True)),
    "m": dict(block_out_channels=(64, 128, 128), layers_per_block=2, attention=(True, True, True)),
}

TEXT_VARIANTS = {
    "t64": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4),
    "t128": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3),
}


def vae_config(variant: str, sample_size: int = 64) -> dict:
    v = VAE_VARIANTS[variant]
    cfg = dict(family_defaults("sd1")["vae"])
    n = len(v["block_out_channels"])
    cfg.update(
        sample_size=sample_size,
        block_out_channels=list(v["block_out_channels"]),
        layers_per_block=v["layers_per_block"],
        latent_channels=v["latent_channels"],
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
    )
    return cfg


def vae_factor(cfg: dict) -> int:
    return 2 ** (len(cfg["block_out_channels"]) - 1)


def unet_config(variant: str, cross_attention_dim: int, latent_channels: int = 4, sample_size: int = 16) -> dict:
    v = UNET_VARIANTS[variant]
    cfg = copy.deepcopy(family_defaults("sd1")["unet"])
    ch = list(v["block_out_channels"])
    attn = list(v["attention"])
    cfg.update(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=ch,
        layers_per_block=v["layers_per_block"],
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        attention_head_dim=[max(1, c // UNET_HEAD_CHANNELS) for c in ch],
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=False,
        transformer_layers_per_block=1,
    )
    return cfg


def text_config(variant: str) -> dict:
    v = TEXT_VARIANTS[variant]
    enc = family_defaults("sd1")["text_encoders"][0]
    cfg = dict(enc["config"])
    cfg.update(v)
    cfg["num_attention_heads"] = heads_for(cfg["hidden_size"])
    cfg["projection_dim"] = cfg["hidden_size"]
    return cfg


def build_vae(cfg: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**cfg)


def build_unet(cfg: dict):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**cfg)


def build_text_encoder(cfg: dict):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**cfg))


def load_tokenizer():
    """The real CLIP tokenizer, built offline (pad = <|endoftext|>, as the SD1 loader uses)."""
    from modules.models.loader import tokenizer
    from tools.demo_model.common import TOKENIZER_DIR

    return tokenizer(TOKENIZER_DIR, "<|endoftext|>")


def token_ids(tok, captions: list[str]):
    """[n, 77] int64 ids the way the web UI feeds an SD1 text encoder (A1111's rule): BOS, the caption's tokens, EOS,
    then EOS padding (the SD1 pad token) to 77; no attention mask. Captions must fit one 75-token chunk."""
    import torch

    rows = []
    for c in captions:
        ids = tok(c, add_special_tokens=False, truncation=False)["input_ids"]
        if len(ids) > 75:
            raise ValueError(f"caption longer than 75 tokens: {c!r}")
        rows.append([tok.bos_token_id] + ids + [tok.eos_token_id] + [tok.pad_token_id] * (75 - len(ids)))
    return torch.tensor(rows, dtype=torch.long)
