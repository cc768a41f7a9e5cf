"""launch.py: fast re-runs, the offline model step, and the default-model download through the launcher."""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
from types import SimpleNamespace

import pytest

import launch
from modules import cmd_args, download, paths
from tests.support import ROOT
from tests.support.download_server import payload, server  # noqa: F401 (fixtures)


def run_launch(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "COMMANDLINE_ARGS"}
    start = time.perf_counter()
    out = subprocess.run(["python3", str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    return out, time.perf_counter() - start


@pytest.mark.skipif(not (ROOT / "venv" / ".requirements-hash").is_file(),
                    reason="needs the venv made by `python3 launch.py` (the README's commands)")
def test_rerun_is_fast_and_offline_is_reported_at_once(tmp_path):
    out, seconds = run_launch("--exit", "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "installing" not in out.stdout  # requirements unchanged: nothing is installed again
    offline = [line for line in out.stdout.splitlines() if "offline" in line]
    assert len(offline) == 1 and "models/Stable-diffusion" in offline[0]
    assert seconds < 60
    assert (tmp_path / "cache" / "clip-tokenizer" / "vocab.json").is_file()
    out, _ = run_launch("--exit", "--skip-install", "--no-download-sd-model", "--data-dir", str(tmp_path))
    assert out.returncode == 0 and "offline" not in out.stdout


def test_fingerprint_follows_requirements_and_torch_command():
    args = SimpleNamespace(xformers=False)
    a = launch.requirements_fingerprint("pip install torch==2.13.0", args)
    assert a == launch.requirements_fingerprint("pip install torch==2.13.0", args)
    assert a != launch.requirements_fingerprint("pip install torch==2.14.1", args)
    assert a != launch.requirements_fingerprint("pip install torch==2.13.0", SimpleNamespace(xformers=True))


def test_launcher_downloads_default_model_when_none(tmp_path, monkeypatch, server, payload):
    monkeypatch.setattr(download, "SD15_URL", server.url("/file.bin"))
    monkeypatch.setattr(download, "SD15_SHA256", hashlib.sha256(payload).hexdigest())
    args = cmd_args.parse(["--data-dir", str(tmp_path)], env={})
    p = paths.from_args(args)
    launch.prepare_assets(p)
    launch.ensure_model(args, p)
    assert (p.checkpoints / download.SD15_FILENAME).read_bytes() == payload
    seen = len(server.requests)
    launch.ensure_model(args, p)  # a model is there now: no second download
    assert len(server.requests) == seen


def test_launcher_download_with_bad_hash_keeps_going(tmp_path, monkeypatch, capsys, server):
    monkeypatch.setattr(download, "SD15_URL", server.url("/file.bin"))
    monkeypatch.setattr(download, "SD15_SHA256", "0" * 64)
    args = cmd_args.parse(["--data-dir", str(tmp_path)], env={})
    p = paths.from_args(args)
    launch.prepare_assets(p)
    launch.ensure_model(args, p)
    assert "download failed" in capsys.readouterr().err
    assert not list(p.checkpoints.iterdir())
