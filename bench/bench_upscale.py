"""An upscale ×4 of a 512×512 image with a real-size RRDBNet (ESRGAN / R-ESRGAN 4x+ size: 23 blocks, 64 features,
growth 32; random weights) through the upscaler-model path the web UI uses (a .pth in models/ESRGAN read by
safe_load, detected by spandrel, run tile by tile on the CPU). Issue #20: peak RSS must stay under 3 GiB with tiling.

Prints the time, the peak RSS of the process (ru_maxrss: the interpreter, torch and the model included) and, as the
baseline measured in the same run, the RSS before the upscale (torch imported, model file written) and the growth.
One run takes a few minutes on two busy cores; the time is approximate on a shared machine.

    venv/bin/python bench/bench_upscale.py [--size 512] [--tile 192] [--overlap 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=192, help="ESRGAN_tile (A1111's default 192)")
    ap.add_argument("--overlap", type=int, default=8, help="ESRGAN_tile_overlap (A1111's default 8)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from modules.models import spandrel_models
    from modules.models.upscaler_models import JobUpscalers, UpscalerModels

    torch.set_num_threads(args.threads)
    spandrel = spandrel_models.import_spandrel()
    rrdb = __import__("spandrel.architectures.ESRGAN.__arch.RRDB", fromlist=["RRDBNet"])
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        (models / "ESRGAN").mkdir(parents=True)
        gen = torch.Generator().manual_seed(0)
        net = rrdb.RRDBNet(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
        sd = {k: (torch.randn(v.shape, generator=gen) / max(1, v[0].numel()) ** 0.5 if v.ndim > 1
                  else torch.zeros(v.shape)) for k, v in net.state_dict().items()}
        params = sum(v.numel() for v in sd.values())
        torch.save(sd, models / "ESRGAN" / "rrdb_x4_random.pth")
        del net, sd
        catalogue = UpscalerModels(models)
        jobs = JobUpscalers(catalogue, lambda key, default=None: {"ESRGAN_tile": args.tile,
                                                                  "ESRGAN_tile_overlap": args.overlap}.get(key, default))
        entry = catalogue.find("rrdb_x4_random")
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8))
        before = rss_mib()
        start = time.perf_counter()
        out = jobs.upscale(entry, image, 4)
        seconds = time.perf_counter() - start
        peak = peak_mib()
    tiles = (-(-args.size // args.tile)) ** 2 if args.tile > 0 else 1
    print(f"CPU: {cpu_name()} ({args.threads} threads); torch {torch.__version__}; spandrel {spandrel.__version__}")
    print(f"RRDBNet 23 blocks x 64 features ({params / 1e6:.1f} M parameters), {args.size}x{args.size} -> "
          f"{out.width}x{out.height}, tile {args.tile} overlap {args.overlap} ({tiles} tiles)")
    print(f"time {seconds:.1f} s ({seconds / tiles:.1f} s per tile)")
    print(f"RSS before the upscale (baseline) {before:.0f} MiB; peak RSS {peak:.0f} MiB "
          f"({peak / 1024:.2f} GiB, {peak / before:.2f}x the baseline); limit 3 GiB: "
          f"{'OK' if peak < 3 * 1024 else 'OVER'}")


if __name__ == "__main__":
    main()
