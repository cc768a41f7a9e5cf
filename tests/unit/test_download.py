"""Tests for modules.download against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modules import download
from modules.download import DownloadError, download_file, network_reachable
from tests.support import ROOT
from tests.support.download_server import payload, server  # noqa: F401 (fixtures)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _part(dest: Path) -> Path:
    return Path(str(dest) + ".part")


def test_download_success(server, payload, tmp_path):
    dest = tmp_path / "models" / "sub" / "model.safetensors"
    result = download_file(server.url("/file.bin"), dest, sha256=_sha(payload).upper(), progress=False)
    assert result == dest
    assert dest.read_bytes() == payload
    assert not _part(dest).exists()
    assert len(server.requests) == 1
    assert server.requests[0]["range"] is None
    assert server.requests[0]["user_agent"]
    assert "Python-urllib" not in server.requests[0]["user_agent"]


def test_download_without_hash(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    assert download_file(server.url("/file.bin"), str(dest), progress=False) == dest
    assert dest.read_bytes() == payload


def test_resume_sends_range_and_appends(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    n = 1_234_567
    _part(dest).write_bytes(payload[:n])
    download_file(server.url("/file.bin"), dest, sha256=_sha(payload), progress=False, chunk_size=64 * 1024)
    assert [r["range"] for r in server.requests] == [f"bytes={n}-"]
    assert server.statuses == [206]
    assert dest.read_bytes() == payload
    assert not _part(dest).exists()


def test_server_ignoring_range_restarts(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    n = 100_000
    # Junk prefix: if it were kept, the result would be wrong.
    _part(dest).write_bytes(b"\0" * n)
    download_file(server.url("/norange.bin"), dest, sha256=_sha(payload), progress=False)
    assert server.requests[0]["range"] == f"bytes={n}-"
    assert dest.read_bytes() == payload
    assert not _part(dest).exists()


def test_complete_part_gets_416_and_is_verified(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    _part(dest).write_bytes(payload)
    download_file(server.url("/file.bin"), dest, sha256=_sha(payload), progress=False)
    assert server.statuses == [416]
    assert dest.read_bytes() == payload
    assert not _part(dest).exists()


def test_bad_hash_removes_part(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download_file(server.url("/file.bin"), dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert "sha256" in message
    assert "model.bin" in message
    assert wrong in message and _sha(payload) in message
    assert "\n" not in message
    assert not dest.exists()
    assert not _part(dest).exists()


def test_http_404(server, tmp_path):
    dest = tmp_path / "model.bin"
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, progress=False)
    message = str(info.value)
    assert "404" in message
    assert url in message
    assert "\n" not in message
    assert not dest.exists()
    assert not _part(dest).exists()


def test_timeout_raises_quickly(server, tmp_path):
    dest = tmp_path / "model.bin"
    url = server.url("/hang")
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, timeout=1, progress=False)
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert "timed out" in str(info.value)
    assert url in str(info.value)
    assert not dest.exists()


def test_truncated_transfer_keeps_part_for_resume(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError) as info:
        download_file(server.url("/drop.bin"), dest, sha256=_sha(payload), progress=False)
    assert server.url("/drop.bin") in str(info.value)
    assert not dest.exists()
    part = _part(dest)
    assert part.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(payload)
    assert part.read_bytes() == payload[:kept]

    download_file(server.url("/file.bin"), dest, sha256=_sha(payload), progress=False)
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == payload
    assert not part.exists()


def test_existing_file_with_right_hash_makes_no_request(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(payload)
    result = download_file(server.url("/file.bin"), dest, sha256=_sha(payload).upper(), progress=False)
    assert result == dest
    assert server.requests == []


def test_existing_file_without_hash_makes_no_request(server, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"anything")
    assert download_file(server.url("/missing.bin"), dest, progress=False) == dest
    assert server.requests == []
    assert dest.read_bytes() == b"anything"


def test_existing_file_with_wrong_hash_is_replaced(server, payload, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"stale")
    download_file(server.url("/file.bin"), dest, sha256=_sha(payload), progress=False)
    assert dest.read_bytes() == payload
    assert len(server.requests) == 1


def test_progress_with_tqdm(server, payload, tmp_path, capsys):
    pytest.importorskip("tqdm")
    dest = tmp_path / "model.bin"
    download_file(server.url("/file.bin"), dest, progress=True)
    assert dest.read_bytes() == payload
    assert "model.bin" in capsys.readouterr().err


def test_progress_without_tqdm(server, payload, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    dest = tmp_path / "model.bin"
    download_file(server.url("/file.bin"), dest, progress=True)
    assert dest.read_bytes() == payload
    err = capsys.readouterr().err
    assert "model.bin" in err
    assert "MiB" in err


def test_network_reachable_loopback(server):
    assert network_reachable(server.url("/"), timeout=2) is True


def test_network_unreachable_closed_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    started = time.monotonic()
    assert network_reachable(f"http://127.0.0.1:{port}/", timeout=2) is False
    assert time.monotonic() - started < 3


def test_network_reachable_answers_when_dns_hangs(monkeypatch):
    release = threading.Event()

    def hanging_getaddrinfo(*args, **kwargs):
        release.wait(30)
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    started = time.monotonic()
    try:
        assert network_reachable("https://example.invalid/model", timeout=0.5) is False
        assert time.monotonic() - started < 3
    finally:
        release.set()


def test_network_reachable_bad_url():
    assert network_reachable("not a url", timeout=0.5) is False


def test_sd15_constants():
    assert download.SD15_URL.endswith("/" + download.SD15_FILENAME)
    assert download.SD15_URL.startswith("https://huggingface.co/")
    assert len(download.SD15_SHA256) == 64
    int(download.SD15_SHA256, 16)


def test_module_imports_only_stdlib():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import modules.download\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "bad = sorted(m for m in new if m not in sys.stdlib_module_names and m != 'modules')\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
