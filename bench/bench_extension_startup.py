"""Start-up time of the web UI with extensions installed against the same start-up with none.

Each run is a fresh `webui.py` process (UI and API, the model load skipped, so only start-up is measured) on a
copy of one data folder; the time is from process start until the page and /sdapi/v1/options answer. The two sides
alternate (none, with, none, with, …) so that machine noise hits both; the median of --reps runs per side is
reported, with the peak RSS of each side's server. Extension installs are cached before timing (install.py runs in
the launcher, not in webui.py; the cache makes a second launch skip them), so this is what a user waits for once
the extensions are installed.

    venv/bin/python bench/bench_extension_startup.py --ext DIR [--ext DIR ...] [--reps 5]

Without --ext it uses our two sample extensions (tests/support/sample_extensions) and any extension folders found
in /tmp/userdata/extensions (where the real ones were tried: wildcards, sd-dynamic-prompts, Ultimate SD upscale).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def one_start(data: Path) -> tuple[float, int]:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("COMMANDLINE_ARGS", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--api", "--port", str(port), "--data-dir",
                             str(data), "--skip-load-model-at-start"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        while not (answers(base + "/sdapi/v1/options") and answers(base + "/")):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("server did not answer within 300 s")
            time.sleep(0.05)   # polling interval of the measurement (50 ms resolution)
        took = time.perf_counter() - t0
        with open(f"/proc/{proc.pid}/status", encoding="utf-8") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return took, rss
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ext", action="append", default=[])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    exts = [Path(e) for e in args.ext]
    if not exts:
        exts = sorted((ROOT / "tests" / "support" / "sample_extensions").iterdir())
        real = Path("/tmp/userdata/extensions")
        if real.is_dir():
            exts += sorted(p for p in real.iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        none_dir, with_dir = Path(tmp) / "none", Path(tmp) / "with"
        for d in (none_dir, with_dir):
            (d / "extensions").mkdir(parents=True)
        for e in exts:
            shutil.copytree(e, with_dir / "extensions" / e.name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        cache = Path("/tmp/userdata/cache/extension-installs.json")
        if cache.is_file():   # the installs already ran for these folders: keep their results
            (with_dir / "cache").mkdir()
            shutil.copy(cache, with_dir / "cache" / cache.name)
        one_start(none_dir), one_start(with_dir)   # warm the OS file cache and __pycache__
        times = {"none": [], "with": []}
        rss = {"none": [], "with": []}
        for _ in range(args.reps):
            for side, d in (("none", none_dir), ("with", with_dir)):
                t, r = one_start(d)
                times[side].append(t)
                rss[side].append(r)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"extensions": [e.name for e in exts], "reps": args.reps,
                      "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
                      "median_s": {k: round(v, 2) for k, v in med.items()},
                      "slower_by_s": round(med["with"] - med["none"], 2),
                      "peak_rss_mib": {k: round(max(v) / 1024) for k, v in rss.items()}}, indent=1))


if __name__ == "__main__":
    main()
