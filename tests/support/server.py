"""The real web UI server on a free loopback port, started as users start it (webui.py in a subprocess)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_offline_server(data_dir: Path, *extra: str, **kwargs) -> Server:
    """start_server with every download refused at once: the server's proxy variables point at a loopback port where
    nothing listens (requests to the server itself stay direct). The test process's environment is put back."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    saved = {k: os.environ.get(k) for k in ("http_proxy", "https_proxy", "no_proxy")}
    os.environ.update(http_proxy=dead_proxy, https_proxy=dead_proxy, no_proxy="127.0.0.1,localhost")
    try:
        return start_server(data_dir, *extra, **kwargs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
