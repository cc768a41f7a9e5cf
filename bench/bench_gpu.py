"""GPU comparison in one command: our engine's default against a plain diffusers fp16 pipeline and against our memory
and attention flags, on the same random full SD 1.5 weights (bench/bench_txt2img.py builds them), printing seconds
per image, ratios and peak VRAM.

    venv/bin/python bench/bench_gpu.py --device cuda                      # SD 1.5 shapes, 512×512, 20 steps
    venv/bin/python bench/bench_gpu.py --device cpu --shapes tiny         # smoke run: tiny shapes, seconds

It installs nothing: xformers is measured when importable and reported as skipped otherwise. Each configuration
runs in its own process (so peak memory is its own): one warm-up image at the measured size, then --reps timed images
(best kept). Peak VRAM is torch.cuda.max_memory_allocated over the timed image; "resident" is what the weights hold
on the GPU after loading (near zero with --medvram/--lowvram). On the CPU the memory column is the process's peak
RSS. A configuration that fails is reported and the others still run. --json writes every figure to a file.

Configurations:
  ours                     our engine, default flags (CUDA: fp16 weights, SDPA attention, channels-last, NaN check)
  diffusers-fp16           StableDiffusionPipeline, torch_dtype float16 (CPU: float32), its default attention
  ours --medvram           components moved to the GPU only while they run
  ours --lowvram           the UNet moved in block by block
  ours --xformers          xformers attention (skipped without the package or CUDA)
  ours --opt-sdp-no-mem-attention
  ours --compile           only with --compile (compiling takes minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))     # also when loaded by a test rather than run as a script
from peak_rss import peak_rss_mib  # noqa: E402
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPT = "a photograph of an astronaut riding a horse, highly detailed"

CONFIGS = {
    "ours": ["ours"],
    "diffusers-fp16": ["diffusers"],
    "ours --medvram": ["ours", "--medvram"],
    "ours --lowvram": ["ours", "--lowvram"],
    "ours --xformers": ["ours", "--xformers"],
    "ours --opt-sdp-no-mem-attention": ["ours", "--opt-sdp-no-mem-attention"],
    "ours --compile": ["ours", "--compile"],
}


def build_tiny(cache: Path) -> None:
    """Tiny SD1-layout weights (the test suite's tiny model) as an LDM file and a diffusers folder."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: F401

    from modules.models.architecture import family_defaults
    from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
    from modules.models.loader import tokenizer
    from tests.support.model_factory import make_tiny_components

    if (cache / "sd15.safetensors").is_file() and (cache / "diffusers" / "model_index.json").is_file():
        return
    cache.mkdir(parents=True, exist_ok=True)
    comps = make_tiny_components("sd1")
    sched = EulerDiscreteScheduler.from_config({**family_defaults("sd1")["scheduler"], "timestep_spacing": "trailing"})
    pipe = StableDiffusionPipeline(vae=comps["vae"], text_encoder=comps["text_encoder"],
                                   tokenizer=tokenizer(cache / "tok", "<|endoftext|>"), unet=comps["unet"],
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(cache / "diffusers")
    save_checkpoint(to_ldm_state_dict(comps["unet"], comps["vae"], comps["text_encoder"], arch="sd1"),
                    cache / "sd15.safetensors")


def build_weights(shapes: str, cache: Path) -> None:
    if shapes == "tiny":
        build_tiny(cache)
        return
    os.environ["BENCH_CACHE"] = str(cache)
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_txt2img
    bench_txt2img.CACHE = cache
    bench_txt2img.build_weights()


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(name: str, device_kind: str, cache: Path, size: int, steps: int, reps: int) -> dict:
    """One configuration, in this process: load, warm up, time `reps` images."""
    import torch
    kind, *flags = CONFIGS[name]
    if device_kind == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    out: dict = {"config": name, "flags": flags}
    if "--xformers" in flags:
        from modules.models.model_options import xformers_importable
        if device_kind != "cuda" or not xformers_importable():
            return {**out, "skipped": "xformers not installed" if device_kind == "cuda" else "xformers needs CUDA"}
    t0 = time.perf_counter()
    if kind == "ours":
        from modules import cmd_args, devices, processing
        from modules.engine.params import GenerationParams
        from modules.models.hashing import HashCache
        from modules.models.manager import ModelManager
        from modules.models.model_options import ModelOptions
        from modules.models.registry import ModelRegistry
        args = cmd_args.parse(flags + (["--use-cpu", "all"] if device_kind == "cpu" else []), env={})
        config = devices.from_args(args)
        devices.use(config)
        device = config.device
        reg = ModelRegistry([cache], cache / "no-vae", HashCache(cache / "hashes.json"), hashing=False)
        manager = ModelManager(reg, config, cache / "tok", options=ModelOptions.from_args(args))
        model = manager.load(reg.find_checkpoint("sd15.safetensors"))
        out["dtype"] = str(config.dtype).removeprefix("torch.")
        out["attention"] = model.extra.get("attention")

        def generate(side: int, seed: int):
            processing.process(model, GenerationParams(prompt=PROMPT, steps=steps, width=side, height=side,
                                                       cfg_scale=7.0, seed=seed, sampler_name="Euler"))
    else:
        from diffusers import StableDiffusionPipeline
        device = torch.device(device_kind)
        dtype = torch.float16 if device_kind == "cuda" else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(str(cache / "diffusers"), torch_dtype=dtype,
                                                       local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False).to(device)
        pipe.set_progress_bar_config(disable=True)
        out["dtype"] = str(dtype).removeprefix("torch.")

        def generate(side: int, seed: int):
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.0, height=side, width=side,
                 generator=torch.Generator(device).manual_seed(seed))
    _sync(device)
    out["load_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["resident_gib"] = torch.cuda.memory_allocated(device) / 2 ** 30
    t0 = time.perf_counter()
    generate(size, 0)                      # warm-up: kernels chosen, caches filled (and compiled with --compile)
    _sync(device)
    out["first_image_s"] = time.perf_counter() - t0
    times = []
    for rep in range(reps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        generate(size, rep + 1)
        _sync(device)
        times.append(time.perf_counter() - t0)
    out["image_s"] = min(times)
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        out["peak_rss_gib"] = peak_rss_mib() / 1024
    return out


def table(results: list[dict], reference: str = "diffusers-fp16") -> str:
    base = next((r["image_s"] for r in results if r["config"] == reference and "image_s" in r), None)
    mem = "peak VRAM GiB" if any("peak_gib" in r for r in results) else "peak RSS GiB"
    lines = [f"{'configuration':<34} {'s/image':>8} {'vs diffusers':>13} {mem:>14} {'resident GiB':>13} "
             f"{'first image s':>14}"]
    for r in results:
        if "image_s" not in r:
            lines.append(f"{r['config']:<34} {('skipped: ' + r['skipped']) if 'skipped' in r else 'FAILED: ' + r['error']}")
            continue
        ratio = f"{base / r['image_s']:.2f}x" if base else "-"
        peak = r.get("peak_gib", r.get("peak_rss_gib", 0.0))
        resident = f"{r['resident_gib']:.2f}" if "resident_gib" in r else "-"
        lines.append(f"{r['config']:<34} {r['image_s']:>8.3f} {ratio:>13} {peak:>14.2f} {resident:>13} "
                     f"{r['first_image_s']:>14.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--shapes", choices=["sd15", "tiny"], default=None,
                    help="sd15: full SD 1.5 shapes (default on cuda); tiny: the tests' tiny model (default on cpu)")
    ap.add_argument("--size", type=int, default=None, help="image side (default 512; tiny: 32)")
    ap.add_argument("--steps", type=int, default=None, help="Euler steps (default 20 on cuda, 2 on cpu)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also measure --compile (minutes of compiling)")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), help="run only these configurations")
    ap.add_argument("--cache", type=Path, default=None, help="where the random weights are kept")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per configuration")
    ap.add_argument("--config", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    shapes = a.shapes or ("sd15" if a.device == "cuda" else "tiny")
    size = a.size or (32 if shapes == "tiny" else 512)
    steps = a.steps or (20 if a.device == "cuda" else 2)
    cache = a.cache or Path(os.environ.get("BENCH_CACHE", "/tmp/sd-bench")) / ("" if shapes == "sd15" else "tiny")
    if a.config:   # a child: one configuration, its result as the last line of stdout
        print(json.dumps(run_config(a.config, a.device, cache, size, steps, a.reps)))
        return 0
    if a.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA device here; use --device cpu for the smoke run",
                  file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    build_weights(shapes, cache)
    print(f"weights ready in {time.perf_counter() - t0:.1f} s ({shapes} shapes, {cache})", flush=True)
    names = a.only or [n for n in CONFIGS if n != "ours --compile" or a.compile]
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--device", a.device, "--shapes", shapes, "--size", str(size), "--steps",
               str(steps), "--reps", str(a.reps), "--cache", str(cache), "--config", name]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=a.timeout)
            if proc.returncode:
                result = {"config": name, "error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
            else:
                result = json.loads(proc.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            result = {"config": name, "error": f"over {a.timeout} s"}
        results.append(result)
        print(f"{name}: {json.dumps(result)}", flush=True)
    gpu = next((r["gpu"] for r in results if "gpu" in r), a.device)
    print(f"\n{shapes} shapes, random weights, {size}x{size}, Euler {steps} steps, CFG 7, batch 1, best of {a.reps} "
          f"after a warm-up image, on {gpu}")
    print(table(results))
    if a.json:
        a.json.write_text(json.dumps({"device": gpu, "shapes": shapes, "size": size, "steps": steps,
                                      "results": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
