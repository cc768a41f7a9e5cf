"""Cheap live previews: latent → RGB with a fixed linear map (no VAE), every N steps.

The 4×3 coefficients for the SD VAE latent space are the widely published least-squares fit (the same numbers A1111's
"Approx cheap" preview uses); SDXL's VAE has its own. A model can carry its own fitted map (our demo model does) in
model.extra["latent_rgb"].
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from modules.engine.vae_codec import images_to_latents
from modules.models.loader import LATENT_RGB_KEY

SD_LATENT_RGB = [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
SDXL_LATENT_RGB = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
                   [-0.3165, -0.2492, -0.2188]]


def coefficients(model) -> torch.Tensor:
    custom = model.extra.get("latent_rgb") if getattr(model, "extra", None) else None
    table = custom or (SDXL_LATENT_RGB if model.is_sdxl else SD_LATENT_RGB)
    return torch.tensor(table, dtype=torch.float32)


def preview(model, latents: torch.Tensor, index: int = 0) -> Image.Image:
    coef = coefficients(model).to(latents.device)
    if latents.shape[1] != coef.shape[0]:  # a latent space we have no map for: show channel means
        rgb = latents[index, :3].float().permute(1, 2, 0)
    else:
        rgb = torch.einsum("chw,cr->hwr", latents[index].float(), coef)
    arr = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().cpu().numpy()
    img = Image.fromarray(np.ascontiguousarray(arr))
    factor = model.vae_scale_factor
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def fit_latent_rgb(model, images: list[Image.Image]) -> list[list[float]]:
    """Least-squares 4×3 map from a model's latents to the (downscaled) pixels of the images they encode, for
    models whose latent space the published coefficients do not describe (our demo model). Store the result in the
    checkpoint's safetensors metadata under METADATA_KEY; the loader puts it in model.extra["latent_rgb"]."""
    latents = images_to_latents(model, images).float()            # [n, c, h, w]
    n, c, h, w = latents.shape
    targets = []
    for im in images:
        small = im.convert("RGB").resize((w, h), Image.Resampling.BOX)
        targets.append(torch.from_numpy(np.asarray(small, dtype=np.float32) / 127.5 - 1))
    y = torch.stack(targets).reshape(-1, 3)                      # [n*h*w, 3] in [-1, 1]
    x = latents.permute(0, 2, 3, 1).reshape(-1, c)
    solution = torch.linalg.lstsq(x, y).solution                 # [c, 3]
    return solution.tolist()


METADATA_KEY = LATENT_RGB_KEY
