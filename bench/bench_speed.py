"""Issue #21's comparison in one command: our web UI's default mode against plain diffusers pipelines in fp32 and in
bf16, on the same random weights, one image each, every side in a fresh process (so peak RSS is that side's own).

Sides (run in this order, then again in reverse with --reps 2, to cancel drift on a shared machine):
  ours           the server's default flags (devices.from_args / ModelOptions.from_args of an empty command line),
                 or the flags in --ours-args; settings via --ours-settings (JSON)
  ours-fp32      the same with --no-half: the reference image for PSNR
  diffusers-fp32 StableDiffusionPipeline / StableDiffusionXLPipeline.from_pretrained on the diffusers folder
  diffusers-bf16 the same with torch_dtype=torch.bfloat16
Extra variants of ours: --variant NAME='{"args": "--flags", "settings": {...}}' (e.g. token merging).

Each side: load, a warm-up image (2 steps at a small size), then the timed image(s) at --size with --steps Euler,
CFG 7, batch 1, the same seed (the initial noise is the same on every side: torch.randn of the seed on the CPU).
Printed per side: seconds per image (best of --reps), the ratio to the faster diffusers side (>1 = ours faster),
the process CPU time of the image and the same ratio on it (with --threads 1 on a shared machine this is the
steadier figure), peak RSS, and the PSNR against our fp32 image and against the same family's fp32 image.

    venv/bin/python bench/bench_speed.py                     # SD 1.5 shapes, 512², 10 steps
    venv/bin/python bench/bench_speed.py --size 768
    venv/bin/python bench/bench_speed.py --model sdxl --size 1024 --steps 4
    venv/bin/python bench/bench_speed.py --size 256 --steps 4 --sides ours diffusers-bf16   # a quick check

The first run writes the random weights under $BENCH_CACHE (/tmp/sd-bench): SD 1.5 in fp32 (8.5 GB: LDM file and
diffusers folder), SDXL in fp16 (10 GB).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from peak_rss import peak_rss_mib  # noqa: E402

CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/sd-bench"))
PROMPT = "a photograph of an astronaut riding a horse, highly detailed"
NEGATIVE = "blurry, low quality"
SEED = 1
SIDES = ("ours", "ours-fp32", "diffusers-fp32", "diffusers-bf16")
FILES = {"sd1": ("sd15.safetensors", "diffusers"), "sdxl": ("sdxl.safetensors", "diffusers-sdxl")}


def build_weights(family: str) -> None:
    """Random-weight components of the family's real shapes, as a diffusers folder and as one LDM file."""
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.architecture import family_defaults
    from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
    from modules.models.loader import tokenizer

    single, folder = FILES[family]
    if (CACHE / single).is_file() and (CACHE / folder / "model_index.json").is_file():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    d = family_defaults(family)
    # SDXL is built in fp16 (its files usually are; fp32 would need 14 GB of RAM just to build it)
    dtype = torch.float16 if family == "sdxl" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = UNet2DConditionModel(**d["unet"])
        vae = AutoencoderKL(**d["vae"])
        encoders = []
        for enc in d["text_encoders"]:
            cls = CLIPTextModelWithProjection if enc["class"] == "CLIPTextModelWithProjection" else CLIPTextModel
            encoders.append(cls(CLIPTextConfig(**enc["config"])))
    finally:
        torch.set_default_dtype(previous)
    toks = [tokenizer(CACHE / "tok", enc.get("pad_token", "<|endoftext|>")) for enc in d["text_encoders"]]
    sched = EulerDiscreteScheduler.from_config({**d["scheduler"], "timestep_spacing": "leading"})
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                         tokenizer=toks[0], tokenizer_2=toks[1], unet=unet, scheduler=sched)
        sd = to_ldm_state_dict(unet, vae, encoders[0], encoders[1], arch="sdxl")
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=toks[0], unet=unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        sd = to_ldm_state_dict(unet, vae, encoders[0], arch="sd1")
    pipe.save_pretrained(CACHE / folder)
    save_checkpoint(sd, CACHE / single)


def run_side(side: str, family: str, size: int, steps: int, reps: int, out_png: Path, ours_args: str,
             settings: dict, threads: int) -> dict:
    import shlex

    import torch
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if side.startswith("ours"):
        from modules import cmd_args, devices, processing
        from modules.engine.params import GenerationParams
        from modules.models.hashing import HashCache
        from modules.models.manager import ModelManager
        from modules.models.model_options import ModelOptions
        from modules.models.registry import ModelRegistry
        args = cmd_args.parse_known(shlex.split(ours_args), env={})
        device = devices.from_args(args)
        devices.use(device)
        if device.device.type == "cpu":     # as the server's Runtime does
            from modules import cpu_allocator
            cpu_allocator.keep_freed_memory()
        reg = ModelRegistry([CACHE], CACHE / "no-vae", HashCache(CACHE / "hashes.json"), hashing=False)
        mm = ModelManager(reg, device, CACHE / "tok", options=ModelOptions.from_args(args),
                          setting=lambda key, default: settings.get(key, default))
        model = mm.load(reg.find_checkpoint(FILES[family][0]))
        precision = f"unet {model.dtype}, vae {next(model.vae.parameters()).dtype}"
        run_options = _run_options(settings)

        def generate(sz: int, n_steps: int):
            params = GenerationParams(prompt=PROMPT, negative_prompt=NEGATIVE, steps=n_steps, width=sz, height=sz,
                                      cfg_scale=7.0, seed=SEED, sampler_name="Euler")
            return processing.process(model, params, opts=run_options).images[0]
    else:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
        dtype = torch.bfloat16 if side.endswith("bf16") else torch.float32
        cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
        kw = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
        pipe = cls.from_pretrained(str(CACHE / FILES[family][1]), local_files_only=True, torch_dtype=dtype, **kw)
        pipe.set_progress_bar_config(disable=True)
        precision = str(dtype)

        def generate(sz: int, n_steps: int):
            return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=n_steps, guidance_scale=7.0,
                        height=sz, width=sz, generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    load_s = time.perf_counter() - t0
    generate(128 if family == "sdxl" else 64, 2)  # warm-up: first-call allocations, lazy imports, oneDNN kernels
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        image = generate(size, steps)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    image.save(out_png)
    return {"side": side, "load_s": load_s, "image_s": min(times), "times": times, "cpu_s": min(cpu),
            "peak_rss_mib": peak_rss_mib(), "precision": precision, "png": str(out_png)}


