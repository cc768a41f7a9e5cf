"""Prints the table of docs/SAMPLERS.md: for every sampler, the PSNR of the web UI's image against the image A1111's
sampling rules give (tests/support/a1111_reference.py, written independently of the engine's samplers) on the
bundled demo model — same UNet, VAE, text encoder and conditioning, so only sampling can differ.

    venv/bin/python -m tools.sampler_psnr [--steps 20] [--seeds 1 2 3] [--ckpt models/Stable-diffusion/demo/...]

Each row: median and minimum PSNR (dB) over the seeds, 8-bit RGB, "inf" when identical. One extra row pair uses a
prompt over 75 tokens with a short negative prompt (A1111 runs them as separate UNet batches).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPT = "a large red circle on the left, blue background"
NEGATIVE = "green"
LONG = ", ".join(["a large red circle on the left, blue background, small yellow square"] * 7)


def psnr(a, b) -> float:
    import numpy as np
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def load(ckpt: Path):
    from modules import devices
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    cache = Path(os.environ.get("BENCH_CACHE", "/tmp/sd-bench"))
    reg = ModelRegistry([ckpt.parent], cache / "no-vae", HashCache(cache / "hashes.json"), hashing=False)
    return ModelManager(reg, devices.from_args(None), ROOT / "cache" / "clip-tokenizer").load(
        reg.find_checkpoint(ckpt.name))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=ROOT / "models/Stable-diffusion/demo/demo-shapes.safetensors")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--samplers", nargs="*", default=None)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from modules import processing
    from modules.engine import samplers
    from modules.engine.params import GenerationParams
    from modules.engine.vae_codec import latents_to_images
    from tests.support import a1111_reference as ref

    model = load(args.ckpt)
    size = model.spec.native_resolution
    names = args.samplers or [s.name for s in samplers.SAMPLERS]
    cases = [(name, PROMPT, NEGATIVE) for name in names]
    cases += [(f"{name} (long prompt, short negative)", LONG, NEGATIVE) for name in ("DPM++ 2M", "Euler a")]
    print(f"model {args.ckpt.name}, {size}x{size}, {args.steps} steps, CFG 7, seeds {args.seeds}")
    print("| sampler | default schedule | median PSNR (dB) | min PSNR (dB) |")
    print("|---|---|---|---|")
    for label, prompt, negative in cases:
        name = label.split(" (")[0]
        spec, schedule = samplers.resolve(name, "Automatic")
        values, t0 = [], time.perf_counter()
        for seed in args.seeds:
            params = GenerationParams(prompt=prompt, negative_prompt=negative, steps=args.steps, width=size,
                                      height=size, cfg_scale=7.0, seed=seed, sampler_name=name,
                                      do_not_save_samples=True, do_not_save_grid=True)
            ours = processing.process(model, params).images[0]
            latents = ref.run(model, name, args.steps, [seed], [prompt], [negative], 7.0, size, size)
            theirs = latents_to_images(model, latents.to(model.device))[0]
            values.append(psnr(ours, theirs))
        fmt = (lambda v: "inf" if math.isinf(v) else f"{v:.1f}")
        shown = schedule if spec.kind == "k" else "(timesteps)"
        print(f"| {label} | {shown} | {fmt(statistics.median(values))} | {fmt(min(values))} |", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
