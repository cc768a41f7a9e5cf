"""img2img and inpainting: the init images and masks prepared for sampling, and the results put back into the
originals (A1111's "Just resize" / "Crop and resize" / "Resize and fill" / latent upscale, masked content, "only
masked" crops, 9-channel inpainting UNets)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from modules.engine import image_ops
from modules.engine.vae_codec import images_to_latents


def mask_latent(mask: Image.Image, shape: tuple[int, int], device) -> torch.Tensor:
    m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255)[None, None]
    return F.interpolate(m, size=shape, mode="bilinear", align_corners=False).to(device)


def inpainting_image_cond(model, images: list[Image.Image] | None, masks: list[Image.Image] | None,
                          batch: int, width: int, height: int) -> torch.Tensor | None:
    """Extra UNet inputs of 9-channel inpainting checkpoints: the mask and the latent of the image with the masked
    area blanked. txt2img (no image) masks everything."""
    if model.unet.config.in_channels != 9:
        return None
    factor = model.vae_scale_factor
    if images is None or masks is None:
        blank = Image.new("RGB", (width, height), (127, 127, 127))
        images, masks = [blank] * batch, [Image.new("L", (width, height), 255)] * batch
    masked = []
    for im, m in zip(images, masks):
        keep = (np.asarray(m.convert("L"), dtype=np.float32) < 128)[..., None]
        arr = np.asarray(image_ops.to_rgb(im), dtype=np.float32)
        masked.append(Image.fromarray((arr * keep + 127.5 * (1 - keep)).astype(np.uint8)))
    latent = images_to_latents(model, masked)
    mask_lat = torch.cat([(mask_latent(m, (height // factor, width // factor), model.device) > 0.5).float()
                          for m in masks])
    return torch.cat([mask_lat, latent], dim=1)


@dataclass
class Img2ImgBatch:
    """One batch's img2img inputs, ready for sampling, and what is needed to put the results back."""
    originals: list[Image.Image]
    work: list[Image.Image]             # the inputs at the output size (cropped for "only masked")
    latents: torch.Tensor | None        # None: strength 0, `work` is the answer
    image_cond: torch.Tensor | None
    blend_mask: torch.Tensor | None
    work_mask: Image.Image | None
    mask: Image.Image | None
    crop_box: tuple[int, int, int, int] | None


def prepare(model, p, init_images: list[Image.Image], strength: float, noise: torch.Tensor) -> Img2ImgBatch:
    factor = model.vae_scale_factor
    mask = image_ops.prepare_mask(p.image_mask, bool(p.inpainting_mask_invert), 0) \
        if p.image_mask is not None else None
    originals = [image_ops.to_rgb(im) for im in init_images]
    crop_box = None
    if mask is not None and p.inpaint_full_res:
        # "only masked": work on the mask's neighbourhood at full resolution, paste it back afterwards
        crop_box = image_ops.masked_box(mask.resize(originals[0].size), p.inpaint_full_res_padding, p.width,
                                        p.height)
        work = [im.crop(crop_box).resize((p.width, p.height), Image.Resampling.LANCZOS) for im in originals]
        work_mask = mask.resize(originals[0].size).crop(crop_box).resize((p.width, p.height))
    else:
        work = [image_ops.resize_image(p.resize_mode, im, p.width, p.height) for im in originals]
        work_mask = image_ops.resize_image(p.resize_mode, mask, p.width, p.height) if mask is not None else None
    batch = Img2ImgBatch(originals, work, None, None, None, work_mask, mask, crop_box)
    if strength == 0:
        return batch
    if work_mask is not None and p.inpainting_fill == 0:
        work = [image_ops.fill_masked(im, work_mask) for im in work]
    if p.resize_mode == 3 and work_mask is None:
        # "Just resize (latent upscale)": encode each input at its own size, then resize its latents
        size = (p.height // factor, p.width // factor)
        latents = torch.cat([F.interpolate(
            images_to_latents(model, [im.resize((max(factor, im.width // factor * factor),
                                                  max(factor, im.height // factor * factor)))]),
            size=size, mode="bilinear", align_corners=False) for im in originals])
    else:
        latents = images_to_latents(model, work)
    nine = model.unet.config.in_channels == 9
    if work_mask is not None:
        # A1111's p.latent_mask (the outpainting scripts set one): the latent blend follows it, unblurred, while
        # the blurred image mask still composites the result
        latent_mask = getattr(p, "latent_mask", None)
        blend_source = image_ops.resize_image(p.resize_mode, latent_mask.convert("L"), p.width, p.height) \
            if latent_mask is not None and batch.crop_box is None \
            else image_ops.prepare_mask(work_mask, False, p.mask_blur)
        lat_mask = mask_latent(blend_source, latents.shape[2:], latents.device)
        lat_mask = (lat_mask > 0.5).float() if nine else lat_mask.round()
        if p.inpainting_fill == 2:
            latents = latents * (1 - lat_mask) + noise * lat_mask
        elif p.inpainting_fill == 3:
            latents = latents * (1 - lat_mask)
        if not nine:
            batch.blend_mask = lat_mask
    if nine:
        masks = [work_mask] * len(work) if work_mask is not None else None
        batch.image_cond = inpainting_image_cond(model, work if masks else None, masks, len(work), p.width,
                                                 p.height)
    batch.latents = latents
    return batch


def composite(p, batch: Img2ImgBatch, images: list[Image.Image]) -> list[Image.Image]:
    """The generated images put back into the originals: through the (blurred) mask, and for "only masked" pasted
    into the crop box of the full-size original."""
    if batch.work_mask is None:
        return images
    blurred = image_ops.prepare_mask(batch.work_mask, False, p.mask_blur) if p.mask_blur else batch.work_mask
    if batch.crop_box is None:
        resized = [image_ops.resize_image(p.resize_mode, im, p.width, p.height) for im in batch.originals]
        return [image_ops.composite(orig, gen, blurred) for orig, gen in zip(resized, images)]
    full_mask = image_ops.prepare_mask(batch.mask.resize(batch.originals[0].size), False, p.mask_blur)
    x1, y1, x2, y2 = batch.crop_box
    results = []
    for orig, gen in zip(batch.originals, images):
        pasted = orig.copy()
        pasted.paste(gen.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        results.append(image_ops.composite(orig, pasted, full_mask))
    return results
