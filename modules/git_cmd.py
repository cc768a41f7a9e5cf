"""Run git with a hard timeout, never a password prompt, and the mirror policy (standard library only).

git over http starts helper processes (git-remote-https); a plain ``subprocess.run(timeout=…)`` kills git only and
the helper keeps the connection open, so git runs in its own process group and the whole group is killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

from modules import net_policy

GIT = os.environ.get("GIT", "git")


@dataclass
class GitResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def reason(self) -> str:
        """One line for a status column: the last stderr line, or the timeout."""
        if self.timed_out:
            return self.stderr
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else f"git exit code {self.returncode}"


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"   # a private or missing repo fails instead of waiting for a password
    env.setdefault("GIT_ASKPASS", "echo")
    return env


def run_git(args: list[str], cwd: str | os.PathLike | None = None, timeout: float = 30.0) -> GitResult:
    """``git <mirror options> <args>`` in ``cwd``; never raises for git's own failures (see ``ok``/``reason``)."""
    cmd = [GIT, *net_policy.git_config_args(), *args]
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=git_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    except OSError as exc:
        return GitResult(127, "", f"cannot run git: {exc}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        return GitResult(-9, "", f"timed out after {timeout:g} s", timed_out=True)
    return GitResult(proc.returncode, out, err)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a process started with start_new_session=True and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
