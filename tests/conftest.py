"""Shared fixtures: tiny real-layout checkpoints and a real server on a free loopback port."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test models gain nothing from a second thread, and a multi-threaded OpenMP loop slows down a hundredfold when
# another process (a training run, a benchmark) keeps the other core busy. Servers started by tests get the same.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used a server gets the tail of that server's log in its report (CI keeps nothing else)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Server) and value.log.is_file():
                report.sections.append((f"server log ({value.url})", value.log.read_text(errors="replace")[-6000:]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory) -> Path:
    from tests.model_factory import write_tiny_checkpoint
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sd1.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_sd1_b(tmp_path_factory) -> Path:
    from tests.model_factory import write_tiny_checkpoint
    path = tmp_path_factory.mktemp("ckpt_b") / "tiny_sd1_b.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=1)
    return path


class Server:
    def __init__(self, data_dir: Path, port: int, proc: subprocess.Popen, log: Path):
        self.data_dir, self.port, self.proc, self.log = data_dir, port, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str) -> str:
        return f"{self.url}/sdapi/v1/{path.lstrip('/')}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_server(data_dir: Path, *extra: str, wait_model: bool = True, timeout: float = 120) -> Server:
    port = free_port()
    log = data_dir / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("COMMANDLINE_ARGS", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--api", "--port", str(port),
                             "--data-dir", str(data_dir), *extra],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    server = Server(data_dir, port, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            r = requests.get(server.api("options"), timeout=2)
            # the model is loaded once the server remembers it as the current checkpoint
            if not wait_model and r.status_code in (200, 401):  # answering (401: behind --api-auth)
                return server
            if r.status_code == 200 and r.json().get("sd_model_checkpoint"):
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)  # polling interval, not synchronisation: the loop ends on the condition or the deadline
    server.stop()
    raise RuntimeError(f"server did not come up within {timeout} s:\n{log.read_text()[-3000:]}")


def make_data_dir(base: Path, *checkpoints: Path) -> Path:
    ckpt_dir = base / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for c in checkpoints:
        shutil.copy(c, ckpt_dir / c.name)
    return base


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_sd1, tiny_sd1_b):
    data = make_data_dir(tmp_path_factory.mktemp("server"), tiny_sd1, tiny_sd1_b)
    srv = start_server(data)
    yield srv
    srv.stop()
