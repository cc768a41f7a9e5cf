"""One ControlNet unit per sampling step: our engine against diffusers' StableDiffusionControlNetPipeline on the
same weights (issue #18: ratio <= 1.05 per step).

The bundled demo model (models/Stable-diffusion/demo) and its canny ControlNet (models/ControlNet), loaded once in
one process; DPM++ 2M (DPMSolverMultistepScheduler, Karras: the scheduler our "DPM++ 2M" / "Automatic" builds, the
same class and config on both sides), CFG 7, batch 1 (UNet and ControlNet batch 2), weight 1, Balanced, fp32.
Variants:

* diffusers+cn  StableDiffusionControlNetPipeline (controlnet_conditioning_scale 1) with the ControlNetModel our
                service loaded (same object, same weights);
* ours+cn       modules.processing.process with one unit {"module": "none", "model": "control_demo-shapes_canny",
                "image": <edges>} made ready by ControlNetService.prepare/attach, as the built-in extension does;
* diffusers     StableDiffusionPipeline, same components, no ControlNet (context);
* ours          process without a unit (context).

A step = the interval between two consecutive step-end stamps (diffusers: callback_on_step_end; ours: an after_step
hook; both right after scheduler.step), in wall time and in CPU time of the thread that runs the side (with
--threads 1 that thread does all the work, so its CPU time is the step's compute, which other processes' load
barely changes; with more threads it is the calling thread's share). Measurements per size:

* interleaved: one warm-up run per variant, then whole runs of all four variants in rotating order; per variant
  the median over all step intervals; ratio = ours / diffusers of the medians;
* lockstep: one run of each side of a pair at once, taking turns step by step (one side in a second thread; each
  blocks on a semaphore in its step-end callback until the other has done its next step), so step i of each side
  runs right after the other's and load changes hit both alike; median [quartiles] of the per-step ratios. Never
  both at once: the waiting side is blocked. Which side goes first (in the thread) alternates run by run;
* call A/B: the ControlNet call and the UNet call alone with the inputs each side gives them, alternating;
* networks canned: UNet, ControlNet and VAE decode return precomputed outputs, so a step is only each side's own
  work around them (what our hook and loop add; the figure load cannot blur);
* peak RSS: each variant alone in a fresh process (load, one run at each size), of the process and of the runs.

    venv/bin/python bench/bench_controlnet_step.py [--sizes 64 128] [--steps 20 10] [--reps 6 3] [--lockstep 4 4]
        [--threads 2] [--no-rss]              # defaults: about 5 min on 2 quiet cores
    venv/bin/python bench/bench_controlnet_step.py --profile 64    # cProfile (networks canned) + operator counts
"""
from __future__ import annotations

import argparse
import json
import os
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
from peak_rss import status_mib  # noqa: E402  (bench/ is on sys.path when run as a script)

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


def stamp() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def intervals(ends: list[tuple[float, float]], starts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, cpu) of each step from the previous step's end (or resumption) to this step's end."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts, ends)]


