"""fp32 vs bf16 on this CPU: time per UNet step (SD 1.5 shapes, batch 2 = one CFG step) and the image difference.

Decides whether bf16 is worth it on CPU: the issue's bar is ≥1.3× faster per step with a small image difference.
Uses the random-weight SD 1.5 checkpoint that bench_txt2img.py writes (run that first).

    venv/bin/python bench/bench_precision.py [--size 256] [--reps 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bench_txt2img import CACHE, build_weights  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    build_weights()
    from modules import devices, processing
    from modules.engine.params import GenerationParams
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    reg = ModelRegistry([CACHE], CACHE / "no-vae", HashCache(CACHE / "hashes.json"), hashing=False)
    mm = ModelManager(reg, devices.from_args(None), CACHE / "tok")
    fp32 = mm.load(reg.find_checkpoint("sd15.safetensors"))
    bf16 = copy.copy(fp32)
    bf16.unet = copy.deepcopy(fp32.unet).to(torch.bfloat16)
    bf16.text_encoders = [copy.deepcopy(e).to(torch.bfloat16) for e in fp32.text_encoders]
    bf16.dtype = torch.bfloat16
    lat = a.size // 8
    x, t, ctx = torch.randn(2, 4, lat, lat), torch.tensor(500), torch.randn(2, 77, 768)
    times = {"fp32": [], "bf16": []}
    with torch.no_grad():
        for m, dt in ((fp32, torch.float32), (bf16, torch.bfloat16)):  # warm-up
            m.unet(x.to(dt), t, ctx.to(dt))
        for _ in range(a.reps):
            for name, m, dt in (("fp32", fp32, torch.float32), ("bf16", bf16, torch.bfloat16)):
                start = time.perf_counter()
                m.unet(x.to(dt), t, ctx.to(dt))
                times[name].append(time.perf_counter() - start)
    p = GenerationParams(prompt="a photograph of a lighthouse at dusk", steps=a.steps, width=a.size,
                         height=a.size, seed=1, sampler_name="DPM++ 2M")
    img32 = np.asarray(processing.process(fp32, p).images[0])
    img16 = np.asarray(processing.process(bf16, GenerationParams(**p.to_dict())).images[0])
    t32, t16 = min(times["fp32"]), min(times["bf16"])
    print(f"SD 1.5 UNet step, batch 2, {a.size}x{a.size}, {a.threads} threads, best of {a.reps}")
    print(f"fp32 {t32:.3f} s  bf16 {t16:.3f} s  speed-up {t32 / t16:.2f}x")
    print(f"image PSNR bf16 vs fp32 ({a.steps} steps DPM++ 2M, VAE in fp32): {psnr(img32, img16):.1f} dB")


if __name__ == "__main__":
    main()
