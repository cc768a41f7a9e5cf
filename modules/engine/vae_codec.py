"""The VAE codec: latents ↔ PIL images (decode rounds to 8 bits; encode takes the latent distribution's mean)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from modules.engine import image_ops


def decode_to_tensor(model, latents: torch.Tensor) -> torch.Tensor:
    """Latents → images as a float tensor B×C×H×W in 0..1 (what A1111's postprocess_batch hooks get)."""
    vae = model.vae
    with torch.no_grad():
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return (decoded.float() / 2 + 0.5).clamp(0, 1)


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    arr = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def latents_to_images(model, latents: torch.Tensor) -> list[Image.Image]:
    return tensor_to_images(decode_to_tensor(model, latents))


def images_to_latents(model, images: list[Image.Image]) -> torch.Tensor:
    vae = model.vae
    arr = np.stack([np.asarray(image_ops.to_rgb(im), dtype=np.float32) / 127.5 - 1 for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(model.device, vae.dtype)
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode()  # the mean: reproducible, as A1111 does
    return latents.float() * vae.config.scaling_factor