class Bench:
    def __init__(self, model, size: int, steps: int, annotators: Path, controlnet=None):
        """controlnet: the ControlNetModel for the diffusers pipeline; None = the one our service loads."""
        from diffusers import StableDiffusionPipeline
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
        self.stamps: list[tuple[float, float]] = []
        self.step_end = self._stamp         # called at each of our step ends (lockstep: its turn-taking)
        self.hooks = Hooks()
        self.hooks.add("after_step", lambda _args: self.step_end())

        # ours: the unit as the API sends it, made ready the way the built-in extension does
        folders = Folders(models=[ROOT / "models" / "ControlNet"], annotator_download=annotators)
        self.service = ControlNetService(lambda: folders)
        self.unit = parse_unit({"enabled": True, "module": "none", "model": CN_MODEL, "image": edges}, 0)

        # diffusers: the same components (the ControlNet pipeline and its model are made on first use)
        spec, schedule = samplers.resolve(SAMPLER, SCHEDULE)
        config = model.scheduler_config()
        self._parts = dict(vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0],
                           unet=model.unet, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        self._make_scheduler = lambda: samplers.make_scheduler(spec, schedule, config)
        self._controlnet, self._pipe_cn = controlnet, None
        self.pipe = StableDiffusionPipeline(scheduler=self._make_scheduler(), **self._parts)
        self.pipe.set_progress_bar_config(disable=True)
        self.control_image = Image.fromarray(edges)

    @property
    def controlnet(self):
        if self._controlnet is None:
            self._controlnet = self._our_controlnet()
        return self._controlnet

    @property
    def pipe_cn(self):
        from diffusers import StableDiffusionControlNetPipeline
        if self._pipe_cn is None:
            self._pipe_cn = StableDiffusionControlNetPipeline(controlnet=self.controlnet,
                                                              scheduler=self._make_scheduler(), **self._parts)
            self._pipe_cn.set_progress_bar_config(disable=True)
        return self._pipe_cn

    def _stamp(self):
        self.stamps.append(stamp())

    def _setup(self, p):
        self.service.attach(p, self.service.prepare(p, [self.unit]))

    def _our_controlnet(self):
        """The diffusers ControlNetModel inside the model our service loads for the unit (what ours+cn runs)."""
        from types import SimpleNamespace
        p = SimpleNamespace(sd_model=self.model, all_seeds=[0], all_subseeds=[0], width=self.size, height=self.size,
                            init_images=None)
        return self.service.prepare(p, [self.unit])[0].model.module

    def _params(self, seed: int):
        return self.GenerationParams(prompt=self.prompt, negative_prompt="", steps=self.steps, width=self.size,
                                     height=self.size, cfg_scale=CFG, seed=seed, sampler_name=SAMPLER,
                                     scheduler=SCHEDULE, do_not_save_samples=True, do_not_save_grid=True)

    def run(self, variant: str, seed: int) -> list[tuple[float, float]]:
        """(wall, cpu) of each step after the first of one whole run of `variant`."""
        self.stamps = []
        self._run(variant, seed, self._stamp)
        assert len(self.stamps) == self.steps, (variant, len(self.stamps))
        return intervals(self.stamps[1:], self.stamps)

    def _run(self, variant: str, seed: int, step_end) -> None:
        """One whole run of `variant`; step_end() is called right after each scheduler step."""
        if variant.startswith("ours"):
            self.step_end = step_end
            try:
                self.processing.process(self.model, self._params(seed), hooks=self.hooks,
                                        setup=self._setup if variant == "ours+cn" else None)
            finally:
                self.step_end = self._stamp
            return

        def callback(pipe, i, t, kwargs):
            step_end()
            return {}
        common = dict(prompt=self.prompt, num_inference_steps=self.steps, guidance_scale=CFG, height=self.size,
                      width=self.size, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                      callback_on_step_end=callback)
        if variant == "diffusers+cn":
            self.pipe_cn(image=self.control_image, controlnet_conditioning_scale=1.0, **common)
        else:
            self.pipe(**common)

    def lockstep(self, ours: str, theirs: str, seed: int, ours_first: bool) -> list[tuple[tuple, tuple]]:
        """((wall, cpu) of our step i, the same of their step i) for i >= 1 of one run each, taking turns step by
        step: the side that goes first runs in a second thread; each side blocks at its step end until the other
        has done its next step, so the two never compute at the same time."""
        first, second = (ours, theirs) if ours_first else (theirs, ours)
        go = {first: threading.Semaphore(0), second: threading.Semaphore(0)}
        ends: dict[str, list] = {first: [], second: []}        # stamps at each step end
        resumed: dict[str, list] = {first: [], second: []}     # stamps when the side goes on after its turn
        stop, failure = threading.Event(), []

        def first_end():
            ends[first].append(stamp())
            go[second].release()
            if not stop.is_set():
                go[first].acquire()
            resumed[first].append(stamp())

        def second_end():
            ends[second].append(stamp())
            go[first].release()
            if len(ends[second]) < self.steps:
                go[second].acquire()
            else:
                thread.join()           # the first side finishes its run; then this one finishes
            if failure:
                raise RuntimeError("the other side of the lockstep failed") from failure[0]
            resumed[second].append(stamp())

        def first_run():
            try:
                self._run(first, seed, first_end)
            except BaseException as exc:     # noqa: BLE001 (re-raised in the main thread)
                failure.append(exc)
            finally:
                go[second].release()

        thread = threading.Thread(target=first_run, name="lockstep-first")
        try:
            thread.start()
            go[second].acquire()                # the first side's step 0 is done
            if failure:
                raise failure[0]
            self._run(second, seed, second_end)
        finally:
            stop.set()
            go[first].release()
            thread.join()
        if failure:
            raise failure[0]
        steps = {side: intervals(ends[side][1:], resumed[side]) for side in (first, second)}
        assert len(steps[ours]) == len(steps[theirs]) == self.steps - 1, steps
        return list(zip(steps[ours], steps[theirs]))


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


