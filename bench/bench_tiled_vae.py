"""Peak memory and time of one SD VAE decode (random weights in SD 1.5's VAE shapes), untiled or tiled.

    venv/bin/python bench/bench_tiled_vae.py 512 untiled
    venv/bin/python bench/bench_tiled_vae.py 2048 tiled

One decode per process, so the peak RSS (ru_maxrss) is that decode's; modules/engine/tiled_vae.py's estimate of an
untiled decode's memory (LIVE_TENSORS) comes from these figures.
"""
from __future__ import annotations

import argparse
import resource
import time

import psutil
import torch
from diffusers import AutoencoderKL


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("side", type=int, help="image side in pixels (a multiple of 8)")
    ap.add_argument("mode", choices=["untiled", "tiled"])
    args = ap.parse_args()
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512).eval()
    z = torch.randn(1, 4, args.side // 8, args.side // 8)
    base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with torch.no_grad():
        (vae.tiled_decode(z) if args.mode == "tiled" else vae.decode(z)).sample
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{args.side}x{args.side} {args.mode}: {seconds:.1f} s, peak {(peak - base) / 1e9:.2f} GB over the weights")


if __name__ == "__main__":
    main()
