"""Shared fixtures: tiny real-layout checkpoints and a real server on a free loopback port."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test models gain nothing from a second thread, and a multi-threaded OpenMP loop slows down a hundredfold when
# another process (a training run, a benchmark) keeps the other core busy. Servers started by tests get the same.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

from tests.support.server import Server, make_data_dir, start_server  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Back to one thread after any test that changed it (a bench run in-process uses every core): a second OpenMP
    thread beside a busy core made a later test run for half an hour."""
    yield
    if torch.get_num_threads() != 1:
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


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory) -> Path:
    from tests.support.model_factory import write_tiny_checkpoint
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sd1.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_sd1_b(tmp_path_factory) -> Path:
    from tests.support.model_factory import write_tiny_checkpoint
    path = tmp_path_factory.mktemp("ckpt_b") / "tiny_sd1_b.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=1)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_sd1, tiny_sd1_b):
    data = make_data_dir(tmp_path_factory.mktemp("server"), tiny_sd1, tiny_sd1_b)
    srv = start_server(data)
    yield srv
    srv.stop()
