"""A1111's ``launch`` / ``launch_utils`` helpers that extensions' install.py files call (§1.4 of the reference).

Standard library only, and importing it starts nothing: install.py does ``import launch`` and then
``launch.is_installed(...)``, ``launch.run_pip(...)``, ``launch.args.skip_install``. ``run`` takes both forms: the
launcher's ``run([argv], what)`` (no shell; exits the launcher on failure) and A1111's
``run("command line", desc, errdesc, custom_env, live)`` (shell; returns the output; RuntimeError on failure).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

from modules import cmd_args, extension_install, extensions, git_cmd

script_path = str(Path(__file__).resolve().parent.parent)
python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"
# The A1111 version whose extension contract we follow; Regional Prompter parses it as int("1101").
A1111_VERSION = "v1.10.1"


def _launch_args():
    """The app's flags, tolerant of flags we do not know (an extension's). install.py runs with the launcher's
    flags in SD_WEBUI_LAUNCH_ARGS; otherwise this process's command line."""
    if "SD_WEBUI_LAUNCH_ARGS" in os.environ:
        argv = shlex.split(os.environ["SD_WEBUI_LAUNCH_ARGS"])
    else:
        argv = sys.argv[1:]
    parser = cmd_args.build_parser(add_help=False)
    argv += shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    try:
        return parser.parse_known_args(argv)[0]
    except SystemExit:   # a malformed value for one of our flags: fall back to the defaults, never exit on import
        return parser.parse_known_args([])[0]


args = _launch_args()


def run(command, desc=None, errdesc=None, custom_env=None, live: bool = default_command_live):
    if isinstance(command, (list, tuple)):
        return _run_step(list(command), desc or "command")
    if desc is not None:
        print(desc, flush=True)
    kwargs = dict(args=command, shell=True, env=os.environ if custom_env is None else custom_env,
                  encoding="utf8", errors="ignore")
    if not live:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    result = subprocess.run(**kwargs)
    if result.returncode != 0:
        bits = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        if result.stdout:
            bits.append(f"stdout: {result.stdout}")
        if result.stderr:
            bits.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(bits))
    return result.stdout or ""


def _run_step(cmd: list[str], what: str) -> None:
    """The launcher's own steps: print, run without a shell, stop the launcher on failure."""
    print(f"[launch] {what}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        print(f"[launch] failed: {what} (exit code {result.returncode})", file=sys.stderr)
        sys.exit(result.returncode)


def is_installed(package: str) -> bool:
    """A distribution of that name, else an importable module of that name; no version check (as A1111)."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def run_pip(command: str, desc=None, live: bool = default_command_live):
    """``python -m pip <command> --prefer-binary``; nothing with --skip-install. The core constraints apply:
    inherited from the installer's environment, else taken from SD_WEBUI_PIP_CONSTRAINT (set by the launcher)."""
    if getattr(args, "skip_install", False):
        return None
    index = f" --index-url {index_url}" if index_url else ""
    env = None
    if not os.environ.get("PIP_CONSTRAINT") and os.environ.get("SD_WEBUI_PIP_CONSTRAINT"):
        env = dict(os.environ, PIP_CONSTRAINT=os.environ["SD_WEBUI_PIP_CONSTRAINT"])
    return run(f'"{python}" -m pip {command} --prefer-binary{index}', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", custom_env=env, live=live)


def check_run_python(code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def repo_dir(name: str) -> str:
    return os.path.join(script_path, dir_repos, name)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:
    """Clone ``url`` into ``dir`` (through the GitHub mirror when set), or bring an existing clone to
    ``commithash``; RuntimeError with git's message on failure."""
    def check(result, what):
        if not result.ok:
            raise RuntimeError(f"Couldn't {what} {name}: {result.reason()}")

    if os.path.exists(dir):
        if commithash is None:
            return
        current = git_cmd.run_git(["rev-parse", "HEAD"], cwd=dir)
        if current.ok and current.stdout.strip() == commithash:
            return
        check(git_cmd.run_git(["fetch"], cwd=dir, timeout=600), "fetch")
        check(git_cmd.run_git(["checkout", commithash], cwd=dir), "checkout commit for")
        return
    print(f"Cloning {name} into {dir}...", flush=True)
    check(git_cmd.run_git(["clone", "--config", "core.filemode=false", url, dir], timeout=1800), "clone")
    if commithash is not None:
        check(git_cmd.run_git(["checkout", commithash], cwd=dir), "checkout commit for")


def git_pull_recursive(dir: str) -> None:
    for subdir, _, _ in os.walk(dir):
        if os.path.exists(os.path.join(subdir, ".git")):
            result = git_cmd.run_git(["pull", "--autostash"], cwd=subdir, timeout=600)
            print(f"Pulled changes for repository in '{subdir}':\n{result.stdout.strip()}" if result.ok else
                  f"Couldn't perform 'git pull' on repository in '{subdir}': {result.reason()}", flush=True)


def commit_hash() -> str:
    result = git_cmd.run_git(["rev-parse", "HEAD"], cwd=script_path, timeout=10)
    return result.stdout.strip() if result.ok else "<none>"


def git_tag() -> str:
    """The A1111 version we are compatible with (extensions compare it), not our own tag."""
    return A1111_VERSION


def list_extensions(settings_file) -> list[str]:
    """A1111's launcher helper: names of the enabled user extensions, as config.json and the flags say."""
    disabled, setting = extensions.read_disabled(settings_file)
    mode = extensions.effective_disable_all(args, setting)
    if mode != "none" or getattr(args, "safe_mode", False):
        return []
    folder = Path(getattr(args, "data_dir", None) or script_path) / "extensions"
    if not folder.is_dir():
        return []
    return [x for x in sorted(os.listdir(folder)) if x not in disabled and (folder / x).is_dir()
            and not x.startswith(".")]


def run_extension_installer(extension_dir: str) -> None:
    """A1111's single-extension install (after "Install from URL"): runs its install.py with the core pins."""
    path = Path(extension_dir)
    ext = extensions.Extension(path.name, path)
    data = Path(getattr(args, "data_dir", None) or script_path)
    extension_install.run_installer(ext, data / "cache", python, argv=shlex.split(
        os.environ.get("SD_WEBUI_LAUNCH_ARGS", "")))
