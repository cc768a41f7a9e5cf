"""What the Extensions tab does, without Gradio: the access gate, the Installed rows, update checks, Apply (settings +
updates) and the restart, and installing an extension from a git URL or a local folder.

Standard library only and no face imports, so the API (or a script) can drive the same functions and tests run
without a browser. Every action takes the runtime's flags and refuses, server-side, when ``access_blocked`` says so:
the UI hiding a button is not a safety measure. The index of available extensions lives in
``modules.extension_index``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from modules import extension_install, extensions, git_cmd

CHECK_TIMEOUT = 20.0          # seconds per remote for Check for updates (all remotes are asked in parallel)
CLONE_TIMEOUT = 300.0         # seconds for one git clone
UPDATE_TIMEOUT = 120.0        # seconds for one fetch + reset
MAX_WORKERS = 8
INSTALLED_NOTE = "installed: active after Apply and restart"
BOOT_ID = uuid.uuid4().hex    # changes on every start; the page compares it to notice that a restart finished


class AccessDenied(Exception):
    """An extension action on a server that others can reach, without --enable-insecure-extension-access."""


# ---- the access gate -------------------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposing_flags(args) -> list[str]:
    """The flags that make the server reachable from other machines (A1111's list: --share, --listen, --ngrok,
    --server-name)."""
    flags = []
    if getattr(args, "listen", False):
        flags.append("--listen")
    if getattr(args, "share", False):
        flags.append("--share")
    if getattr(args, "ngrok", None):
        flags.append("--ngrok")
    server_name = getattr(args, "server_name", None)
    if server_name and not _is_loopback(server_name):
        flags.append(f"--server-name {server_name}")
    return flags


def access_blocked(args) -> str | None:
    """Why extension actions are refused on this server, or None when they are allowed. The one place that decides
    (cmd_args sets A1111's ``disable_extension_access`` from it; every action here asks it again)."""
    if getattr(args, "enable_insecure_extension_access", False):
        return None
    flags = exposing_flags(args)
    if not flags:
        return None
    return (f"Extension access is disabled because the server was started with {', '.join(flags)}: installing or "
            f"updating an extension runs its code on this machine, so it is off for a server others can reach. "
            f"Start with --enable-insecure-extension-access to allow it.")


def check_access(args) -> None:
    reason = access_blocked(args)
    if reason:
        raise AccessDenied(reason)


# ---- Installed ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the Installed table (plain strings, ready to show)."""
    name: str
    enabled_in_settings: bool
    enabled: bool
    is_builtin: bool
    remote: str
    branch: str
    version: str
    commit_date: str
    status: str
    errors: dict[str, str] = field(default_factory=dict)
    disabled_reason: str = ""
    can_update: bool = False
    url: str = ""                     # a web page for the remote (https), or ""


def display_remote(url: str | None) -> str:
    """The remote without a user name or password (a token in a clone URL must not reach the page)."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def row_for(ext) -> Row:
    ext.read_info_from_repo()
    remote = ext.remote
    if ext.is_builtin:
        shown = "built-in"
    elif not ext.is_git or not remote:
        shown = "local"
    else:
        shown = display_remote(remote)
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ext.commit_date)) if ext.commit_date else ""
    web = shown if shown.startswith(("https://", "http://")) else ""
    return Row(name=ext.name, enabled_in_settings=ext.enabled_in_settings, enabled=ext.enabled,
               is_builtin=ext.is_builtin, remote=shown, branch=ext.branch or "", version=ext.version or "",
               commit_date=date, status=ext.status or "", errors=dict(ext.errors),
               disabled_reason=ext.disabled_reason, can_update=ext.can_update, url=web.removesuffix(".git"))


def installed_rows(exts) -> list[Row]:
    return [row_for(ext) for ext in exts]


# ---- Check for updates -------------------------------------------------------------------------------------------
def check_updates(args, exts, timeout: float = CHECK_TIMEOUT, max_workers: int = MAX_WORKERS) -> dict[str, str]:
    """Ask every enabled extension with a git remote for new commits, all at once; name → status. One slow or dead
    remote costs ``timeout`` (git is killed with its helpers), never the others' time. Builtins update with the
    program; a folder copied in by hand shows "local"."""
    check_access(args)
    results: dict[str, str] = {}
    todo = []
    for ext in exts:
        if ext.is_builtin:
            results[ext.name] = "built-in"
        elif not ext.enabled:
            results[ext.name] = ext.status or ""
        else:
            todo.append(ext)
    if not todo:
        return results

    def one(ext) -> str:
        try:
            return ext.check_updates(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - one broken folder gets its own row, the others still report
            ext.status = f"unknown ({exc})"
            return ext.status

    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(todo)), thread_name_prefix="ext-update-check")
    futures = {pool.submit(one, ext): ext for ext in todo}
    # each git call has its own timeout; the extra margin covers the few local git calls around ls-remote
    done, _ = wait(futures, timeout=timeout + 2 * extensions.GIT_INFO_TIMEOUT + 5)
    pool.shutdown(wait=False, cancel_futures=True)
    for future, ext in futures.items():
        if future in done:
            results[ext.name] = future.result()
        else:
            ext.status = f"unknown (no answer within {timeout:g} s)"
            results[ext.name] = ext.status
    return results


# ---- Apply (and restart) -----------------------------------------------------------------------------------------
@dataclass
class ApplyResult:
    disabled: list[str]
    disable_all: str
    updated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def message(self) -> str:
        parts = [f"Saved: disabled extensions {', '.join(self.disabled) or '(none)'}; "
                 f"disable all extensions: {self.disable_all}."]
        if self.updated:
            parts.append(f"Updated: {', '.join(self.updated)}.")
        parts += self.errors
        return " ".join(parts)


def apply(args, options, exts, enabled_names, disable_all: str = "none", update_names=(),
          update_timeout: float = UPDATE_TIMEOUT, shown_names=None) -> ApplyResult:
    """Save ``disabled_extensions`` (every listed extension not in ``enabled_names``) and ``disable_all_extensions``
    into config.json, then bring the extensions ticked for update to their remote branch. Updates that fail are
    reported; the settings are saved either way. The caller restarts the server afterwards. ``shown_names``: the
    extensions the user could tick (a page opened before an install lacks the new one); the others keep their
    setting."""
    check_access(args)
    if disable_all not in extensions.DISABLE_ALL_CHOICES:
        raise ValueError(f"disable all extensions must be one of {', '.join(extensions.DISABLE_ALL_CHOICES)} "
                         f"(got {disable_all!r})")
    known = {ext.name for ext in exts}
    enabled_names = set(enabled_names or ())
    unknown = sorted((enabled_names | set(update_names or ())) - known)
    if unknown:
        raise ValueError(f"unknown extension(s) {', '.join(unknown)}; installed: {', '.join(sorted(known))}")
    shown = known if shown_names is None else set(shown_names)
    disabled = [ext.name for ext in exts
                if (ext.name not in enabled_names if ext.name in shown else not ext.enabled_in_settings)]
    options.set("disabled_extensions", disabled, save=False)
    options.set("disable_all_extensions", disable_all, save=False)
    options.save()
    result = ApplyResult(disabled, disable_all)
    for ext in exts:
        if ext.name in set(update_names or ()):
            try:
                ext.fetch_and_reset_hard(timeout=update_timeout)
                result.updated.append(ext.name)
            except RuntimeError as exc:
                ext.report_error("update", str(exc))
                result.errors.append(str(exc))
    return result


def restart_command() -> list[str]:
    """The same interpreter (the venv's) with the same interpreter options, script and flags as this process."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return [sys.executable, *argv[1:]]


def schedule_restart(delay: float = 0.5) -> threading.Timer:
    """Replace this process with a fresh start of itself once the current answer has gone out (``delay``). execv
    keeps the process id, the environment, the working folder and stdout/stderr, so whoever started the server
    (a terminal, a service manager, a test) still holds it; the listening socket is close-on-exec, so the new
    process binds the same port."""
    def restart():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        cmd = restart_command()
        os.execv(cmd[0], cmd)

    timer = threading.Timer(delay, restart)
    timer.daemon = True
    timer.start()
    return timer


# ---- Install from URL --------------------------------------------------------------------------------------------
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")
_NETWORK_SCHEMES = ("http", "https", "ssh", "git")
_FOLDER_NAME = re.compile(r"^[^/\\:*?\"<>|\x00-\x1f]+$")


def _local_path(url: str) -> str | None:
    """The folder a local URL (a path or file://) names, or None for a network URL."""
    if url.lower().startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    if "://" in url or _SCP_LIKE.match(url):
        return None
    return os.path.expanduser(url)


def normalize_remote(url: str | None) -> str:
    """One spelling per repository, to spot an already installed one: no scheme, credentials, ".git" or trailing
    slash, case folded (``https://github.com/A/b.git`` = ``git@github.com:a/b``); local paths resolved."""
    url = (url or "").strip()
    if not url:
        return ""
    local = _local_path(url)
    if local is not None:
        return os.path.normcase(os.path.realpath(local)).rstrip(os.sep).removesuffix(".git")
    if _SCP_LIKE.match(url):
        host, _, path = url.split("@", 1)[1].partition(":")
    else:
        parts = urllib.parse.urlsplit(url)
        host, path = (parts.hostname or ""), parts.path
    return f"{host}/{path.strip('/')}".lower().removesuffix(".git").rstrip("/")


def default_folder_name(url: str) -> str:
    tail = url.strip().rstrip("/\\")
    tail = re.split(r"[/\\:]", tail)[-1]
    return tail.removesuffix(".git")


def _check_url(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ValueError("URL: enter a git URL (https://…, ssh://…, git@host:path) or a local folder")
    if url.startswith("-"):
        raise ValueError(f"URL must not start with '-' (got {url!r})")
    local = _local_path(url)
    if local is not None:
        if not os.path.isdir(local):
            raise ValueError(f"URL: {local} is not a folder (a local repository must exist)")
        return url
    if not _SCP_LIKE.match(url) and urllib.parse.urlsplit(url).scheme.lower() not in _NETWORK_SCHEMES:
        raise ValueError(f"URL must start with http://, https://, ssh://, git://, file://, be user@host:path or a "
                         f"local folder (got {url!r})")
    return url


def _check_folder_name(name: str) -> str:
    name = name.strip()
    if not name or name in (".", "..") or name.startswith(".") or not _FOLDER_NAME.match(name):
        raise ValueError(f"folder name {name!r} is not usable: it must be a plain folder name (no / \\ : * ? \" < > |, "
                         f"not starting with a dot)")
    return name


@dataclass
class InstallResult:
    name: str
    path: Path
    message: str
    install_error: str | None = None


def _clone(url: str, branch: str, dest: Path, timeout: float) -> None:
    cmd = ["clone"]
    if _local_path(url) is None:
        cmd.append("--filter=blob:none")          # A1111's blobless clone: history without every old file
    if branch:
        cmd += ["--branch", branch]
    cmd += ["--", url, str(dest)]
    result = git_cmd.run_git(cmd, timeout=timeout)
    if not result.ok:
        raise RuntimeError(f"git clone {url} failed: {result.reason()}")
    if (dest / ".gitmodules").is_file():
        sub = git_cmd.run_git(["submodule", "update", "--init", "--recursive"], cwd=dest, timeout=timeout)
        if not sub.ok:
            raise RuntimeError(f"git submodule update failed: {sub.reason()}")


def run_install_script(ext, args, cache_dir) -> str | None:
    """Run the extension's install.py now, as the launcher does at start (modules.extension_install: core pins as
    pip constraints, a timeout, the result cached so the next start does not run it again); the error text or
    None. The error is also recorded on the extension (``errors["install"]``)."""
    if not (Path(ext.path) / "install.py").is_file():
        return None
    result = extension_install.run_installer(ext, Path(cache_dir), timeout=extension_install.timeout_from(args))
    return result.get("error") or None


def install_from_url(args, data_dir, exts, url: str, branch: str = "", folder_name: str = "",
                     timeout: float = CLONE_TIMEOUT) -> InstallResult:
    """Clone ``url`` into ``<data>/tmp/``, move it to ``<data>/extensions/<folder>``, run its install.py and add it
    to ``exts`` (the listing the tab and the API show), switched on for the next start. ``data_dir`` is the
    --data-dir folder (``<data>/cache`` keeps the install result). Raises AccessDenied or
    ValueError (bad input, naming the field) or RuntimeError (git failed); nothing is left behind then."""
    check_access(args)
    url = _check_url(url)
    branch = (branch or "").strip()
    if branch.startswith("-"):
        raise ValueError(f"branch must not start with '-' (got {branch!r})")
    name = _check_folder_name(folder_name or default_folder_name(url))
    data_dir = Path(data_dir)
    target = data_dir / "extensions" / name
    if target.exists() or name.lower() in {e.canonical_name for e in exts}:
        raise ValueError(f"folder name: an extension folder named {name!r} already exists ({target})")
    wanted = normalize_remote(url)
    for ext in exts:
        if not ext.is_builtin and ext.is_git and normalize_remote(ext.remote) == wanted:
            raise ValueError(f"URL: {url} is already installed as {ext.name!r}")
    tmp_root = data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"ext-{name}-", dir=tmp_root))
    try:
        _clone(url, branch, work / name, timeout)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / name), str(target))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ext = extensions.Extension(name, target, enabled=False, is_builtin=False)
    ext.enabled_in_settings = True                # ticked: Apply and restart turns it on
    ext.disabled_reason = INSTALLED_NOTE
    error = run_install_script(ext, args, data_dir / "cache")
    exts.append(ext)
    message = (f"Installed {name} into {target}. It becomes active after a restart: press Apply and restart UI.")
    if error:
        message += f" Its install.py failed: {error.strip().splitlines()[0]}"
    return InstallResult(name, target, message, error)