def call_ab(bench: Bench, module: torch.nn.Module, calls: int) -> dict[str, list[tuple[float, float]]]:
    """One network's call alone with the inputs each side gives it (captured at the first step of ours+cn and
    diffusers+cn), alternating call by call: whether the call itself differs (our hint is one row expanded to the
    batch where the pipeline copies it; the UNet gets each side's residuals)."""
    captured, forward = {}, module.forward
    calls_seen = {"ours": 0, "diffusers": 0}

    def spy(*args, **kwargs):
        captured.setdefault(side, (args, kwargs))
        calls_seen[side] += 1
        return forward(*args, **kwargs)
    module.forward = spy
    try:
        for side, variant in (("ours", "ours+cn"), ("diffusers", "diffusers+cn")):
            bench.run(variant, 0)
    finally:
        del module.forward
    assert calls_seen == {"ours": bench.steps, "diffusers": bench.steps}, calls_seen   # one call per step each
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "diffusers": []}
    with torch.no_grad():
        for i in range(calls + 1):
            for side in ("ours", "diffusers") if i % 2 else ("diffusers", "ours"):
                args, kwargs = captured[side]
                start = stamp()
                module(*args, **kwargs)
                if i:                                               # the first pair warms up
                    times[side] += intervals([stamp()], [start])
    return times


def interleaved(bench: Bench, reps: int, seed: int = 1) -> dict[str, list[tuple[float, float]]]:
    """One warm-up run per variant, then `reps` runs of each, the order rotating every repetition: all the steps."""
    for variant in VARIANTS:
        bench.run(variant, 0)
    steps: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for rep in range(reps):
        k = rep % len(VARIANTS)
        for variant in VARIANTS[k:] + VARIANTS[:k]:
            steps[variant] += bench.run(variant, seed + rep)
    return steps


def med(pairs: list[tuple[float, float]], k: int) -> float:
    return statistics.median(p[k] for p in pairs)


def quartiles(values: list[float]) -> list[float]:
    return statistics.quantiles(values, n=4) if len(values) > 1 else list(values) * 3


def measure(model, size: int, steps: int, reps: int, lock_runs: int, loop_reps: int, calls: int) -> dict:
    with tempfile.TemporaryDirectory() as annotators:
        bench = Bench(model, size, steps, Path(annotators))
        with Canned(bench):
            loop = interleaved(bench, loop_reps)
        ab = {"ControlNet": call_ab(bench, bench.controlnet, calls), "UNet": call_ab(bench, model.unet, calls)}
        real = interleaved(bench, reps)
        locks = {ours: [pair for run in range(lock_runs)
                        for pair in bench.lockstep(ours, theirs, 100 + run, ours_first=bool(run % 2))]
                 for ours, theirs in PAIRS}
    out = {"size": size, "steps": steps, "reps": reps, "lock_runs": lock_runs, "loop_reps": loop_reps,
           "variants": {}, "pairs": {}, "ab": {}}
    for v in VARIANTS:
        out["variants"][v] = {"wall": med(real[v], 0), "cpu": med(real[v], 1), "wall_min": min(w for w, _ in real[v]),
                              "loop": med(loop[v], 0)}
    for ours, theirs in PAIRS:
        o, d = out["variants"][ours], out["variants"][theirs]
        pairs = locks[ours]
        out["pairs"][ours] = {
            "wall": o["wall"] / d["wall"], "cpu": o["cpu"] / d["cpu"], "wall_min": o["wall_min"] / d["wall_min"],
            "lock_wall": quartiles([a[0] / b[0] for a, b in pairs]),
            "lock_cpu": quartiles([a[1] / b[1] for a, b in pairs]),
            "lock_ms": (statistics.median(a[0] for a, _ in pairs), statistics.median(b[0] for _, b in pairs)),
            "lock_pairs": len(pairs),
            "loop_extra": o["loop"] - d["loop"]}         # s per step ours does beyond the pipeline, networks canned
    for net, times in ab.items():
        out["ab"][net] = {"ours": med(times["ours"], 0), "diffusers": med(times["diffusers"], 0),
                          "wall": statistics.median(a[0] / b[0] for a, b in zip(times["ours"], times["diffusers"])),
                          "cpu": statistics.median(a[1] / b[1] for a, b in zip(times["ours"], times["diffusers"])),
                          "calls": len(times["ours"])}
    return out


