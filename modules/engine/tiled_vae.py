"""Tiled VAE decode and encode: large images in overlapping tiles, blended so no seam shows.

The tiling itself is diffusers' AutoencoderKL.tiled_decode / tiled_encode (tiles of the VAE's native size —
512 px for SD 1.5, 1024 px for SDXL — overlapping by a quarter, blended linearly across the overlap). This module
decides when to use it:

* `--tiled-vae` or the `tiled_vae` setting: every image larger than one tile;
* otherwise automatically, when an untiled decode would not fit: its peak memory is estimated from the size of the
  full-resolution activations (see `decode_bytes`) and compared with the memory free on the VAE's device (CUDA:
  the driver's free memory plus what torch's cache holds unused; CPU: the memory the OS reports available);
* on CUDA an out-of-memory error in an untiled decode is caught once and the decode retried in tiles.

Tiles are decoded without their neighbours, so each tile's group norms see only that tile: colours can differ a
little from the untiled image, which the overlap blend spreads out so that no edge is visible.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("sd.vae")

# peak bytes of an untiled decode ≈ LIVE_TENSORS × the largest full-resolution activation. Measured with the
# SD VAE (random weights, fp32, CPU; bench/bench_tiled_vae.py): 512² peaks 1.04 GB over the weights, 1024² 4.06 GB,
# i.e. about 4 tensors of 256 channels × H × W × 4 bytes (2048² would need ~16 GB); 6 leaves a margin.
LIVE_TENSORS = 6
FIT_FRACTION = 0.8   # use at most this share of the free memory for one decode


def _full_res_channels(vae) -> int:
    """Channels of the widest activation at full resolution: the last up block's input (its upsampler runs at the
    output size with the channels of the block before it)."""
    chans = list(vae.config.block_out_channels)
    return chans[1] if len(chans) > 1 else chans[0]


def decode_bytes(vae, latent_h: int, latent_w: int, batch: int = 1) -> int:
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    elem = torch.finfo(vae.dtype).bits // 8
    return LIVE_TENSORS * batch * _full_res_channels(vae) * latent_h * factor * latent_w * factor * elem


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil
    return int(psutil.virtual_memory().available)


def tile_latent_size(vae) -> int:
    return int(vae.tile_latent_min_size)


def _circular(vae) -> bool:
    """Seamless tiling (the "Tiling" option) pads circularly: tiles would wrap onto themselves, so no tiles then."""
    return any(getattr(m, "padding_mode", "zeros") == "circular" for m in vae.decoder.modules())


def should_tile_decode(vae, latents: torch.Tensor, forced: bool, free: int | None = None) -> bool:
    h, w = latents.shape[-2:]
    if max(h, w) <= tile_latent_size(vae) or _circular(vae):
        return False
    if forced:
        return True
    device = latents.device
    available = free_bytes(device) if free is None else free
    need = decode_bytes(vae, h, w, latents.shape[0])
    if need > FIT_FRACTION * available:
        log.info("VAE: decoding %dx%d in tiles (an untiled decode needs about %.1f GB, %.1f GB free)",
                 w * (2 ** (len(vae.config.block_out_channels) - 1)), h * (2 ** (len(vae.config.block_out_channels)
                                                                               - 1)), need / 1e9, available / 1e9)
        return True
    return False


def decode(vae, z: torch.Tensor, tiled: bool) -> torch.Tensor:
    """z already divided by the scaling factor → the decoded image in -1..1 (VAE dtype)."""
    with torch.no_grad():
        if tiled:
            return vae.tiled_decode(z).sample
        try:
            return vae.decode(z).sample
        except torch.OutOfMemoryError:
            if z.device.type != "cuda" or _circular(vae) or max(z.shape[-2:]) <= tile_latent_size(vae):
                raise
            log.warning("VAE: out of memory decoding %s; retrying in tiles", tuple(z.shape))
            torch.cuda.empty_cache()
            return vae.tiled_decode(z).sample


def should_tile_encode(vae, x: torch.Tensor, forced: bool, free: int | None = None) -> bool:
    h, w = x.shape[-2:]
    if max(h, w) <= int(vae.tile_sample_min_size) or _circular(vae):
        return False
    if forced:
        return True
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    need = decode_bytes(vae, h // factor, w // factor, x.shape[0])   # the encoder mirrors the decoder's sizes
    return need > FIT_FRACTION * (free_bytes(x.device) if free is None else free)


def encode(vae, x: torch.Tensor, tiled: bool):
    """x in -1..1 → the latent distribution."""
    with torch.no_grad():
        return (vae.tiled_encode(x) if tiled else vae.encode(x)).latent_dist
