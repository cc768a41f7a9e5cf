"""Per-step engine overhead: our sampling loop (modules/engine/sampling.py + denoiser.py, run through
modules.processing.process) against a plain diffusers denoising loop on the same loaded UNet, in the same process.

Both sides use the same UNet object, the same scheduler class and config (Euler = EulerDiscreteScheduler, linspace
spacing), the same latent shape, CFG 7 with cond and uncond in one UNet batch of 2, and the same UNet precision.
The plain loop is StableDiffusionPipeline.__call__'s loop written out (cat -> scale_model_input -> UNet -> chunk ->
guidance -> scheduler.step), with its latents in the UNet's dtype as the pipeline keeps them; its prompt embeddings
are encoded once before. Variants, interleaved run by run (the order rotates every repetition) after one warm-up
run each:

* diffusers   the plain loop;
* ours        processing.process(model, params) with only the timing `after_step` hook;
* ours+hooks  the same with no-op `cfg_denoiser`, `before_unet` and `after_step` hooks added (what the seams cost
              when something is registered: their parameter objects are built and the hooks called every step).

Per-step time = interval between consecutive after-step timestamps (steps - 1 intervals per run; the same point on
both sides: right after scheduler.step). Four measurements per model and precision:

* real: the UNet runs. Median over all intervals of all repetitions (and the minimum), overhead = ours / diffusers - 1
  of those, and the per-repetition paired overheads (median and quartiles). CPU time (all threads) is printed too.
* loop: the UNet forward returns a precomputed output (and the VAE decode zeros), so a step costs only the loop's own
  work (scheduler, CFG, hooks, bookkeeping); many quick runs. `loop extra` = ours minus the plain loop, per step,
  also as a share of the real diffusers step: the overhead figure that other processes' load cannot blur.
* lockstep: the UNet runs, and one step of the plain loop is executed inside each of our after_step hook calls, so
  step i of each side runs right after the other's: per-step pairs that load changes hit alike (the figure to
  quote on a shared machine; the interleaved whole runs ("real") are what the issue asks for, and noisier).
* UNet A/B: the UNet call alone with the inputs each side builds (captured at step 0), alternating call by call:
  whether the call itself differs (dtype, layout, timestep type); it should not.

Models: `demo` = the bundled demo model (models/Stable-diffusion/demo) at its native 64x64 (16x16 latents);
`sd15` = full SD 1.5 shapes (UNet 860M) with random weights, the LDM file bench_txt2img.py writes to /tmp/sd-bench
(built on first use, ~8 GB), at --sd15-size (128 -> 16x16 latents, 256 -> 32x32).

    venv/bin/python bench/bench_step_overhead.py [--models demo sd15] [--precisions fp32 bf16] [--steps 8]
        [--reps 20] [--sd15-reps 3] [--loop-reps 20] [--unet-calls 20] [--sd15-unet-calls 6] [--lockstep 10]
        [--sd15-lockstep 3] [--sd15-size 128] [--threads 2]        # defaults: about 11 min on 2 cores
    venv/bin/python bench/bench_step_overhead.py --profile demo   # cProfile of our loop, UNet canned
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

PROMPT = "a large red circle on the left, blue background"
CFG = 7.0
VARIANTS = ("diffusers", "ours", "ours+hooks")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load(model_name: str, precision: str):
    from modules.devices import DeviceConfig
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.paths import DEMO_CHECKPOINT

    from bench.bench_txt2img import CACHE, build_weights
    if model_name == "demo":
        ckpt, tok = DEMO_CHECKPOINT, ROOT / "cache" / "clip-tokenizer"
    else:
        build_weights()
        ckpt, tok = CACHE / "sd15.safetensors", CACHE / "tok"
    reg = ModelRegistry([ckpt.parent], CACHE / "no-vae", HashCache(CACHE / "hashes.json"), hashing=False)
    device = DeviceConfig(torch.device("cpu"), DTYPES[precision], torch.float32)
    return ModelManager(reg, device, tok).load(reg.find_checkpoint(ckpt.name))


class Bench:
    def __init__(self, model, size: int, steps: int):
        from diffusers import EulerDiscreteScheduler

        from modules import processing
        from modules.engine.hooks import Hooks
        from modules.engine.params import GenerationParams
        self.model, self.size, self.steps = model, size, steps
        self.processing, self.GenerationParams = processing, GenerationParams
        self.stamps: list[tuple[float, float]] = []
        self.between = None                 # lockstep: runs one plain-loop step inside our after_step hook
        self.exits: list[float] = []

        def stamp(_args=None):
            self.stamps.append((time.perf_counter(), time.process_time()))
            if self.between is not None:
                self.between()
                self.exits.append(time.perf_counter())
        self.stamp = stamp

        # ours: only the timing hook; ours+hooks: plus one no-op hook at cfg_denoiser, before_unet, after_step
        self.hooks_plain = Hooks()
        self.hooks_plain.add("after_step", stamp)
        self.hooks_noop = Hooks()
        self.hooks_noop.add("cfg_denoiser", lambda params: None)
        self.hooks_noop.add("before_unet", lambda call: None)
        self.hooks_noop.add("after_step", lambda args: None)
        self.hooks_noop.add("after_step", stamp)

        # diffusers: the same scheduler class and config as our "Euler" with the "Uniform" schedule
        self.sched_config = {**model.scheduler_config(), "timestep_spacing": "linspace"}
        self.sched_cls = EulerDiscreteScheduler
        tok, enc = model.tokenizers[0], model.text_encoders[0]
        with torch.no_grad():
            ids = [tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids for text in ("", PROMPT)]
            self.embeds = torch.cat([enc(i)[0] for i in ids])     # [uncond, cond], as the pipeline orders them
        self.latent_shape = (1, model.unet.config.in_channels, size // model.vae_scale_factor,
                             size // model.vae_scale_factor)

    def run(self, variant: str, seed: int) -> list[tuple[float, float]]:
        self.stamps = []
        if variant == "diffusers":
            self._diffusers(seed)
        else:
            params = self.GenerationParams(prompt=PROMPT, negative_prompt="", steps=self.steps, width=self.size,
                                           height=self.size, cfg_scale=CFG, seed=seed, sampler_name="Euler",
                                           scheduler="Uniform", do_not_save_samples=True, do_not_save_grid=True)
            self.processing.process(self.model, params,
                                    hooks=self.hooks_plain if variant == "ours" else self.hooks_noop)
        assert len(self.stamps) == self.steps, (variant, len(self.stamps))
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.stamps, self.stamps[1:])]

    def _diffusers(self, seed: int) -> None:
        for _latents in self.diffusers_steps(seed):
            self.stamp()

    def diffusers_steps(self, seed: int):
        """The plain loop, one step per next()."""
        unet = self.model.unet
        scheduler = self.sched_cls.from_config(self.sched_config)
        scheduler.set_timesteps(self.steps, device=self.model.device)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn(self.latent_shape, generator=generator, dtype=unet.dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            with torch.no_grad():
                x = torch.cat([latents] * 2)
                x = scheduler.scale_model_input(x, t)
                noise = unet(x, t, encoder_hidden_states=self.embeds, return_dict=False)[0]
                uncond, cond = noise.chunk(2)
                noise = uncond + CFG * (cond - uncond)
                latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            yield latents

    def lockstep(self, variant: str, runs: int) -> list[tuple[float, float]]:
        """Our run with one plain-loop step executed inside each after_step hook call: (our step i, plain step i)
        pairs a few hundred ms apart at most, so load changes hit both alike. Our step i = from the end of the
        hook call of step i-1 to the start of that of step i; the plain step is timed around next(). The first run
        warms up; step 0 (prompt encoding in ours) is left out."""
        pairs = []
        for run in range(runs + 1):
            steps, plain = self.diffusers_steps(run), []

            def between():
                start = time.perf_counter()
                next(steps)
                plain.append(time.perf_counter() - start)
            self.between, self.exits = between, []
            try:
                self.run(variant, run)
            finally:
                self.between = None
            ours = [entry - exit_ for (entry, _), exit_ in zip(self.stamps[1:], self.exits)]
            if run:
                pairs += list(zip(ours, plain[1:]))
        return pairs


class Canned:
    """Replaces the UNet forward by a precomputed output of the right shape and dtype (on the module instance, so
    both sides get it) and the VAE decode by zeros: what is left per step is the loop's own work."""

    def __init__(self, bench: Bench):
        model = bench.model
        self.unet, self.vae = model.unet, model.vae
        with torch.no_grad():
            x = torch.randn(2, *bench.latent_shape[1:], dtype=model.unet.dtype)
            self.output = self.unet(x, 500, encoder_hidden_states=bench.embeds, return_dict=False)
        self.image = torch.zeros(1, 3, bench.size, bench.size, dtype=model.vae.dtype)

    def __enter__(self):
        output, image = self.output, self.image

        class Decoded:
            sample = image
        self.unet.forward = lambda *args, **kwargs: output
        self.vae.decode = lambda *args, **kwargs: Decoded
        return self

    def __exit__(self, *exc):
        del self.unet.forward, self.vae.decode