def report(results: list[dict], threads: int) -> None:
    def q(x):
        return f"{x[1]:.3f} [{x[0]:.3f}, {x[2]:.3f}]"
    print(f"\nper step, demo model + canny ControlNet, {SAMPLER} ({SCHEDULE}), CFG {CFG}, batch 1, fp32, {threads} "
          f"thread(s). Interleaved: median ms/step of all steps, ratio ours / diffusers of the medians (wall, thread "
          f"CPU, minima). Lockstep: median [quartiles] of the per-step ratios, wall and thread CPU.")
    print("| size | pair | steps × runs | diffusers ms | ours ms | ratio wall | ratio CPU | ratio of minima "
          "| lockstep ms diffusers / ours | lockstep wall | lockstep CPU | pairs |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in results:
        for ours, theirs in PAIRS:
            v, p = r["variants"], r["pairs"][ours]
            print(f"| {r['size']}×{r['size']} | {ours} / {theirs} | {r['steps']} × {r['reps']} | "
                  f"{v[theirs]['wall'] * 1e3:.1f} | {v[ours]['wall'] * 1e3:.1f} | **{p['wall']:.3f}** | "
                  f"{p['cpu']:.3f} | {p['wall_min']:.3f} | {p['lock_ms'][1] * 1e3:.1f} / {p['lock_ms'][0] * 1e3:.1f} | "
                  f"{q(p['lock_wall'])} | {q(p['lock_cpu'])} | {p['lock_pairs']} |")
    for r in results:
        v = r["variants"]
        print(f"{r['size']}×{r['size']}: the ControlNet's share of a diffusers step: "
              f"{1 - v['diffusers']['wall'] / v['diffusers+cn']['wall']:.0%}")
    print("\nnetworks canned (UNet, ControlNet, VAE decode return precomputed outputs): each side's own work per step; "
          "extra = ours - diffusers, and as a share of the real diffusers step")
    print("| size | runs | variant | loop ms/step | extra ms/step | extra / real step |")
    print("|---:|---:|---|---:|---:|---:|")
    for r in results:
        for ours, theirs in PAIRS:
            v, p = r["variants"], r["pairs"][ours]
            for name in (theirs, ours):
                extra = f"{p['loop_extra'] * 1e3:+.3f} | {p['loop_extra'] / v[theirs]['wall']:+.2%}" \
                    if name == ours else "— | —"
                print(f"| {r['size']}×{r['size']} | {r['loop_reps']} | {name} | {v[name]['loop'] * 1e3:.3f} | {extra} |")
    for r in results:
        for net, ab in r["ab"].items():
            print(f"{r['size']}×{r['size']}: the {net} call alone with each side's inputs (with ControlNet), "
                  f"{ab['calls']} alternating pairs: ours {ab['ours'] * 1e3:.1f} ms, diffusers "
                  f"{ab['diffusers'] * 1e3:.1f} ms (medians); paired ratio wall {ab['wall']:.3f}, CPU {ab['cpu']:.3f}")


def rss_side(variant: str, sizes: list[int], threads: int) -> dict:
    """Load, then one run of `variant` at each size. Only ours+cn loads the ControlNet through our service;
    diffusers+cn loads it with the demo tools' loader (modules.models.controlnet), the others not at all. The peak
    of the whole process is mostly the checkpoint load, so the peak of the runs alone is read too (Linux: the
    high-water mark is reset after loading)."""
    torch.set_num_threads(threads)
    model = load_demo()
    base = status_mib("VmRSS")
    load_peak = status_mib("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:     # resets VmHWM
        f.write("5")
    controlnet = None
    if variant == "diffusers+cn":
        from modules.models.controlnet import load_controlnet
        from modules.paths import DEMO_CONTROLNET
        controlnet = load_controlnet(DEMO_CONTROLNET, model.unet.config)
    with tempfile.TemporaryDirectory() as annotators:
        for size in sizes:
            Bench(model, size, 4, Path(annotators), controlnet=controlnet).run(variant, 0)
    runs_peak = status_mib("VmHWM")
    return {"variant": variant, "peak_rss_mib": max(load_peak, runs_peak), "after_load_mib": base,
            "runs_peak_mib": runs_peak}


def profile(size: int, steps: int, runs: int) -> None:
    """Where ours+cn spends its time beyond the pipeline: cProfile of our runs with the networks canned (the Python
    work), then torch.profiler over one real run of each side: the tensor operators whose call counts differ (counts
    do not depend on the machine's load)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    model = load_demo()
    with tempfile.TemporaryDirectory() as annotators:
        bench = Bench(model, size, steps, Path(annotators))
        with Canned(bench):
            bench.run("ours+cn", 0)
            prof = cProfile.Profile()
            prof.enable()
            for i in range(runs):
                bench.run("ours+cn", 1 + i)
            prof.disable()
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats("controlnet|denoiser|sampling|hooks", 25)
        ops = {}
        for variant in ("diffusers+cn", "ours+cn"):
            bench.run(variant, 0)
            with torch_profile(activities=[ProfilerActivity.CPU]) as tp:
                bench.run(variant, 1)
            ops[variant] = {e.key: (e.count, e.self_cpu_time_total) for e in tp.key_averages()}
    print(f"\ntensor operators of one run ({steps} steps) whose call counts differ: name, calls diffusers+cn / "
          f"ours+cn, self CPU ms diffusers+cn / ours+cn")
    d, o = ops["diffusers+cn"], ops["ours+cn"]
    for name in sorted(set(d) | set(o), key=lambda k: -abs(o.get(k, (0, 0))[1] - d.get(k, (0, 0))[1])):
        (dc, dt), (oc, ot) = d.get(name, (0, 0.0)), o.get(name, (0, 0.0))
        if dc != oc and name.startswith("aten::"):
            print(f"  {name:40s} {dc:6d} / {oc:6d}   {dt / 1e3:8.2f} / {ot / 1e3:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 10], help="steps per run, one per size")
    ap.add_argument("--reps", type=int, nargs="+", default=[6, 3], help="timed runs per variant, one per size")
    ap.add_argument("--lockstep", type=int, nargs="+", default=[4, 4],
                    help="lockstep runs per pair, one per size (even: each side goes first equally often)")
    ap.add_argument("--loop-reps", type=int, default=10, help="runs per variant with the networks canned")
    ap.add_argument("--calls", type=int, nargs="+", default=[20, 6],
                    help="alternating ControlNet and UNet call pairs, one per size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    ap.add_argument("--profile", type=int, metavar="SIZE", help="profile ours+cn at SIZE instead of timing")
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
                                              per_size(a.calls)):
        results.append(measure(model, size, steps, reps, lock, a.loop_reps, calls))
        report(results[-1:], a.threads)
    print(f"\nmeasured in {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}")
    report(results, a.threads)
    if not a.no_rss:
        rss = {}
        for variant in VARIANTS:
            proc = subprocess.run([sys.executable, __file__, "--rss-side", variant, "--threads", str(a.threads),
                                   "--sizes", *map(str, a.sizes)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            rss[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        print("\nmemory, each variant alone in a fresh process (load, then one run at each size), MiB:")
        print("| variant | peak RSS of the process | RSS after the checkpoint load | peak RSS during the runs |")
        print("|---|---:|---:|---:|")
        for variant, m in rss.items():
            print(f"| {variant} | {m['peak_rss_mib']:.0f} | {m['after_load_mib']:.0f} | {m['runs_peak_mib']:.0f} |")

if __name__ == "__main__":
    main()