def _run_options(settings: dict):
    """Settings that act on a job (token merging, feature cache, sampler options such as s_min_uncond) as the
    server resolves them (runtime.run_options)."""
    from modules.engine import sampler_settings, speedups
    from modules.engine.run import RunOptions
    get = lambda key, default: settings.get(key, default)  # noqa: E731
    return RunOptions(speed=speedups.from_settings(get), sampler=sampler_settings.sampler_options(get))


def psnr(a_png: str, b_png: str) -> float:
    import numpy as np
    from PIL import Image
    a = np.asarray(Image.open(a_png).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(b_png).convert("RGB"), dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(wanted)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(FILES), default="sd1")
    ap.add_argument("--size", type=int, default=None, help="image side (default 512; SDXL 1024)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=1, help="timed images per side (best counts)")
    ap.add_argument("--rounds", type=int, default=1, help="run all sides this many times, alternating the order")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--sides", nargs="+", default=list(SIDES))
    ap.add_argument("--ours-args", default="", help="server flags for the 'ours' side (default: none = defaults)")
    ap.add_argument("--ours-settings", default="{}", help="JSON settings for the 'ours' side")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=JSON with 'args' and/or 'settings': another 'ours' side, e.g. "
                         "tome='{\"settings\": {\"token_merging_ratio\": 0.3}}'")
    ap.add_argument("--out", type=Path, default=CACHE / "bench-images")
    ap.add_argument("--side-json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    size = a.size or (1024 if a.model == "sdxl" else 512)
    if a.side_json:
        job = json.loads(a.side_json)
        print(json.dumps(run_side(job["side"], a.model, size, a.steps, a.reps, Path(job["png"]), job["args"],
                                  job["settings"], a.threads)))
        return
    build_weights(a.model)
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for side in a.sides:
        args = a.ours_args if side == "ours" else ("--no-half" if side == "ours-fp32" else "")
        jobs[side] = {"args": args, "settings": json.loads(a.ours_settings) if side == "ours" else {}}
    for spec in a.variant:
        name, _, raw = spec.partition("=")
        extra = json.loads(raw or "{}")
        jobs["ours+" + name] = {"args": extra.get("args", a.ours_args), "settings": extra.get("settings", {})}
    results: dict[str, dict] = {}
    names = list(jobs)
    for rnd in range(a.rounds):
        for side in (names if rnd % 2 == 0 else names[::-1]):
            png = a.out / f"{a.model}-{size}-{side}.png"
            job = {**jobs[side], "side": side, "png": str(png)}
            cmd = [sys.executable, __file__, "--model", a.model, "--size", str(size), "--steps", str(a.steps),
                   "--reps", str(a.reps), "--threads", str(a.threads), "--side-json", json.dumps(job)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if side not in results or r["image_s"] < results[side]["image_s"]:
                r["peak_rss_mib"] = max(r["peak_rss_mib"], results.get(side, {}).get("peak_rss_mib", 0))
                results[side] = r
            else:
                results[side]["peak_rss_mib"] = max(r["peak_rss_mib"], results[side]["peak_rss_mib"])
            print(f"round {rnd} {side}: {r['image_s']:.2f} s/image, load {r['load_s']:.1f} s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['precision']})", flush=True)
    baseline = min((results[s]["image_s"] for s in results if s.startswith("diffusers")), default=None)
    print(f"\n{a.model}, {size}x{size}, Euler {a.steps} steps, CFG 7, batch 1, {a.threads} threads; "
          f"best of {a.reps} image(s) x {a.rounds} round(s)\n{cpu_flags()}")
    cpu_base = min((results[s]["cpu_s"] for s in results if s.startswith("diffusers")), default=None)
    print(f"{'side':<22} {'s/image':>8} {'speed vs best diffusers':>24} {'CPU s':>8} {'CPU speed':>10} "
          f"{'peak RSS MiB':>13} {'PSNR vs ours fp32':>18} {'PSNR vs own fp32':>17}  precision")
    for side, r in results.items():
        ratio = f"{baseline / r['image_s']:.2f}x" if baseline else "-"
        ref = results.get("ours-fp32")
        own = results.get("diffusers-fp32" if side.startswith("diffusers") else "ours-fp32")
        p_ours = f"{psnr(r['png'], ref['png']):.1f} dB" if ref and side != "ours-fp32" else "-"
        p_own = f"{psnr(r['png'], own['png']):.1f} dB" if own and own is not r else "-"
        cpu_ratio = f"{cpu_base / r['cpu_s']:.2f}x" if cpu_base else "-"
        print(f"{side:<22} {r['image_s']:>8.2f} {ratio:>24} {r['cpu_s']:>8.2f} {cpu_ratio:>10} "
              f"{r['peak_rss_mib']:>13.0f} {p_ours:>18} {p_own:>17}  {r['precision']}")


if __name__ == "__main__":
    main()
