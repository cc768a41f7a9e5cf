"""Downloads and git behind a proxy or a mirror (modules/net_policy.py), against loopback servers and a file://
mirror only: the proxy variables are honoured (and no_proxy), HF_ENDPOINT and the GitHub mirror rewrite URLs, git
clones and update checks go through the mirror."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from modules import download, extensions, launch_utils, net_policy
from tests.support.download_server import payload, server  # noqa: F401 (fixtures)
from tests.support.http_proxy import proxy  # noqa: F401 (fixture)

PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy",
              "ALL_PROXY", "HF_ENDPOINT", "GITHUB_MIRROR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(net_policy, "_github_mirror", None)


def test_download_goes_through_the_proxy(tmp_path, monkeypatch, server, proxy, payload):
    monkeypatch.setenv("http_proxy", proxy.url)
    dest = download.download_file(server.url("/file.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == payload
    assert proxy.forwarded == [("GET", server.url("/file.bin"))]
    assert len(server.requests) == 1


def test_no_proxy_bypasses_it(tmp_path, monkeypatch, server, proxy, payload):
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert download.download_file(server.url("/file.bin"), tmp_path / "f.bin", progress=False).read_bytes() == payload
    assert proxy.forwarded == [] and len(server.requests) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachability_probes_the_proxy(monkeypatch, proxy):
    target = "http://no-such-host.invalid/model.safetensors"
    assert not download.network_reachable(target, timeout=2)
    monkeypatch.setenv("http_proxy", proxy.url)
    assert net_policy.connect_target(target) == ("127.0.0.1", proxy.server_address[1])
    assert download.network_reachable(target, timeout=2)       # the proxy answers for it
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    assert not download.network_reachable(target, timeout=2)


def test_hf_endpoint_rewrites_huggingface_downloads(tmp_path, monkeypatch, server, payload):
    monkeypatch.setenv("HF_ENDPOINT", server.url("") + "/")
    got = download.download_file("https://huggingface.co/file.bin", tmp_path / "m.bin", progress=False)
    assert got.read_bytes() == payload and server.requests[-1]["path"] == "/file.bin"
    assert download.network_reachable(download.SD15_URL, timeout=2)   # probes the endpoint, not huggingface.co


def test_rewrite_rules(monkeypatch):
    gh = "https://github.com/owner/repo.git"
    raw = "https://raw.githubusercontent.com/owner/repo/main/x.txt"
    assert net_policy.rewrite_url(gh) == gh and net_policy.git_config_args() == []
    monkeypatch.setenv("GITHUB_MIRROR", "https://mirror.example/gh")
    assert net_policy.rewrite_url(gh) == "https://mirror.example/gh/" + gh
    assert net_policy.rewrite_url(raw) == "https://mirror.example/gh/" + raw
    assert net_policy.rewrite_url("https://example.com/x") == "https://example.com/x"
    assert net_policy.git_config_args() == [
        "-c", "url.https://mirror.example/gh/https://github.com/.insteadOf=https://github.com/"]
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    assert net_policy.rewrite_url("https://huggingface.co/a/b/resolve/main/c") == \
        "https://hf-mirror.example/a/b/resolve/main/c"
    monkeypatch.setenv("GITHUB_MIRROR", "mirror.example")
    with pytest.raises(ValueError, match="GITHUB_MIRROR must be a URL starting with http://, https:// or file://"):
        net_policy.rewrite_url(gh)
    with pytest.raises(ValueError, match="--github-mirror must be a URL"):
        net_policy.configure("ftp://x")


def test_flag_wins_over_the_environment_and_is_exported(monkeypatch):
    monkeypatch.setenv("GITHUB_MIRROR", "https://env.example/")
    net_policy.configure("https://flag.example")
    assert net_policy.github_mirror() == "https://flag.example/"
    assert os.environ["GITHUB_MIRROR"] == "https://flag.example/"   # install.py and git subprocesses see it


def git(*args, cwd):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_git_clone_and_update_check_go_through_the_mirror(tmp_path, monkeypatch):
    """The mirror is a file:// prefix: git's insteadOf rewrite is the same for any scheme, and this needs no
    network. https://github.com/owner/repo.git must end up at <mirror>/https://github.com/owner/repo.git."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "install.py").write_text("print('hi')\n")
    git("add", "install.py", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    mirror = tmp_path / "mirror"
    bare = mirror / "https:" / "github.com" / "owner" / "repo.git"
    bare.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    monkeypatch.setenv("GITHUB_MIRROR", mirror.as_uri() + "/")
    dest = tmp_path / "extensions" / "repo"
    launch_utils.git_clone("https://github.com/owner/repo.git", str(dest), "repo")
    assert (dest / "install.py").read_text() == "print('hi')\n"
    (ext,) = extensions.list_extensions(tmp_path / "extensions", tmp_path / "builtin")
    assert ext.remote == "https://github.com/owner/repo.git"      # the folder keeps the real address
    assert ext.check_updates(timeout=20) == "latest"
    monkeypatch.delenv("GITHUB_MIRROR")
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{closed_port()}")   # without the mirror: no way out
    (ext,) = extensions.list_extensions(tmp_path / "extensions", tmp_path / "builtin")
    assert ext.check_updates(timeout=20).startswith("unknown (")
