"""One ControlNet unit per sampling step: our engine against diffusers' StableDiffusionControlNetPipeline on the
same weights (issue #18: ratio <= 1.05 per step).

The bundled demo model (models/Stable-diffusion/demo) and its canny ControlNet (models/ControlNet), loaded once in
one process; DPM++ 2M (DPMSolverMultistepScheduler, Karras: the scheduler our "DPM++ 2M" / "Automatic" builds, the
same class and config on both sides), CFG 7, batch 1 (UNet and ControlNet batch 2), weight 1, Balanced. Variants:

* diffusers+cn  StableDiffusionControlNetPipeline (controlnet_conditioning_scale 1, the control image given);
* ours+cn       modules.processing.process with one unit {"module": "none", "model": "control_demo-shapes_canny",
                "image": <edges>} made ready by ControlNetService.prepare/attach, as the built-in extension does;
* diffusers     StableDiffusionPipeline, same components, no ControlNet (context);
* ours          process without a unit (context).

A step = the interval between two consecutive step-end timestamps (diffusers: callback_on_step_end; ours: an
after_step hook; both right after scheduler.step). Measurements per size:

* interleaved: one warm-up run per variant, then whole runs of all four variants in rotating order; per variant
  the median over all step intervals; ratio = ours / diffusers of the medians, and per repetition (paired);
* lockstep: the diffusers pipeline runs in a second thread and the two sides take turns step by step (semaphores
  in the two step-end callbacks), so step i of each side runs right after the other's and load changes on a shared
  machine hit both alike; median of the per-step ratios. Never both at once: the waiting side is blocked.
* peak RSS: each variant alone in a fresh process (load, one run at each size).

    venv/bin/python bench/bench_controlnet_step.py [--sizes 64 128] [--steps 20 10] [--reps 8 4] [--lockstep 3 2]
        [--threads 2] [--no-rss]              # defaults: about 3 min on 2 cores
    venv/bin/python bench/bench_controlnet_step.py --profile 128   # cProfile of ours+cn at 128x128, networks canned
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CFG = 7.0
SAMPLER, SCHEDULE = "DPM++ 2M", "Automatic"
CN_MODEL = "control_demo-shapes_canny"
VARIANTS = ("diffusers+cn", "ours+cn", "diffusers", "ours")
PAIRS = (("ours+cn", "diffusers+cn"), ("ours", "diffusers"))


def load_demo():
    from modules.devices import DeviceConfig
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.paths import DEMO_CHECKPOINT

    cache = Path(os.environ.get("BENCH_CACHE", "/tmp/sd-bench"))
    reg = ModelRegistry([DEMO_CHECKPOINT.parent], cache / "no-vae", HashCache(cache / "hashes.json"), hashing=False)
    device = DeviceConfig(torch.device("cpu"), torch.float32, torch.float32)
    return ModelManager(reg, device, ROOT / "cache" / "clip-tokenizer").load(reg.find_checkpoint(DEMO_CHECKPOINT.name))


def control_case(size: int) -> tuple[str, np.ndarray]:
    """A held-out caption and the canny edges of a scene with its object on the other side (the demo ControlNet's
    test case), as an RGB uint8 image of size x size (nearest-neighbour enlarged: edges stay 0/255)."""
    import cv2

    from tools.demo_model import controlnet as demo_cn
    from tools.demo_model import data
    caption, scene = demo_cn.steering_cases(1)[0]
    edges = demo_cn.canny(data.render(scene)[None])[0]
    if edges.shape[0] != size:
        edges = cv2.resize(edges, (size, size), interpolation=cv2.INTER_NEAREST)
    return caption, np.ascontiguousarray(np.stack([edges] * 3, axis=-1))


class Bench:
    def __init__(self, model, size: int, steps: int, annotators: Path):
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline
        from PIL import Image

        from modules import processing
        from modules.controlnet.service import ControlNetService, Folders
        from modules.controlnet.units import parse_unit
        from modules.engine import samplers
        from modules.engine.hooks import Hooks
        from modules.engine.params import GenerationParams
        self.model, self.size, self.steps = model, size, steps
        self.processing, self.GenerationParams = processing, GenerationParams
        self.prompt, edges = control_case(size)
        self.stamps: list[float] = []
        self.step_end = None                # lockstep: called at each of our step ends
        self.hooks = Hooks()
        self.hooks.add("after_step", self._stamp)

        # ours: the unit as the API sends it, made ready the way the built-in extension does
        folders = Folders(models=[ROOT / "models" / "ControlNet"], annotator_download=annotators)
        self.service = ControlNetService(lambda: folders)
        self.unit = parse_unit({"enabled": True, "module": "none", "model": CN_MODEL, "image": edges}, 0)

        # diffusers: the same components; the ControlNet is the module our service loaded (same weights, same object)
        spec, schedule = samplers.resolve(SAMPLER, SCHEDULE)
        config = model.scheduler_config()
        parts = dict(vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0],
                     unet=model.unet, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        self.controlnet = self._our_controlnet()
        self.pipe_cn = StableDiffusionControlNetPipeline(
            controlnet=self.controlnet, scheduler=samplers.make_scheduler(spec, schedule, config), **parts)
        self.pipe = StableDiffusionPipeline(scheduler=samplers.make_scheduler(spec, schedule, config), **parts)
        for pipe in (self.pipe_cn, self.pipe):
            pipe.set_progress_bar_config(disable=True)
        self.control_image = Image.fromarray(edges)

    def _stamp(self, _args=None):
        self.stamps.append(time.perf_counter())
        if self.step_end is not None:
            self.step_end()

    def _setup(self, p):
        self.service.attach(p, self.service.prepare(p, [self.unit]))

    def _our_controlnet(self):
        """The diffusers ControlNetModel inside the model our service loads for the unit (what ours+cn runs)."""
        from types import SimpleNamespace
        p = SimpleNamespace(sd_model=self.model, all_seeds=[0], all_subseeds=[0], width=self.size, height=self.size,
                            init_images=None)
        return diffusers_module(self.service.prepare(p, [self.unit])[0].model)

    def _params(self, seed: int, steps: int | None = None):
        return self.GenerationParams(prompt=self.prompt, negative_prompt="", steps=steps or self.steps,
                                     width=self.size, height=self.size, cfg_scale=CFG, seed=seed,
                                     sampler_name=SAMPLER, scheduler=SCHEDULE, do_not_save_samples=True,
                                     do_not_save_grid=True)

    def run(self, variant: str, seed: int) -> list[float]:
        """Step intervals (s) of one whole run of `variant`."""
        self.stamps = []
        if variant.startswith("ours"):
            self.processing.process(self.model, self._params(seed), hooks=self.hooks,
                                    setup=self._setup if variant == "ours+cn" else None)
        else:
            self._diffusers(variant, seed, self._diffusers_step_end)
        assert len(self.stamps) == self.steps, (variant, len(self.stamps))
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    def _diffusers_step_end(self, pipe, i, t, kwargs):
        self._stamp()
        return {}

    def _diffusers(self, variant: str, seed: int, callback) -> None:
        common = dict(prompt=self.prompt, num_inference_steps=self.steps, guidance_scale=CFG, height=self.size,
                      width=self.size, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                      callback_on_step_end=callback)
        if variant == "diffusers+cn":
            self.pipe_cn(image=self.control_image, controlnet_conditioning_scale=1.0, **common)
        else:
            self.pipe(**common)

    def lockstep(self, ours: str, theirs: str, seed: int) -> list[tuple[float, float]]:
        """(our step i, their step i) for i >= 1 of one run each, taking turns step by step: the diffusers pipeline
        runs in a thread that blocks in its step-end callback until our next step has ended, and vice versa."""
        to_ours, to_theirs = threading.Semaphore(0), threading.Semaphore(0)
        theirs_in, theirs_out, ours_out = [], [], []
        failure = []

        def their_step_end(pipe, i, t, kwargs):
            theirs_in.append(time.perf_counter())
            to_ours.release()
            if i < self.steps - 1:          # after their last step they finish (VAE) while we wait for the thread
                to_theirs.acquire()
            theirs_out.append(time.perf_counter())
            return {}

        def their_run():
            try:
                self._diffusers(theirs, seed, their_step_end)
            except BaseException as exc:     # noqa: BLE001 (re-raised in the main thread)
                failure.append(exc)
                to_ours.release()

        def our_step_end():
            if len(self.stamps) < self.steps:
                to_theirs.release()
                to_ours.acquire()
            else:
                thread.join()
            ours_out.append(time.perf_counter())

        thread = threading.Thread(target=their_run, name="diffusers-lockstep")
        self.stamps, self.step_end = [], our_step_end
        try:
            thread.start()
            to_ours.acquire()                   # their step 0 is done
            if failure:
                raise failure[0]
            self.processing.process(self.model, self._params(seed), hooks=self.hooks,
                                    setup=self._setup if ours == "ours+cn" else None)
        finally:
            self.step_end = None
            to_theirs.release()
            thread.join()
        if failure:
            raise failure[0]
        our_steps = [b - a for a, b in zip(ours_out, self.stamps[1:])]
        their_steps = [b - a for a, b in zip(theirs_out, theirs_in[1:])]
        return list(zip(our_steps, their_steps))


class Canned:
    """UNet, ControlNet and VAE decode replaced by precomputed outputs of the right shapes (on the module instances,
    so both sides get them): what is left per step is each side's own work around the networks."""

    def __init__(self, bench: Bench):
        model, size = bench.model, bench.size
        self.unet, self.cn, self.vae = model.unet, bench.controlnet, model.vae
        f = model.vae_scale_factor
        x = torch.randn(2, model.unet.config.in_channels, size // f, size // f)
        context = torch.randn(2, 77, model.unet.config.cross_attention_dim)
        hint = torch.rand(2, 3, size, size)
        with torch.no_grad():
            self.residuals = self.cn(x, 500, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
            self.output = self.unet(x, 500, encoder_hidden_states=context, return_dict=False)
        self.image = torch.zeros(1, 3, size, size)

    def __enter__(self):
        residuals, output, image = self.residuals, self.output, self.image

        class Decoded(tuple):              # (image,) for return_dict=False, .sample otherwise
            sample = image
        decoded = Decoded((image,))
        self.cn.forward = lambda *args, **kwargs: residuals
        self.unet.forward = lambda *args, **kwargs: output
        self.vae.decode = lambda *args, **kwargs: decoded
        return self

    def __exit__(self, *exc):
        del self.cn.forward, self.unet.forward, self.vae.decode


def controlnet_ab(bench: Bench, calls: int) -> dict[str, list[float]]:
    """The ControlNet call alone with the inputs each side gives it (captured at the first step), alternating call
    by call: whether the call itself differs (our hint is one row expanded to the batch, the pipeline's a copy)."""
    cn, captured = bench.controlnet, {}
    forward = cn.forward

    def spy(*args, **kwargs):
        captured.setdefault(side, (args, kwargs))
        return forward(*args, **kwargs)
    cn.forward = spy
    try:
        for side, variant in (("ours", "ours+cn"), ("diffusers", "diffusers+cn")):
            bench.run(variant, 0)
    finally:
        del cn.forward
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    with torch.no_grad():
        for i in range(calls + 1):
            for side in ("ours", "diffusers") if i % 2 else ("diffusers", "ours"):
                args, kwargs = captured[side]
                start = time.perf_counter()
                cn(*args, **kwargs)
                if i:                                               # the first pair warms up
                    times[side].append(time.perf_counter() - start)
    return times


def diffusers_module(control_model):
    """The torch module our ControlModel runs (a diffusers ControlNetModel)."""
    for name in ("module", "net", "controlnet", "model"):
        m = getattr(control_model, name, None)
        if isinstance(m, torch.nn.Module):
            return m
    raise AttributeError(f"no ControlNetModel found on {type(control_model).__name__}: {sorted(vars(control_model))}")


def interleaved(bench: Bench, reps: int, seed: int = 1) -> dict[str, list[list[float]]]:
    """One warm-up run per variant, then `reps` runs of each, the order rotating every repetition."""
    for variant in VARIANTS:
        bench.run(variant, 0)
    per_rep: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    for rep in range(reps):
        k = rep % len(VARIANTS)
        for variant in VARIANTS[k:] + VARIANTS[:k]:
            per_rep[variant].append(bench.run(variant, seed + rep))
    return per_rep


def measure(model, size: int, steps: int, reps: int, lock_runs: int, loop_reps: int, cn_calls: int) -> dict:
    with tempfile.TemporaryDirectory() as annotators:
        bench = Bench(model, size, steps, Path(annotators))
        with Canned(bench):
            loop = interleaved(bench, loop_reps)
        ab = controlnet_ab(bench, cn_calls)
        per_rep = interleaved(bench, reps)
        locks = {}
        for ours, theirs in PAIRS:
            pairs = []
            for run in range(lock_runs):
                pairs += bench.lockstep(ours, theirs, 100 + run)
            locks[ours] = pairs
    out = {"size": size, "steps": steps, "reps": reps, "loop_reps": loop_reps, "variants": {}, "pairs": {},
           "cn_ab": {side: statistics.median(t) for side, t in ab.items()} | {
               "paired": statistics.median(a / b for a, b in zip(ab["ours"], ab["diffusers"])), "calls": cn_calls}}
    for v in VARIANTS:
        steps_all = [s for r in per_rep[v] for s in r]
        out["variants"][v] = {"median": statistics.median(steps_all), "min": min(steps_all),
                              "rep_medians": [statistics.median(r) for r in per_rep[v]],
                              "loop": statistics.median(s for r in loop[v] for s in r)}
    for ours, theirs in PAIRS:
        o, d = out["variants"][ours], out["variants"][theirs]
        paired = [a / b for a, b in zip(o["rep_medians"], d["rep_medians"])]
        ratios = [a / b for a, b in locks[ours]] if locks[ours] else [float("nan")]
        out["pairs"][ours] = {
            "ratio": o["median"] / d["median"], "ratio_min": o["min"] / d["min"],
            "paired": statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3,
            "lockstep": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
            "lock_ours": statistics.median(a for a, _ in locks[ours]) if locks[ours] else float("nan"),
            "lock_theirs": statistics.median(b for _, b in locks[ours]) if locks[ours] else float("nan"),
            "lock_pairs": len(locks[ours]),
            "loop_extra": o["loop"] - d["loop"]}          # s per step ours does beyond the pipeline, networks canned
    return out


def report(results: list[dict], threads: int) -> None:
    print(f"\nper step, demo model + canny ControlNet, {SAMPLER} ({SCHEDULE}), CFG {CFG}, batch 1, fp32, {threads} "
          f"thread(s); ms = median over all step intervals (min in brackets)")
    print("| size | steps × runs | diffusers+cn ms | ours+cn ms | ratio (of minima) | paired [quartiles] "
          "| lockstep ratio [quartiles] (pairs) | diffusers ms | ours ms | ratio | lockstep ratio | "
          "ControlNet share (diffusers) |")
    print("|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|")
    for r in results:
        v, p = r["variants"], r["pairs"]
        cn, plain = p["ours+cn"], p["ours"]

        def q(x):
            return f"{x[1]:.3f} [{x[0]:.3f}, {x[2]:.3f}]"
        share = 1 - v["diffusers"]["median"] / v["diffusers+cn"]["median"]
        print(f"| {r['size']}×{r['size']} | {r['steps']} × {r['reps']} | {v['diffusers+cn']['median'] * 1e3:.1f} "
              f"({v['diffusers+cn']['min'] * 1e3:.1f}) | {v['ours+cn']['median'] * 1e3:.1f} "
              f"({v['ours+cn']['min'] * 1e3:.1f}) | **{cn['ratio']:.3f}** ({cn['ratio_min']:.3f}) | "
              f"{q(cn['paired'])} | {q(cn['lockstep'])} ({cn['lock_pairs']}) | "
              f"{v['diffusers']['median'] * 1e3:.1f} | {v['ours']['median'] * 1e3:.1f} | {plain['ratio']:.3f} | "
              f"{q(plain['lockstep'])} | {share:.0%} |")
    print("\nnetworks canned (UNet, ControlNet, VAE decode return precomputed outputs): each side's own work per step; "
          "extra = ours - diffusers, and as a share of the real diffusers step")
    print("| size | runs | variant | loop ms/step | extra ms/step | extra / real step |")
    print("|---:|---:|---|---:|---:|---:|")
    for r in results:
        for ours, theirs in PAIRS:
            v, p = r["variants"], r["pairs"][ours]
            for name in (theirs, ours):
                extra = f"{p['loop_extra'] * 1e3:+.3f} | {p['loop_extra'] / v[theirs]['median']:+.2%}" \
                    if name == ours else "— | —"
                print(f"| {r['size']}×{r['size']} | {r['loop_reps']} | {name} | {v[name]['loop'] * 1e3:.3f} | {extra} |")
    for r in results:
        ab = r["cn_ab"]
        print(f"{r['size']}×{r['size']}: the ControlNet call alone with each side's inputs, {ab['calls']} alternating "
              f"pairs: ours {ab['ours'] * 1e3:.1f} ms, diffusers {ab['diffusers'] * 1e3:.1f} ms (medians), "
              f"paired ratio {ab['paired']:.3f}")


def rss_side(variant: str, sizes: list[int], threads: int) -> dict:
    torch.set_num_threads(threads)
    model = load_demo()
    with tempfile.TemporaryDirectory() as annotators:
        for size in sizes:
            bench = Bench(model, size, 4, Path(annotators))
            bench.run(variant, 0)
            del bench
    return {"variant": variant, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def profile(size: int, steps: int, runs: int) -> None:
    import cProfile
    import pstats
    model = load_demo()
    with tempfile.TemporaryDirectory() as annotators:
        bench = Bench(model, size, steps, Path(annotators))
        bench.run("ours+cn", 0)
        prof = cProfile.Profile()
        prof.enable()
        for i in range(runs):
            bench.run("ours+cn", 1 + i)
        prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("controlnet|denoiser|sampling|hooks", 25)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 10], help="steps per run, one per size")
    ap.add_argument("--reps", type=int, nargs="+", default=[8, 4], help="timed runs per variant, one per size")
    ap.add_argument("--lockstep", type=int, nargs="+", default=[3, 2], help="lockstep runs per pair, one per size")
    ap.add_argument("--loop-reps", type=int, default=10, help="runs per variant with the networks canned")
    ap.add_argument("--cn-calls", type=int, nargs="+", default=[20, 6],
                    help="alternating ControlNet call pairs, one per size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    ap.add_argument("--profile", type=int, metavar="SIZE", help="cProfile ours+cn at SIZE instead of timing")
    ap.add_argument("--rss-side", choices=VARIANTS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.rss_side:
        print(json.dumps(rss_side(a.rss_side, a.sizes, a.threads)))
        return
    if a.profile:
        profile(a.profile, a.steps[0], a.reps[0])
        return

    def per_size(values: list[int]) -> list[int]:
        return values + [values[-1]] * (len(a.sizes) - len(values))
    t0 = time.perf_counter()
    model = load_demo()
    results = []
    for size, steps, reps, lock, calls in zip(a.sizes, per_size(a.steps), per_size(a.reps), per_size(a.lockstep),
                                              per_size(a.cn_calls)):
        results.append(measure(model, size, steps, reps, lock, a.loop_reps, calls))
        report(results[-1:], a.threads)
    print(f"\nmeasured in {time.perf_counter() - t0:.0f} s")
    report(results, a.threads)
    if not a.no_rss:
        rss = {}
        for variant in VARIANTS:
            proc = subprocess.run([sys.executable, __file__, "--rss-side", variant, "--threads", str(a.threads),
                                   "--sizes", *map(str, a.sizes)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            rss[variant] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        print("peak RSS (each variant alone in a fresh process, one run at each size): " +
              ", ".join(f"{v} {m:.0f} MiB" for v, m in rss.items()))


if __name__ == "__main__":
    main()
