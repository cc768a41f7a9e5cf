"""Our engine vs a plain diffusers StableDiffusionPipeline on the same weights (full SD 1.5 shapes, random weights).

Times one denoising step (median of the intervals between step callbacks) and one whole image (prompt encoding,
sampling, VAE decode) at 512×512 and 256×256, batch 1 with CFG, on 2 threads, fp32; prints the ratios and each
side's peak RSS. Each side runs in its own process so that peak RSS is its own; both run in the same invocation.

    venv/bin/python bench/bench_txt2img.py [--steps 6] [--sizes 512 256] [--reps 2]
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
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/sd-bench"))
PROMPT = "a photograph of an astronaut riding a horse, highly detailed"


def build_weights() -> None:
    """Random-weight SD 1.5 components, written as a diffusers folder (for the baseline) and as one LDM file (ours)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.models.architecture import family_defaults
    from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
    from modules.models.loader import tokenizer

    if (CACHE / "sd15.safetensors").is_file() and (CACHE / "diffusers" / "model_index.json").is_file():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    d = family_defaults("sd1")
    unet = UNet2DConditionModel(**d["unet"])
    vae = AutoencoderKL(**d["vae"])
    text = CLIPTextModel(CLIPTextConfig(**d["text_encoders"][0]["config"]))
    tok = tokenizer(CACHE / "tok", "<|endoftext|>")
    sched = EulerDiscreteScheduler.from_config({**d["scheduler"], "timestep_spacing": "trailing"})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(CACHE / "diffusers")
    save_checkpoint(to_ldm_state_dict(unet, vae, text, arch="sd1"), CACHE / "sd15.safetensors")


def run_side(side: str, steps: int, sizes: list[int]) -> dict:
    import torch
    torch.set_num_threads(2)
    step_times: list[float] = []

    t0 = time.perf_counter()
    if side == "ours":
        from modules import devices, processing
        from modules.engine.hooks import Hooks
        from modules.engine.params import GenerationParams
        from modules.models.hashing import HashCache
        from modules.models.manager import ModelManager
        from modules.models.registry import ModelRegistry
        reg = ModelRegistry([CACHE], CACHE / "no-vae", HashCache(CACHE / "hashes.json"), hashing=False)
        mm = ModelManager(reg, devices.from_args(None), CACHE / "tok")
        model = mm.load(reg.find_checkpoint("sd15.safetensors"))
        hooks = Hooks()
        hooks.add("after_step", lambda args: step_times.append(time.perf_counter()))

        def generate(size: int, seed: int):
            params = GenerationParams(prompt=PROMPT, steps=steps, width=size, height=size, cfg_scale=7.0, seed=seed,
                                      sampler_name="Euler")
            processing.process(model, params, hooks=hooks)
    else:
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(str(CACHE / "diffusers"), local_files_only=True,
                                                       safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)

        def on_step(pipeline, i, t, kw):
            step_times.append(time.perf_counter())
            return kw

        def generate(size: int, seed: int):
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.0, height=size, width=size,
                 generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=on_step)
    load_s = time.perf_counter() - t0
    out = {"side": side, "load_s": load_s, "sizes": {}}
    generate(64, 0)  # warm-up (first-call allocations, lazy imports)
    for size in sizes:
        step_times.clear()
        start = time.perf_counter()
        generate(size, 1)
        total = time.perf_counter() - start
        intervals = [b - a for a, b in zip(step_times, step_times[1:])]
        out["sizes"][size] = {"image_s": total, "step_s": statistics.median(intervals)}
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--side", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        print(json.dumps(run_side(a.side, a.steps, a.sizes)))
        return
    build_weights()
    results: dict[str, list[dict]] = {"ours": [], "diffusers": []}
    for rep in range(a.reps):
        for side in ("diffusers", "ours") if rep % 2 else ("ours", "diffusers"):  # alternate to cancel drift
            proc = subprocess.run([sys.executable, __file__, "--side", side, "--steps", str(a.steps), "--sizes",
                                   *map(str, a.sizes)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            results[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"rep {rep} {side}: {results[side][-1]}", flush=True)
    print(f"\nSD 1.5 shapes, random weights, fp32 on CPU, 2 threads, Euler, {a.steps} steps, batch 1 with CFG "
          f"(best of {a.reps})")
    print(f"{'size':>6} {'ours step s':>12} {'diffusers step s':>17} {'step ratio':>11} {'ours image s':>13} "
          f"{'diffusers image s':>18} {'image ratio':>12}")
    for size in a.sizes:
        key = str(size)
        ours = min(r["sizes"][key]["step_s"] for r in results["ours"])
        base = min(r["sizes"][key]["step_s"] for r in results["diffusers"])
        ours_i = min(r["sizes"][key]["image_s"] for r in results["ours"])
        base_i = min(r["sizes"][key]["image_s"] for r in results["diffusers"])
        print(f"{size:>6} {ours:>12.3f} {base:>17.3f} {ours / base:>11.3f} {ours_i:>13.2f} {base_i:>18.2f} "
              f"{ours_i / base_i:>12.3f}")
    for side in ("ours", "diffusers"):
        print(f"{side}: load {min(r['load_s'] for r in results[side]):.2f} s, "
              f"peak RSS {max(r['peak_rss_mib'] for r in results[side]):.0f} MiB")


if __name__ == "__main__":
    main()