def unet_ab(bench: Bench, calls: int) -> dict[str, list[float]]:
    """The UNet call alone with the inputs each side builds (captured at step 0: ours at before_unet after its dtype
    casts, the plain loop at the UNet's forward), alternating call by call; shows whether the call itself differs."""
    model, captured = bench.model, {}
    unet, dtype = model.unet, model.dtype

    def grab(call):
        captured.setdefault("ours", (call.x.to(dtype), call.timestep, call.context.to(dtype)))
    bench.hooks_plain.add("before_unet", grab)
    try:
        bench.run("ours", 0)
    finally:
        bench.hooks_plain.remove("before_unet", grab)
    forward = unet.forward

    def spy(x, t, encoder_hidden_states=None, **kwargs):
        captured.setdefault("diffusers", (x, t, encoder_hidden_states))
        return forward(x, t, encoder_hidden_states=encoder_hidden_states, **kwargs)
    unet.forward = spy
    try:
        bench.run("diffusers", 0)
    finally:
        del unet.forward
    for (xa, ta, ca), (xb, tb, cb) in [(captured["ours"], captured["diffusers"])]:
        assert (xa.shape, xa.dtype, xa.stride(), ca.shape, ca.dtype, ca.stride(), ta.dtype) == \
               (xb.shape, xb.dtype, xb.stride(), cb.shape, cb.dtype, cb.stride(), tb.dtype)
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    with torch.no_grad():
        for i in range(calls + 1):
            for side in ("ours", "diffusers") if i % 2 else ("diffusers", "ours"):
                x, t, context = captured[side]
                start = time.perf_counter()
                unet(x, t, encoder_hidden_states=context, return_dict=False)
                if i:                                               # the first pair warms up
                    times[side].append(time.perf_counter() - start)
    return times


