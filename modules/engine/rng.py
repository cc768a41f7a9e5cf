"""Seeds → initial noise, A1111's way: one generator per image (seed + i), drawn on the CPU by default so a seed gives
the same composition on every device; variation seeds (slerp), "resize seed from W×H", and ENSD for ancestral noise."""
from __future__ import annotations

import random

import torch

MAX_SEED = 4294967294


def random_seed() -> int:
    return random.randrange(MAX_SEED)


def resolve_seed(seed: int | None) -> int:
    return random_seed() if seed is None or int(seed) == -1 else int(seed)


def generator(seed: int, source: str = "CPU", device: torch.device | str = "cpu") -> torch.Generator:
    gen_device = "cpu" if source == "CPU" or torch.device(device).type == "cpu" else device
    return torch.Generator(gen_device).manual_seed(int(seed))


def randn(seed: int, shape: tuple[int, ...], source: str = "CPU", device: torch.device | str = "cpu") -> torch.Tensor:
    g = generator(seed, source, device)
    return torch.randn(shape, generator=g, device=g.device, dtype=torch.float32)


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of two noise tensors (keeps the noise's norm, unlike a linear mix)."""
    a_flat, b_flat = a.flatten(), b.flatten()
    dot = (a_flat / a_flat.norm() * b_flat / b_flat.norm()).sum().clamp(-1, 1)
    if dot.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def _paste_centered(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Copies `source` into the middle of `target` (cropping whichever is larger), as "resize seed from" does."""
    out = target.clone()
    _, th, tw = target.shape
    _, sh, sw = source.shape
    h, w = min(th, sh), min(tw, sw)
    ty, tx = max((th - sh) // 2, 0), max((tw - sw) // 2, 0)
    sy, sx = max((sh - th) // 2, 0), max((sw - tw) // 2, 0)
    out[:, ty:ty + h, tx:tx + w] = source[:, sy:sy + h, sx:sx + w]
    return out


def image_noise(shape: tuple[int, int, int], seed: int, subseed: int | None = None, subseed_strength: float = 0.0,
                resize_from: tuple[int, int] | None = None, latent_factor: int = 8, source: str = "CPU",
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Generator]:
    """The initial noise of one image, and the seed's generator (ancestral samplers keep drawing from it).
    resize_from=(width, height) in pixels of the size the seed was found at."""
    noise_shape = shape
    if resize_from and resize_from[0] > 0 and resize_from[1] > 0:
        noise_shape = (shape[0], resize_from[1] // latent_factor, resize_from[0] // latent_factor)
    gen = generator(seed, source, device)
    noise = torch.randn(noise_shape, generator=gen, device=gen.device, dtype=torch.float32)
    if subseed is not None and subseed_strength:
        noise = slerp(subseed_strength, noise, randn(subseed, noise_shape, source, device))
    if noise_shape != shape:
        noise = _paste_centered(randn(seed, shape, source, device), noise)
    return noise, gen


def batch_noise(shape: tuple[int, int, int], seeds: list[int], subseeds: list[int] | None = None,
                subseed_strength: float = 0.0, resize_from: tuple[int, int] | None = None, latent_factor: int = 8,
                source: str = "CPU", device: torch.device | str = "cpu", ensd: int = 0
                ) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Noise for a batch (image i: seeds[i], subseeds[i]) and the generators for the samplers' step noise: the
    seeds' own generators, or with ENSD (eta noise seed delta) new ones seeded with seed + ENSD, as A1111 does."""
    subs = subseeds or [None] * len(seeds)
    pairs = [image_noise(shape, s, sub, subseed_strength, resize_from, latent_factor, source, device)
             for s, sub in zip(seeds, subs)]
    gens = [g for _, g in pairs] if not ensd else [generator(s + ensd, source, device) for s in seeds]
    return torch.stack([n for n, _ in pairs]).to(device), gens
