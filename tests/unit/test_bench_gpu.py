"""bench/bench_gpu.py's CPU smoke path (tiny shapes), so that the script a GPU session runs cannot rot unnoticed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from modules import devices

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_devices(monkeypatch):
    import torch
    for name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer", "dtype",
                 "dtype_unet", "dtype_inference", "dtype_vae", "nan_check", "unet_needs_upcast"):
        monkeypatch.setattr(devices, name, getattr(devices, name))
    threads = torch.get_num_threads()
    yield
    # the bench uses every core; the rest of the suite runs on one (tests/conftest.py: a second OpenMP thread beside
    # a busy core made a later test hundreds of times slower)
    torch.set_num_threads(threads)


def test_cpu_smoke_run_measures_each_side(bench, tmp_path, restore_devices):
    cache = tmp_path / "tiny"
    bench.build_weights("tiny", cache)
    results = [bench.run_config(name, "cpu", cache, size=32, steps=1, reps=1)
               for name in ("ours", "diffusers-fp16", "ours --lowvram", "ours --xformers")]
    ours, diffusers, lowvram, xformers = results
    for r in (ours, diffusers, lowvram):
        assert r["image_s"] > 0 and r["first_image_s"] > 0 and r["peak_rss_gib"] > 0.1, r
    # no attention flag on the CPU: "Automatic", SDPA with bf16 self-attention in blocks (cpu_attention.py)
    assert ours["attention"] == "cpu-chunked" and diffusers["dtype"] == "float32"
    assert xformers == {"config": "ours --xformers", "flags": ["--xformers"], "skipped": "xformers needs CUDA"}
    text = bench.table(results)
    assert "vs diffusers" in text and "peak RSS GiB" in text and "skipped: xformers needs CUDA" in text
    ratio = diffusers["image_s"] / ours["image_s"]
    assert f"{ratio:.2f}x" in text.splitlines()[1]


def test_main_runs_configurations_in_their_own_processes(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = bench.main(["--device", "cpu", "--cache", str(tmp_path / "tiny"), "--only", "ours --xformers",
                       "--json", str(out)])
    assert code == 0
    assert "ours --xformers                    skipped: xformers needs CUDA" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["shapes"] == "tiny" and saved["results"][0]["skipped"] == "xformers needs CUDA"


def test_cuda_without_a_gpu_says_so(bench, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench.main(["--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
