"""Start-up as a user sees it (issue #21): `python3 launch.py` with everything installed, until the page answers,
then the first image of the bundled demo model through the API.

Each run: a fresh data folder, `python3 launch.py --api --port P --data-dir D` (plus --extra args), time from the
process start until GET / and /sdapi/v1/options answer ("page ready"), then one POST /sdapi/v1/txt2img at the demo
model's own size (64×64, 20 steps DPM++ 2M, as docs/DEMO_MODEL.md) timed from the request ("first image"; it
includes loading the model when the server has not loaded it yet). Targets: page ≤ 10 s, first image ≤ 2 s.

    venv/bin/python bench/bench_startup.py [--reps 3] [--extra "--skip-install"]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_extension_startup import answers, free_port  # noqa: E402 (the same loopback helpers)


def one_run(extra: list[str], timeout: float) -> dict:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("COMMANDLINE_ARGS", None)
    with tempfile.TemporaryDirectory(prefix="startup-") as data:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["python3", str(ROOT / "launch.py"), "--api", "--port", str(port), "--data-dir",
                                 data, *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            while not (answers(base + "/sdapi/v1/options") and answers(base + "/")):
                if proc.poll() is not None:
                    raise RuntimeError(f"launch.py exited with {proc.returncode}")
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError("the page did not answer in time")
                time.sleep(0.05)  # polling interval while waiting for a port, not synchronisation of results
            page = time.perf_counter() - t0
            body = json.dumps({"prompt": "a red circle on a blue background", "steps": 20, "width": 64,
                               "height": 64, "sampler_name": "DPM++ 2M", "seed": 1}).encode()
            request = urllib.request.Request(base + "/sdapi/v1/txt2img", data=body,
                                             headers={"Content-Type": "application/json"})
            t1 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=timeout) as r:
                ok = r.status == 200 and bool(json.loads(r.read()).get("images"))
            image = time.perf_counter() - t1
            t2 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=timeout) as r:
                r.read()
            second = time.perf_counter() - t2
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"page_s": page, "first_image_s": image, "second_image_s": second, "ok": ok}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--extra", default="", help="more launch.py flags")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    runs = []
    for i in range(a.reps):
        r = one_run(shlex.split(a.extra), a.timeout)
        runs.append(r)
        print(f"run {i}: page {r['page_s']:.2f} s, first image {r['first_image_s']:.2f} s, "
              f"second {r['second_image_s']:.2f} s, ok={r['ok']}", flush=True)
    for key in ("page_s", "first_image_s", "second_image_s"):
        print(f"median {key}: {statistics.median(r[key] for r in runs):.2f}")


if __name__ == "__main__":
    main()
