"""LoRA cost on full SD 1.5 shapes (random weights): patching time and a job with two cached LoRAs vs without.

Two kohya-ss LoRAs in the real layout (every attention, feed-forward and projection module of the UNet's transformer
blocks and the text encoder's attention, rank chosen so each file is about 150 MB in fp16) are put on our loaded
model the way a job does it (the `lora` handler adds weight patches; the PatchSet applies them and restores every
weight afterwards). Prints:
- patch time of one LoRA: first use (read + bind + apply + restore) and cached (apply + restore), median of runs;
- a txt2img job without LoRA, with the two cached LoRAs, alternating, and the ratio of the medians.

    venv/bin/python bench/bench_lora.py [--size 512] [--steps 20] [--reps 2] [--rank 128]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from bench_txt2img import CACHE, PROMPT, build_weights  # noqa: E402


def all_linear(name: str) -> bool:
    return "transformer_blocks" in name or name.endswith(("proj_in", "proj_out"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--patch-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patch-only", action="store_true", help="only the patch timings, no jobs")
    ap.add_argument("--precision", default="autocast", choices=["autocast", "full"],
                    help="autocast: the server's default (bf16 UNet and text encoder where the CPU has it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from modules import devices, processing
    from modules.engine.extra_networks import ExtraNetworkParams
    from modules.engine.params import GenerationParams
    from modules.engine.patches import PatchSet
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.networks.lora import LoraExtraNetwork, LoraNetworks
    from modules.networks.network_files import NetworkCatalog
    from tests.support.lora_factory import write_lora

    build_weights()
    reg = ModelRegistry([CACHE], CACHE / "no-vae", HashCache(CACHE / "hashes.json"), hashing=False)
    device = devices.from_args(argparse.Namespace(precision=args.precision))
    model = ModelManager(reg, device, CACHE / "tok").load(reg.find_checkpoint("sd15.safetensors"))
    folder = CACHE / f"lora-r{args.rank}"
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(("a", "b")):
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            write_lora(path, model, rank=args.rank, alpha=args.rank / 2, seed=i, unet_filter=all_linear, scale=0.01)
    sizes = {p.name: p.stat().st_size / 2**20 for p in folder.glob("*.safetensors")}
    print(f"model: UNet {model.unet.dtype}, text encoder {model.text_encoders[0].dtype}; LoRA files (MiB): "
          f"{ {k: round(v, 1) for k, v in sizes.items()} }")

    class P:
        def __init__(self):
            self.sd_model, self.patches, self.comments, self.extra_generation_params = model, PatchSet(), {}, {}

        def comment(self, text):
            self.comments[text] = 1

    def patch_once(handler, names) -> tuple[float, float]:
        p = P()
        t0 = time.perf_counter()
        handler.activate(p, [ExtraNetworkParams([n, "1"]) for n in names])
        t1 = time.perf_counter()
        with p.patches.applied(model):
            t2 = time.perf_counter()
        return t1 - t0, time.perf_counter() - t1, t2 - t1

    # a checkpoint loaded in its file's precision is memory-mapped: the first pass over the weights reads them from
    # the page cache or disk, whoever makes it (the first UNet step, or a LoRA patch). Timed apart so the patch
    # figure is the LoRA's own cost.
    t0 = time.perf_counter()
    with torch.no_grad():
        for module in (model.unet, *model.text_encoders):
            for param in module.parameters():
                param.sum()
    print(f"first pass over the model's weights (mapped pages made resident): {time.perf_counter() - t0:.2f} s")
    handler = LoraExtraNetwork(LoraNetworks(NetworkCatalog(lambda: [folder]), lambda: 4))
    cold = patch_once(handler, ["a"])
    warm = [patch_once(handler, ["a"]) for _ in range(args.patch_reps)]
    print(f"one LoRA, first use: activate (read + bind) {cold[0]:.2f} s, apply + restore {cold[1]:.2f} s "
          f"(apply {cold[2]:.2f} s)")
    print(f"one LoRA, cached: activate {statistics.median(w[0] for w in warm):.3f} s, apply + restore "
          f"{statistics.median(w[1] for w in warm):.2f} s (apply {statistics.median(w[2] for w in warm):.2f} s)")
    patch_once(handler, ["a", "b"])
    two = [patch_once(handler, ["a", "b"]) for _ in range(args.patch_reps)]
    print(f"two LoRAs, cached: activate + apply + restore {statistics.median(w[0] + w[1] for w in two):.2f} s")

    if args.patch_only:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return

    def job(prompt: str) -> float:
        params = GenerationParams(prompt=prompt, steps=args.steps, width=args.size, height=args.size, cfg_scale=7.0,
                                  seed=1, sampler_name="Euler")
        t0 = time.perf_counter()
        processing.process(model, params, setup=lambda p: p.extra_networks.register(handler))
        return time.perf_counter() - t0

    job(PROMPT + " <lora:a:1> <lora:b:1>")   # warm-up (and both files cached)
    plain, with_two = [], []
    for _ in range(args.reps):
        plain.append(job(PROMPT))
        with_two.append(job(PROMPT + " <lora:a:1> <lora:b:1>"))
    ratio = statistics.median(with_two) / statistics.median(plain)
    print(f"job {args.size}x{args.size}, {args.steps} steps Euler, CFG 7: without {statistics.median(plain):.2f} s, "
          f"with two cached LoRAs {statistics.median(with_two):.2f} s → ratio {ratio:.3f} "
          f"(runs: {[round(x, 2) for x in plain]} / {[round(x, 2) for x in with_two]})")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