def interleaved(bench: Bench, reps: int) -> dict[str, list[list[tuple[float, float]]]]:
    """One warm-up run per variant, then `reps` timed runs each, the order rotating every repetition."""
    for variant in VARIANTS:
        bench.run(variant, 0)
    per_rep: dict[str, list[list[tuple[float, float]]]] = {v: [] for v in VARIANTS}
    for rep in range(reps):
        for variant in VARIANTS[rep % 3:] + VARIANTS[:rep % 3]:
            per_rep[variant].append(bench.run(variant, 1 + rep))
    return per_rep


def measure(model_name: str, precision: str, size: int, steps: int, reps: int, loop_reps: int,
            unet_calls: int, lock_runs: int) -> dict:
    t0 = time.perf_counter()
    model = load(model_name, precision)
    size = size or model.spec.native_resolution
    bench = Bench(model, size, steps)
    load_s = time.perf_counter() - t0
    out = {"model": model_name, "precision": precision, "size": size, "steps": steps, "reps": reps,
           "loop_reps": loop_reps, "load_s": load_s, "variants": {v: {} for v in VARIANTS}}
    # 1. the loop's own cost: UNet forward and VAE decode canned, many quick runs
    with Canned(bench):
        loop = interleaved(bench, loop_reps)
    for variant in VARIANTS:
        out["variants"][variant]["loop"] = statistics.median(w for r in loop[variant] for w, _ in r)
    # 2. the UNet call alone with each side's inputs
    ab = unet_ab(bench, unet_calls)
    out["unet_ab"] = {"ours": statistics.median(ab["ours"]), "diffusers": statistics.median(ab["diffusers"]),
                      "paired": statistics.median(a / b - 1 for a, b in zip(ab["ours"], ab["diffusers"])),
                      "calls": unet_calls}
    # 3. real steps in lockstep: our step and the plain loop's step alternate within one run
    for variant in VARIANTS[1:]:
        pairs = bench.lockstep(variant, lock_runs)
        ratios = [a / b - 1 for a, b in pairs]
        out["variants"][variant]["lockstep"] = {
            "ours": statistics.median(a for a, _ in pairs), "diffusers": statistics.median(b for _, b in pairs),
            "paired": statistics.quantiles(ratios, n=4), "pairs": len(pairs)}
    # 4. real steps, whole runs interleaved
    real = interleaved(bench, reps)
    base_reps = [statistics.median(w for w, _ in r) for r in real["diffusers"]]
    for variant in VARIANTS:
        walls = [w for r in real[variant] for w, _ in r]
        rep_meds = [statistics.median(w for w, _ in r) for r in real[variant]]
        out["variants"][variant].update(
            wall=statistics.median(walls), wall_min=min(walls),
            cpu=statistics.median(c for r in real[variant] for _, c in r),
            paired=[m / b - 1 for m, b in zip(rep_meds, base_reps)])
    base = out["variants"]["diffusers"]
    for v in out["variants"].values():
        v["overhead"] = v["wall"] / base["wall"] - 1
        v["overhead_min"] = v["wall_min"] / base["wall_min"] - 1
        v["cpu_overhead"] = v["cpu"] / base["cpu"] - 1
        v["loop_extra"] = v["loop"] - base["loop"]                  # seconds per step more than the plain loop
        v["loop_overhead"] = v["loop_extra"] / base["wall"]         # ... as a share of the real diffusers step
    del bench, model
    gc.collect()
    return out


