"""Real git repositories for the extension tests: a sample extension with an install.py that leaves a marker file,
a bare "remote", and a loopback HTTP server for an index JSON."""
from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import threading
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
MARKER = "installed.marker"

# install.py writes the marker beside itself: proof that it ran, and with which working folder
INSTALL_PY = """import os
from pathlib import Path
Path(__file__).with_name("installed.marker").write_text(os.getcwd())
"""


def git(*args, cwd) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=dict(os.environ, **GIT_ENV), capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git("add", name, cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A work tree on branch main with one commit holding ``files`` (default: the marker-writing install.py)."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, text in (files or {"install.py": INSTALL_PY}).items():
        commit_file(path, name, text, f"add {name}")
    return path


def make_bare(work: Path, bare: Path) -> Path:
    git("clone", "-q", "--bare", str(work), str(bare), cwd=work.parent)
    return bare


@contextlib.contextmanager
def serve_folder(folder: Path):
    """http://127.0.0.1:<port>/ serving ``folder`` until the block ends."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def hanging_git_server():
    """Accepts connections and never answers: a remote that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop, accepted = threading.Event(), []

    def accept():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
