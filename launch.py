#!/usr/bin/env python3
"""Set-up and start: `python3 launch.py` makes ./venv, installs requirements (torch first, pinned), prepares the
offline assets, runs the extensions' install.py (modules/extension_install.py), makes sure a model is there, then
serves the web UI. `python3 launch.py --run-tests` does the same set-up and runs the test suite instead. Standard
library only until we are inside the venv.

Extensions' install.py files `import launch`: importing this file starts nothing, and A1111's helpers (run,
run_pip, is_installed, args, git_tag, …) are re-exported from modules/launch_utils.py.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from modules import atomic_file, cmd_args, extension_install, launch_utils, net_policy, paths  # noqa: E402
from modules.launch_utils import (  # noqa: E402,F401 — A1111's `launch` surface for extensions' install.py
    args, check_run_python, commit_hash, dir_repos, git, git_clone, git_pull_recursive, git_tag, index_url,
    is_installed, list_extensions, python, repo_dir, run, run_extension_installer, run_pip,
)

DEFAULT_TORCH_COMMAND = "pip install torch==2.13.0"
OPEN_CLIP_PIN = "open-clip-torch==3.3.0"   # only for its BPE vocabulary file; installed without dependencies
REQUIREMENTS = ROOT / "requirements.txt"
# packages installed with --no-deps (their declared torchvision would pull another torch); see the file's header
REQUIREMENTS_NODEPS = ROOT / "requirements-nodeps.txt"


def venv_dir() -> Path:
    return Path(os.environ.get("VENV_DIR") or ROOT / "venv")


def venv_python() -> Path:
    d = venv_dir()
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == venv_dir().resolve()


def ensure_venv_and_reexec(argv: list[str]) -> None:
    """Outside the venv: create it if needed and run this script again with its interpreter."""
    if in_venv():
        return
    if not venv_python().exists():
        run([sys.executable, "-m", "venv", str(venv_dir())], "creating the virtual environment")
    env = dict(os.environ, SD_WEBUI_LAUNCHED="1")
    os.execve(str(venv_python()), [str(venv_python()), str(Path(__file__).resolve()), *argv], env)


def requirements_fingerprint(torch_command: str, args) -> str:
    h = hashlib.sha256(REQUIREMENTS.read_bytes())
    h.update(REQUIREMENTS_NODEPS.read_bytes())
    h.update(torch_command.encode())
    h.update(OPEN_CLIP_PIN.encode())
    h.update(b"xformers" if args.xformers else b"")
    return h.hexdigest()


def cuda_present() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def install_extensions(args, p: paths.Paths, argv: list[str]) -> None:
    """Each enabled user extension's install.py, when it changed since its last successful run (see the module)."""
    try:
        extension_install.install_from_args(args, p, argv)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"[launch] extension installs skipped: {exc}", file=sys.stderr, flush=True)


def install_requirements(args) -> None:
    torch_command = os.environ.get("TORCH_COMMAND", DEFAULT_TORCH_COMMAND)
    marker = venv_dir() / ".requirements-hash"
    fingerprint = requirements_fingerprint(torch_command, args)
    if marker.is_file() and marker.read_text().strip() == fingerprint and not args.reinstall_torch \
            and not args.reinstall_xformers:
        return
    py = str(sys.executable)
    # torch first, pinned: any later requirement that merely mentions torch is then already satisfied, so pip
    # never pulls a different (multi-GB CUDA) build.
    run([py, "-m", *shlex.split(torch_command)] + (["--force-reinstall"] if args.reinstall_torch else []),
        "installing torch")
    run([py, "-m", "pip", "install", "-r", str(REQUIREMENTS)], "installing requirements")
    run([py, "-m", "pip", "install", "--no-deps", "-r", str(REQUIREMENTS_NODEPS)],
        "installing requirements without their dependencies")
    run([py, "-m", "pip", "install", "--no-deps", OPEN_CLIP_PIN], "installing the CLIP vocabulary")
    if args.xformers or args.reinstall_xformers:
        if cuda_present():
            run([py, "-m", "pip", "install", "xformers"], "installing xformers")
        else:
            print("[launch] --xformers ignored: no CUDA device here", flush=True)
    with atomic_file.replacing(marker, sync=False) as tmp:
        tmp.write_text(fingerprint)


