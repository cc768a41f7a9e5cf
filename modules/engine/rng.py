"""Seeds → initial noise, A1111's way: one generator per image (seed + i), drawn on the CPU by default so a seed gives
the same composition on every device; variation seeds (slerp), "resize seed from W×H", and ENSD for ancestral noise."""
from __future__ import annotations

import random

import numpy as np
import torch

MAX_SEED = 4294967294


def random_seed() -> int:
    return random.randrange(MAX_SEED)


def resolve_seed(seed: int | None) -> int:
    return random_seed() if seed is None or int(seed) == -1 else int(seed)


class PhiloxGenerator:
    """A1111's "NV" noise source: the normal numbers an NVIDIA GPU's torch.randn gives for a seed, computed on the CPU
    so that they are the same on any machine. Counter-based Philox-4x32 with 10 rounds (Salmon et al. 2011, "Parallel
    random numbers: as easy as 1, 2, 3"), key = the 64-bit seed, counter = (call number, 0, element index, 0); the
    first two output words become one normal number by the Box–Muller transform, in float32 as cuRAND computes it.
    Written here because no library offers cuRAND's stream on the CPU."""

    M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
    W = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
    device = torch.device("cpu")

    def __init__(self, seed: int):
        self.seed = int(seed) & 0xFFFF_FFFF_FFFF_FFFF
        self.offset = 0

    @staticmethod
    def _hi_lo(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x >> np.uint64(32)).astype(np.uint32), (x & np.uint64(0xFFFF_FFFF)).astype(np.uint32)

    def randn(self, shape) -> torch.Tensor:
        n = int(np.prod(shape))
        c0 = np.full(n, self.offset & 0xFFFF_FFFF, dtype=np.uint32)
        c1 = np.zeros(n, dtype=np.uint32)
        c2 = np.arange(n, dtype=np.uint32)
        c3 = np.zeros(n, dtype=np.uint32)
        k0 = np.full(n, self.seed & 0xFFFF_FFFF, dtype=np.uint32)
        k1 = np.full(n, self.seed >> 32, dtype=np.uint32)
        self.offset += 1
        with np.errstate(over="ignore"):
            for r in range(10):
                hi0, lo0 = self._hi_lo(c0.astype(np.uint64) * self.M[0])
                hi1, lo1 = self._hi_lo(c2.astype(np.uint64) * self.M[1])
                c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
                if r < 9:
                    k0, k1 = k0 + self.W[0], k1 + self.W[1]
        inv32 = np.float32(2.3283064e-10)
        inv32_2pi = np.float32(2.3283064e-10 * 6.2831855)
        u = c0.astype(np.float32) * inv32 + inv32 / np.float32(2)
        v = c1.astype(np.float32) * inv32_2pi + inv32_2pi / np.float32(2)
        out = np.sqrt(np.float32(-2.0) * np.log(u)) * np.sin(v)
        return torch.from_numpy(out.astype(np.float32).reshape(tuple(shape)))


def generator(seed: int, source: str = "CPU", device: torch.device | str = "cpu"):
    """The seed's generator for a noise source: CPU (A1111's default: the same numbers on every device), GPU (the
    device's own generator), NV (PhiloxGenerator)."""
    if source == "NV":
        return PhiloxGenerator(seed)
    gen_device = "cpu" if source == "CPU" or torch.device(device).type == "cpu" else device
    return torch.Generator(gen_device).manual_seed(int(seed))


def draw(gen, shape) -> torch.Tensor:
    """The next normal numbers of a generator made by `generator` (float32, on the generator's device)."""
    if isinstance(gen, PhiloxGenerator):
        return gen.randn(shape)
    return torch.randn(tuple(shape), generator=gen, device=gen.device, dtype=torch.float32)


def randn(seed: int, shape: tuple[int, ...], source: str = "CPU", device: torch.device | str = "cpu") -> torch.Tensor:
    return draw(generator(seed, source, device), shape)


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
    # as A1111: with "resize seed from", the seed's noise at the old size comes from a fresh generator and the
    # image's own generator draws the full-size noise it is pasted into (and goes on from there)
    noise = draw(gen, noise_shape) if noise_shape == shape else randn(seed, noise_shape, source, device)
    if subseed is not None and subseed_strength:
        noise = slerp(subseed_strength, noise, randn(subseed, noise_shape, source, device))
    if noise_shape != shape:
        noise = _paste_centered(draw(gen, shape), noise)
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
