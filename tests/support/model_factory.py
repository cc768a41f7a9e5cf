"""Tiny random-weight Stable Diffusion components for tests.

The models are a few MB but keep the real structural conventions of each family so that
shape-based architecture inference and diffusers' LDM conversion behave as on real files:

=========  ==========================================================================
arch       layout
=========  ==========================================================================
sd1        UNet (32, 64), lpb 1, CrossAttnDown+Down / Up+CrossAttnUp, 8 heads
           (``attention_head_dim=8``, SD1 meaning), conv proj_in/out, cross dim 32;
           CLIPTextModel hidden 32, 2 layers, 4 heads, quick_gelu
sd2        UNet (64, 128), same block types, heads [1, 2] (= channels // 64), linear
           projections, cross dim 64; CLIPTextModel hidden 64, 2 layers, 1 head, gelu
sdxl       UNet (64, 128), Down+CrossAttnDown / CrossAttnUp+Up, heads [1, 2],
           transformer_layers_per_block [1, 2], linear projections, "text_time"
           add-embedding (256 per time id, input 64 + 6 * 256), cross dim 32 + 64 = 96;
           CLIPTextModel (CLIP-L-like) hidden 32 + CLIPTextModelWithProjection
           (bigG-like) hidden 64, projection 64, gelu
=========  ==========================================================================

Every arch uses the same tiny AutoencoderKL: block_out_channels (32, 64), layers_per_block 1,
latent_channels 4, norm_num_groups 32, i.e. the latent is ``TINY_VAE_SCALE_FACTOR`` (2) times
smaller than the image (real SD VAEs: 8).  ``in_channels=9`` gives an inpainting UNet (4 latent +
1 mask + 4 masked-image latent channels).

After the default initialisation every parameter (norm weights and biases included) gets a
small random offset, so no two tensors are equal by accident and swapped mappings are caught.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from modules import devices
from modules.models.hashing import HashCache
from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
from modules.models.manager import ModelManager
from modules.models.registry import ModelRegistry

TINY_VAE_SCALE_FACTOR = 2  # 2 ** (len(vae block_out_channels) - 1)
TINY_ADD_TIME_EMBED_DIM = 256
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_POSITIONS = 77


def _clip_config(hidden: int, heads: int, act: str, intermediate: int, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=CLIP_MAX_POSITIONS,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=heads,
        hidden_act=act,
        projection_dim=projection_dim or hidden,
    )


def tiny_unet_config(arch: str, in_channels: int = 4) -> dict:
    """UNet2DConditionModel kwargs for the tiny model of ``arch``."""
    common = dict(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
    )
    if arch == "sd1":
        return dict(
            common,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=8,
            cross_attention_dim=32,
            use_linear_projection=False,
        )
    if arch == "sd2":
        return dict(
            common,
            block_out_channels=(64, 128),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=(1, 2),
            cross_attention_dim=64,
            use_linear_projection=True,
        )
    if arch == "sdxl":
        return dict(
            common,
            block_out_channels=(64, 128),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(1, 2),
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=32 + 64,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TINY_ADD_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=64 + 6 * TINY_ADD_TIME_EMBED_DIM,
        )
    raise ValueError(f"unknown arch {arch!r}")


def tiny_vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )


def _perturb_(model: torch.nn.Module, scale: float = 0.02) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def make_tiny_components(arch: str, seed: int = 0, in_channels: int = 4) -> dict:
    """{"unet", "vae", "text_encoder"[, "text_encoder_2"]} with seeded random weights (eval mode).

    The global torch RNG state is left untouched; the same seed gives identical weights.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet_cfg = tiny_unet_config(arch, in_channels)  # validates arch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        comps = {
            "unet": UNet2DConditionModel(**unet_cfg),
            "vae": AutoencoderKL(**tiny_vae_config()),
        }
        if arch == "sd1":
            comps["text_encoder"] = CLIPTextModel(_clip_config(32, 4, "quick_gelu", 37))
        elif arch == "sd2":
            comps["text_encoder"] = CLIPTextModel(_clip_config(64, 1, "gelu", 128))
        else:
            comps["text_encoder"] = CLIPTextModel(_clip_config(32, 4, "quick_gelu", 37))
            comps["text_encoder_2"] = CLIPTextModelWithProjection(_clip_config(64, 1, "gelu", 128, projection_dim=64))
        for model in comps.values():
            _perturb_(model)
            model.eval()
    return comps


_SAVE_KWARGS = ("dtype", "metadata")


def write_tiny_checkpoint(path, arch: str, seed: int = 0, in_channels: int = 4, **kw) -> dict:
    """Build tiny components, export them to the LDM layout and save them at ``path``.

    ``dtype``/``metadata`` in ``kw`` go to ``save_checkpoint``, everything else (e.g.
    ``extra_last_layer=True`` for sd2) to ``to_ldm_state_dict``.  Returns the components.
    """
    save_kw = {k: kw.pop(k) for k in _SAVE_KWARGS if k in kw}
    comps = make_tiny_components(arch, seed=seed, in_channels=in_channels)
    sd = to_ldm_state_dict(
        comps["unet"], comps["vae"], comps["text_encoder"], comps.get("text_encoder_2"), arch=arch, **kw
    )
    save_checkpoint(sd, os.fspath(path), **save_kw)
    return comps


def manager_for(tmp_path: Path, vae_setting: str = "Automatic") -> ModelManager:
    reg = ModelRegistry([tmp_path / "Stable-diffusion"], tmp_path / "VAE", HashCache(tmp_path / "hashes.json"))
    return ModelManager(reg, devices.from_args(None), tmp_path / "tok", vae_setting=lambda: vae_setting)
