"""The VAE codec: latents ↔ PIL images (decode rounds to 8 bits; encode takes the latent distribution's mean).

Decoding goes one image at a time, as A1111 does, each checked for NaNs (unless --disable-nan-check): a half-precision
VAE that overflows gives "A tensor with NaNs was produced in VAE." and, with A1111's setting auto_vae_precision (on
by default), the VAE is converted to 32-bit floats (bfloat16 with auto_vae_precision_bfloat16) and the image decoded
again; the VAE then stays in that precision for the rest of the session. Large images decode in tiles
(modules/engine/tiled_vae.py).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from modules import devices
from modules.engine import image_ops, tiled_vae
from modules.models.model_options import vae_policy

log = logging.getLogger("sd.vae")

FALLBACK_MESSAGE = ("A tensor with NaNs was produced in VAE. The web UI now converts the VAE to {dtype} and decodes "
                    "again. To turn this off, turn off the setting 'Automatically revert VAE to 32-bit floats'; to "
                    "start with a 32-bit VAE, use --no-half-vae.")


def _decode_one(model, z: torch.Tensor, policy) -> torch.Tensor:
    vae = model.vae
    tiled = tiled_vae.should_tile_decode(vae, z, policy.tiled())
    decoded = tiled_vae.decode(vae, z.to(vae.dtype) / vae.config.scaling_factor, tiled)
    if not policy.nan_check or not devices.has_nans(decoded):
        return decoded
    half = devices.is_half(vae.dtype)
    target = None
    if vae.dtype == torch.float16 and policy.auto_precision_bf16():   # A1111: this setting wins over the other
        target = torch.bfloat16
    elif half and policy.auto_precision():
        target = torch.float32
    if target is None:
        raise devices.NansException(devices.nan_message("vae", half=half))
    message = FALLBACK_MESSAGE.format(dtype="bfloat16" if target == torch.bfloat16 else "32-bit floats")
    log.warning(message)
    vae.to(target)
    policy.on_upcast(target)
    decoded = tiled_vae.decode(vae, z.to(target) / vae.config.scaling_factor, tiled)
    if devices.has_nans(decoded):
        raise devices.NansException(devices.nan_message("vae", half=devices.is_half(target)))
    return decoded


def decode_to_tensor(model, latents: torch.Tensor) -> torch.Tensor:
    """Latents → images as a float tensor B×C×H×W in 0..1 (what A1111's postprocess_batch hooks get)."""
    policy = vae_policy(model)
    decoded = [_decode_one(model, latents[i:i + 1], policy) for i in range(latents.shape[0])]
    if not decoded:
        return latents.new_zeros((0, 3, latents.shape[-2] * model.vae_scale_factor,
                                  latents.shape[-1] * model.vae_scale_factor))
    return (torch.cat(decoded).float() / 2 + 0.5).clamp(0, 1)


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """[0, 1] images → 8-bit PIL images, truncating as A1111 does (255·x cast to uint8), so pixels match its PNGs."""
    arr = (images.float() * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def latents_to_images(model, latents: torch.Tensor) -> list[Image.Image]:
    return tensor_to_images(decode_to_tensor(model, latents))


def images_to_latents(model, images: list[Image.Image]) -> torch.Tensor:
    vae = model.vae
    arr = np.stack([np.asarray(image_ops.to_rgb(im), dtype=np.float32) / 127.5 - 1 for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(model.device, vae.dtype)
    tiled = tiled_vae.should_tile_encode(vae, x, vae_policy(model).tiled())
    latents = tiled_vae.encode(vae, x, tiled).mode()  # the mean: reproducible, as A1111 does
    return latents.float() * vae.config.scaling_factor