def report(results: list[dict], threads: int) -> None:
    print(f"\nper-step time, Euler, CFG {CFG} (UNet batch 2), batch 1, {threads} thread(s). Real: median over all "
          f"intervals (min in brackets); overhead = ours / diffusers - 1 of the medians (of the minima); paired = "
          f"per-repetition overheads, median [quartiles]. Loop: UNet and VAE canned, median ms/step; extra = more than "
          f"the plain loop, as a share of the real diffusers step.")
    print("| model | size | precision | variant | real ms/step (min) | overhead (of minima) | paired | CPU overhead "
          "| loop ms/step | loop extra ms | loop extra / step |")
    print("|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        for name, v in r["variants"].items():
            paired = sorted(v["paired"])
            if name == "diffusers":
                over = paired_s = cpu_over = extra = extra_share = "—"
            else:
                over = f"{v['overhead']:+.2%} ({v['overhead_min']:+.2%})"
                q1, q2, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
                paired_s = f"{q2:+.1%} [{q1:+.1%}, {q3:+.1%}]"
                cpu_over = f"{v['cpu_overhead']:+.2%}"
                extra, extra_share = f"{v['loop_extra'] * 1e3:+.3f}", f"{v['loop_overhead']:+.2%}"
            print(f"| {r['model']} | {r['size']} | {r['precision']} | {name} | {v['wall'] * 1e3:.1f} "
                  f"({v['wall_min'] * 1e3:.1f}) | {over} | {paired_s} | {cpu_over} | {v['loop'] * 1e3:.3f} | {extra} "
                  f"| {extra_share} |")
    print("\nlockstep (our step and the plain loop's step alternating within one run): median ms/step of each "
          "side, paired overhead ours / diffusers - 1 per step pair, median [quartiles]")
    print("| model | size | precision | variant | ours ms/step | diffusers ms/step | overhead (paired) | pairs |")
    print("|---|---:|---|---|---:|---:|---|---:|")
    for r in results:
        for name, v in r["variants"].items():
            if "lockstep" in v:
                ls = v["lockstep"]
                q1, q2, q3 = ls["paired"]
                print(f"| {r['model']} | {r['size']} | {r['precision']} | {name} | {ls['ours'] * 1e3:.1f} | "
                      f"{ls['diffusers'] * 1e3:.1f} | {q2:+.2%} [{q1:+.1%}, {q3:+.1%}] | {ls['pairs']} |")
    for r in results:
        ab = r["unet_ab"]
        print(f"{r['model']} {r['precision']}: UNet call alone with each side's inputs, {ab['calls']} alternating "
              f"pairs: ours {ab['ours'] * 1e3:.1f} ms, diffusers {ab['diffusers'] * 1e3:.1f} ms (medians), "
              f"paired {ab['paired']:+.2%}")
    for r in results:
        print(f"{r['model']} {r['precision']}: {r['steps']} steps; real {r['reps']}, loop {r['loop_reps']} runs per "
              f"variant; load + prompt encode {r['load_s']:.1f} s")


def profile(model_name: str, precision: str, size: int, steps: int, runs: int) -> None:
    """cProfile of our side (with the no-op hooks) with the UNet and the VAE decode canned, so only the engine's own
    work is left (prompt encoding at the first step is in it too)."""
    import cProfile
    import pstats
    model = load(model_name, precision)
    bench = Bench(model, size or model.spec.native_resolution, steps)
    with Canned(bench):
        bench.run("ours+hooks", 0)
        prof = cProfile.Profile()
        prof.enable()
        for i in range(runs):
            bench.run("ours+hooks", i)
        prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats("sampling|denoiser|conditioning|hooks", 25)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", choices=["demo", "sd15"], default=["demo", "sd15"])
    ap.add_argument("--precisions", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20, help="timed runs per variant (demo)")
    ap.add_argument("--sd15-reps", type=int, default=3, help="timed runs per variant (sd15)")
    ap.add_argument("--sd15-size", type=int, default=128)
    ap.add_argument("--loop-reps", type=int, default=20, help="runs per variant with the UNet canned")
    ap.add_argument("--unet-calls", type=int, default=20, help="alternating UNet call pairs (demo)")
    ap.add_argument("--sd15-unet-calls", type=int, default=6, help="alternating UNet call pairs (sd15)")
    ap.add_argument("--lockstep", type=int, default=10, help="lockstep runs per variant (demo)")
    ap.add_argument("--sd15-lockstep", type=int, default=3, help="lockstep runs per variant (sd15)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", choices=["demo", "sd15"], help="profile our loop instead of timing it")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.profile:
        profile(a.profile, a.precisions[0], a.sd15_size if a.profile == "sd15" else 0, a.steps, a.reps)
        return
    results = []
    for model_name in a.models:
        for precision in a.precisions:
            size = a.sd15_size if model_name == "sd15" else 0
            reps = a.sd15_reps if model_name == "sd15" else a.reps
            calls = a.sd15_unet_calls if model_name == "sd15" else a.unet_calls
            lock = a.sd15_lockstep if model_name == "sd15" else a.lockstep
            results.append(measure(model_name, precision, size, a.steps, reps, a.loop_reps, calls, lock))
            report(results[-1:], a.threads)
    report(results, a.threads)


if __name__ == "__main__":
    main()
