"""The bundled demo model (models/Stable-diffusion/demo): load time, first image, and one 64x64 image in 20 steps,
through the web UI's engine, against a plain diffusers StableDiffusionPipeline on the same weights.

Each side runs in a fresh process on 2 threads (fp32, DPM++ 2M / DPMSolverMultistep, CFG 7, batch 1):

* ours: ModelManager.load of the single file + yaml (what the web UI does at start), then
  modules.processing.process; the first image and the median of --reps more;
* diffusers: the same loaded components in a StableDiffusionPipeline (so only sampling is compared; its load time is
  not measured: diffusers cannot read this file offline without our loader's configs).

    venv/bin/python bench/bench_demo_model.py [--reps 5] [--ckpt models/Stable-diffusion/demo/demo-shapes.safetensors]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from peak_rss import peak_rss_mib  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPT = "a large red circle on the left, blue background"


def run_side(side: str, ckpt: Path, reps: int, threads: int) -> dict:
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from modules import devices, processing
    from modules.engine.params import GenerationParams
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry

    cache = Path(os.environ.get("BENCH_CACHE", "/tmp/sd-bench"))
    t0 = time.perf_counter()
    reg = ModelRegistry([ckpt.parent], cache / "no-vae", HashCache(cache / "hashes.json"), hashing=False)
    mm = ModelManager(reg, devices.from_args(None), ROOT / "cache" / "clip-tokenizer")
    model = mm.load(reg.find_checkpoint(ckpt.name))
    load_s = time.perf_counter() - t0
    side_px = model.spec.native_resolution

    if side == "ours":
        def generate(seed: int):
            params = GenerationParams(prompt=PROMPT, steps=20, width=side_px, height=side_px, cfg_scale=7.0,
                                      seed=seed, sampler_name="DPM++ 2M", do_not_save_samples=True,
                                      do_not_save_grid=True)
            return processing.process(model, params)
    else:
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        sched = DPMSolverMultistepScheduler.from_config(model.scheduler_config())
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoders[0],
                                       tokenizer=model.tokenizers[0], unet=model.unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)

        def generate(seed: int):
            return pipe(PROMPT, num_inference_steps=20, guidance_scale=7.0, height=side_px, width=side_px,
                        generator=torch.Generator("cpu").manual_seed(seed))

    t0 = time.perf_counter()
    generate(0)
    first_s = time.perf_counter() - t0
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        generate(1 + i)
        times.append(time.perf_counter() - t0)
    return {"side": side, "threads": threads, "resolution": side_px, "load_s": load_s,
            "process_to_first_image_s": time.perf_counter() - t_import - sum(times),
            "first_image_s": first_s, "image_s": statistics.median(times), "images_s": times,
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    from modules.paths import DEMO_CHECKPOINT

    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", type=Path, default=DEMO_CHECKPOINT)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides (best is reported)")
    ap.add_argument("--side", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        print(json.dumps(run_side(a.side, a.ckpt.resolve(), a.reps, a.threads)))
        return
    results: dict[str, list[dict]] = {"ours": [], "diffusers": []}
    for rnd in range(a.rounds):
        for side in ("diffusers", "ours") if rnd % 2 else ("ours", "diffusers"):
            proc = subprocess.run([sys.executable, __file__, "--side", side, "--ckpt", str(a.ckpt), "--reps",
                                   str(a.reps), "--threads", str(a.threads)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            results[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {rnd} {side}: {results[side][-1]}", flush=True)
    best = {s: min(r, key=lambda x: x["image_s"]) for s, r in results.items()}
    o, d = best["ours"], best["diffusers"]
    print(f"\ndemo model {a.ckpt.name}, {o['resolution']}x{o['resolution']}, 20 steps DPM++ 2M, CFG 7, fp32, "
          f"{a.threads} threads (best of {a.rounds} rounds, median of {a.reps} images each)")
    print(f"load (web UI loader): {o['load_s']:.2f} s; first image {o['first_image_s']:.2f} s; "
          f"process start to first image {o['process_to_first_image_s']:.2f} s")
    print(f"one image: ours {o['image_s']:.3f} s, diffusers pipeline {d['image_s']:.3f} s, "
          f"ratio {o['image_s'] / d['image_s']:.3f}")
    print(f"peak RSS: ours {o['peak_rss_mib']:.0f} MiB, diffusers side {d['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