def prepare_assets(p: paths.Paths) -> None:
    from modules.models.tokenizer_assets import ensure_tokenizer_files
    ensure_tokenizer_files(p.tokenizer_dir)
    for folder in (p.checkpoints, p.vae, p.lora, p.controlnet, p.embeddings, p.outputs):
        folder.mkdir(parents=True, exist_ok=True)


def has_checkpoint(p: paths.Paths) -> bool:
    """A checkpoint of the user's own (the bundled demo model does not count)."""
    demo = paths.DEMO_CHECKPOINT.resolve()
    for root in p.checkpoint_dirs():
        if root.is_dir():
            for f in root.rglob("*"):
                name = f.name.lower()
                if name.endswith((".safetensors", ".ckpt")) and ".vae." not in name and f.resolve() != demo:
                    return True
    return False


def ensure_model(args, p: paths.Paths) -> None:
    """Download A1111's default SD 1.5 checkpoint when there is no model; offline, say so at once and go on."""
    if args.ckpt or has_checkpoint(p) or args.no_download_sd_model:
        return
    from modules import download
    start = time.perf_counter()
    if not download.network_reachable(download.SD15_URL, timeout=5.0):
        took = time.perf_counter() - start
        if paths.DEMO_CHECKPOINT.is_file() and not args.no_demo_model:
            print(f"[launch] offline: cannot reach the model download server ({took:.1f} s); using the bundled demo "
                  "model (64x64 shapes, see docs/DEMO_MODEL.md). For real pictures put a .safetensors file in "
                  "models/Stable-diffusion", flush=True)
        else:
            print(f"[launch] offline: cannot reach the model download server ({took:.1f} s); continuing without "
                  "downloading. No model yet: put a .safetensors file in models/Stable-diffusion", flush=True)
        return
    print(f"[launch] no checkpoint found; downloading {download.SD15_FILENAME} (about 4 GB)", flush=True)
    try:
        download.download_file(download.SD15_URL, p.checkpoints / download.SD15_FILENAME, sha256=download.SD15_SHA256)
    except download.DownloadError as exc:
        print(f"[launch] download failed: {exc}; continuing without it", file=sys.stderr, flush=True)


def ensure_browser() -> None:
    """Browser tests drive Debian's Chromium; install it with apt when missing and we may."""
    if Path("/usr/bin/chromium").exists() or not shutil.which("apt-get"):
        return
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        print("[launch] /usr/bin/chromium is missing (apt-get install chromium); browser tests will be skipped")
        return
    print("[launch] installing Debian's chromium for the browser tests", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def run_tests() -> int:
    ensure_browser()
    cmd = [sys.executable, "-m", "pytest"]
    print(f"[launch] running the test suite: {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def main() -> None:
    argv = sys.argv[1:]
    if "-h" not in argv and "--help" not in argv:
        # Extensions' flags are known only once their preload.py ran, in the venv: here our own flags only.
        first = cmd_args.parse_known(argv)
        if not first.skip_prepare_environment:
            ensure_venv_and_reexec(argv)
    try:
        args = cmd_args.parse(argv, preload=True)
        net_policy.configure(args.github_mirror)
    except cmd_args.FlagError as exc:
        print(exc.code, file=sys.stderr)
        sys.exit(2)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not args.skip_prepare_environment:
        ensure_venv_and_reexec(argv)
        if not args.skip_install:
            install_requirements(args)
    p = paths.from_args(args)
    prepare_assets(p)
    if args.run_tests:
        sys.exit(run_tests())
    if not args.skip_prepare_environment and not args.skip_install:
        install_extensions(args, p, argv)
    ensure_model(args, p)
    if args.exit:
        print("[launch] environment ready (--exit)")
        return
    import webui
    webui.main(argv)


if __name__ == "__main__":
    main()
