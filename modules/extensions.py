"""Extension discovery with A1111's names: the two folders, enable/disable, metadata.ini, git information.

Standard library only: launch.py lists extensions (to run their install.py) before the venv has packages.

- ``extensions-builtin/`` (program root) is listed before ``extensions/`` (data dir); within each,
  ``sorted(os.listdir())``; only folders; dot-folders and ``__pycache__`` are skipped (never extensions).
- The canonical name is the folder name lower-cased; a second folder with the same canonical name is reported
  (``skipped``) and left out.
- ``enabled`` is the effective state (what loads): not in ``disabled_extensions`` and not excluded by
  ``disable_all`` ("extra": builtins only, "all": none) or safe mode. ``enabled_in_settings`` is the user's choice
  alone (the Extensions tab's checkbox), and ``disabled_reason`` says why an extension is off.
- Git information (remote, branch, commit) is read lazily with the ``git`` command and a timeout; a folder without
  ``.git`` (copied in by hand) reports ``remote`` None and ``status`` "local".
"""
from __future__ import annotations

import json
import os
import sys
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modules import git_cmd
from modules.extension_metadata import ExtensionMetadata

DISABLE_ALL_CHOICES = ("none", "extra", "all")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "extensions-builtin"   # <program root>/extensions-builtin
GIT_INFO_TIMEOUT = 10.0

# A1111's scripts.ScriptFile: what list_files returns (basedir = the extension's folder).
ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])

extensions_dir: Path = Path()
extensions_builtin_dir: Path = Path()
extensions: list["Extension"] = []
loaded_extensions: dict[str, "Extension"] = {}   # canonical name → extension, of the last listing (A1111's name)
skipped: list[str] = []                          # messages about folders left out of the last listing
# Errors per canonical name for the life of the process: a new listing (Reload UI) keeps the preload and load errors.
_errors: dict[str, dict[str, str]] = {}


class Extension:
    def __init__(self, name: str, path: str | os.PathLike, enabled: bool = True, is_builtin: bool = False,
                 loaded: dict | None = None):
        self.name = name
        self.canonical_name = name.lower()
        self.path = os.path.realpath(path)
        self.is_builtin = is_builtin
        self.enabled = enabled
        self.enabled_in_settings = enabled
        self.disabled_reason = ""
        self.errors: dict[str, str] = _errors.setdefault(self.canonical_name, {})
        self.metadata = ExtensionMetadata(self.path, self.canonical_name, loaded)
        self.errors.pop("metadata", None)   # read again just now
        for message in self.metadata.errors:
            self.report_error("metadata", message)
        self.status = ""
        self.can_update = False
        self.have_info_from_repo = False
        self._remote: str | None = None
        self._branch: str | None = None
        self._commit_hash: str | None = None
        self._commit_date: int | None = None

    def __repr__(self) -> str:
        return f"<Extension {self.name!r} {'builtin ' if self.is_builtin else ''}{'on' if self.enabled else 'off'}>"

    def report_error(self, phase: str, message: str) -> None:
        """Keep the last error per phase ("preload", "install", "import", "ui", "callback", …) for the UI and API."""
        self.errors[phase] = message
        print(f"[extensions] {self.name}: {phase}: {message.strip().splitlines()[-1] if message.strip() else ''}",
              file=sys.stderr, flush=True)

    # ---- git information, read on first use ----
    @property
    def is_git(self) -> bool:
        return os.path.exists(os.path.join(self.path, ".git"))

    def _git(self, *args: str, timeout: float = GIT_INFO_TIMEOUT) -> git_cmd.GitResult:
        return git_cmd.run_git(list(args), cwd=self.path, timeout=timeout)

    def read_info_from_repo(self) -> None:
        if self.have_info_from_repo:
            return
        self.have_info_from_repo = True
        if not self.is_git:
            self.status = "local"
            return
        head = self._git("log", "-1", "--format=%H %ct")
        if not head.ok:
            self.status = f"unknown ({head.reason()})"
            return
        commit, _, date = head.stdout.strip().partition(" ")
        self._commit_hash = commit or None
        self._commit_date = int(date) if date.isdigit() else None
        remote = self._git("config", "--get", "remote.origin.url")
        self._remote = remote.stdout.strip() or None if remote.ok else None
        branch = self._git("rev-parse", "--abbrev-ref", "HEAD")
        self._branch = branch.stdout.strip() if branch.ok and branch.stdout.strip() != "HEAD" else None
        if self._remote is None:
            self.status = "local"

    def _info(self, name: str):
        self.read_info_from_repo()
        return getattr(self, name)

    remote = property(lambda self: self._info("_remote"))
    branch = property(lambda self: self._info("_branch"))
    commit_hash = property(lambda self: self._info("_commit_hash"))
    commit_date = property(lambda self: self._info("_commit_date"))
    version = property(lambda self: (self._info("_commit_hash") or "")[:8])

    def check_updates(self, timeout: float = 30.0) -> str:
        """Compare with the remote without changing the folder. "new commits": the remote branch has commits not
        fetched yet; "behind HEAD": fetched but not checked out; "latest"; "local" (no git or no remote);
        "unknown (<reason>)" on any git failure, including the timeout."""
        self.read_info_from_repo()
        self.can_update = False
        if not self.is_git or self._remote is None:
            self.status = "local"
            return self.status
        if not self._commit_hash:
            return self.status
        branch = self._branch
        if branch is None:
            self.status = "unknown (detached HEAD: no branch to compare)"
            return self.status
        upstream = self._git("rev-parse", "--abbrev-ref", f"{branch}@{{upstream}}")
        remote_name, _, remote_branch = (upstream.stdout.strip() if upstream.ok else f"origin/{branch}").partition("/")
        remote = self._git("ls-remote", remote_name, f"refs/heads/{remote_branch}", timeout=timeout)
        if not remote.ok:
            self.status = f"unknown ({remote.reason()})"
            return self.status
        remote_sha = remote.stdout.split()[0] if remote.stdout.split() else None
        if remote_sha is None:
            self.status = f"unknown (no branch {remote_branch!r} on the remote)"
            return self.status
        tracked = self._git("rev-parse", "--verify", "-q", f"refs/remotes/{remote_name}/{remote_branch}")
        tracked_sha = tracked.stdout.strip() if tracked.ok else None
        if remote_sha != tracked_sha and remote_sha != self._commit_hash:
            self.status = "new commits"
            self.can_update = True
        elif tracked_sha and tracked_sha != self._commit_hash:
            self.status = "behind HEAD"
            self.can_update = True
        else:
            self.status = "latest"
        return self.status

    def fetch_and_reset_hard(self, commit: str | None = None, timeout: float = 120.0) -> None:
        """Update the folder to the remote's branch (or ``commit``); raises RuntimeError with git's message."""
        fetch = self._git("fetch", "--all", timeout=timeout)
        if not fetch.ok:
            raise RuntimeError(f"git fetch failed for {self.name}: {fetch.reason()}")
        target = commit or "@{upstream}"
        reset = self._git("reset", "--hard", target, timeout=timeout)
        if not reset.ok:
            raise RuntimeError(f"git reset --hard {target} failed for {self.name}: {reset.reason()}")
        self.have_info_from_repo = False
        self.read_info_from_repo()
        self.status, self.can_update = "latest", False

    def list_files(self, subdir: str, extension: str) -> list[ScriptFile]:
        """Files directly in ``<path>/<subdir>`` whose suffix is ``extension`` (".py", ".js"; case-insensitive),
        sorted by name (A1111's order)."""
        folder = os.path.join(self.path, subdir)
        if not os.path.isdir(folder):
            return []
        result = []
        for filename in sorted(os.listdir(folder)):
            path = os.path.join(folder, filename)
            if os.path.splitext(filename)[1].lower() == extension.lower() and os.path.isfile(path):
                result.append(ScriptFile(self.path, filename, path))
        return result


# Third-party extensions whose job a built-in extension does on this engine: their code is not run (it patches
# A1111's ldm internals) and their install.py is skipped; the built-in one uses their folders (models/, annotators).
# Matched by folder-name prefix ("sd-webui-controlnet", "sd-webui-controlnet-main" from a zip download).
PROVIDED_BY_BUILTIN = {"sd-webui-controlnet": "controlnet"}


def provided_by(ext_name: str) -> str | None:
    """The built-in extension that provides what the third-party folder `ext_name` would, or None."""
    low = ext_name.lower()
    return next((builtin for prefix, builtin in PROVIDED_BY_BUILTIN.items() if low.startswith(prefix)), None)


def _reason(ext_name: str, is_builtin: bool, disabled, disable_all: str, safe_mode: bool,
            builtins: frozenset[str] = frozenset()) -> str:
    if not is_builtin and provided_by(ext_name) in builtins:
        return f"provided by the built-in {provided_by(ext_name)} extension (its code is not run)"
    if safe_mode:
        return "safe mode (--safe-mode)"
    if disable_all == "all":
        return "all extensions disabled"
    if disable_all == "extra" and not is_builtin:
        return "extra extensions disabled"
    if ext_name in disabled:
        return "disabled in settings"
    return ""


def list_extensions(extensions_dir_: str | os.PathLike, builtin_dir: str | os.PathLike, disabled=(),
                    disable_all: str = "none", safe_mode: bool = False) -> list[Extension]:
    """List both folders (builtins first) and make the result the module's current listing."""
    global extensions_dir, extensions_builtin_dir, extensions
    if disable_all not in DISABLE_ALL_CHOICES:
        raise ValueError(f"disable_all must be one of {', '.join(DISABLE_ALL_CHOICES)} (got {disable_all!r})")
    extensions_dir = Path(extensions_dir_)
    extensions_builtin_dir = Path(builtin_dir)
    disabled = set(disabled or ())
    loaded_extensions.clear()
    skipped.clear()
    result: list[Extension] = []
    for root, is_builtin in ((extensions_builtin_dir, True), (extensions_dir, False)):
        if not root.is_dir():
            continue
        for name in sorted(os.listdir(root)):
            path = root / name
            if name.startswith(".") or name == "__pycache__" or not path.is_dir():
                continue
            canonical = name.lower()
            if canonical in loaded_extensions:
                message = (f"duplicate extension name {canonical!r}: {path} skipped, "
                           f"{loaded_extensions[canonical].path} kept")
                skipped.append(message)
                print(f"[extensions] {message}", file=sys.stderr, flush=True)
                continue
            ext = Extension(name, path, is_builtin=is_builtin, loaded=loaded_extensions)
            ext.enabled_in_settings = name not in disabled
            builtins = frozenset(x.canonical_name for x in result if x.is_builtin and x.enabled)
            ext.disabled_reason = _reason(name, is_builtin, disabled, disable_all, safe_mode, builtins)
            ext.enabled = not ext.disabled_reason
            loaded_extensions[canonical] = ext
            result.append(ext)
    extensions = result
    return result


def active() -> list[Extension]:
    """The enabled extensions of the last listing, in load order (builtins first)."""
    return [x for x in extensions if x.enabled]


def find_extension(filename: str | os.PathLike) -> Extension | None:
    """The extension whose folder holds ``filename`` (a script, a callback's module file), or None."""
    target = os.path.realpath(filename)
    best = None
    for ext in extensions:
        if target == ext.path or target.startswith(ext.path + os.sep):
            if best is None or len(ext.path) > len(best.path):
                best = ext
    return best


def read_disabled(config_file: str | os.PathLike) -> tuple[list[str], str]:
    """(disabled_extensions, disable_all_extensions) straight from config.json, as A1111's preload step reads them
    before the settings are loaded. A missing or unreadable file, or a bad value, means nothing disabled (with a
    warning for the last two)."""
    path = Path(config_file)
    if not path.is_file():
        return [], "none"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"[extensions] cannot read {path} ({exc}); no extension disabled by settings", file=sys.stderr)
        return [], "none"
    if not isinstance(data, dict):
        return [], "none"
    disabled = data.get("disabled_extensions") or []
    if not isinstance(disabled, list):
        print(f"[extensions] {path}: disabled_extensions must be a list of folder names; ignored", file=sys.stderr)
        disabled = []
    mode = data.get("disable_all_extensions") or "none"
    if mode not in DISABLE_ALL_CHOICES:
        print(f"[extensions] {path}: disable_all_extensions must be one of {', '.join(DISABLE_ALL_CHOICES)} "
              f"(got {mode!r}); using 'none'", file=sys.stderr)
        mode = "none"
    return [str(x) for x in disabled], mode


def effective_disable_all(args, setting: str = "none") -> str:
    """The flags win over the setting: --disable-all-extensions → "all", --disable-extra-extensions → "extra"."""
    if getattr(args, "disable_all_extensions", False) or setting == "all":
        return "all"
    if getattr(args, "disable_extra_extensions", False) or setting == "extra":
        return "extra"
    return "none"


def list_from_args(args, extensions_dir_: str | os.PathLike, builtin_dir: str | os.PathLike,
                   config_file: str | os.PathLike) -> list[Extension]:
    """The listing the app uses: config.json's choices combined with the flags (and --safe-mode)."""
    disabled, setting = read_disabled(config_file)
    return list_extensions(extensions_dir_, builtin_dir, disabled, effective_disable_all(args, setting),
                           safe_mode=bool(getattr(args, "safe_mode", False)))


def missing_requirements(ext: Extension, all_exts: list[Extension] | None = None) -> list[str]:
    """metadata.ini Requires entries that no enabled extension satisfies (``a|b``: either one); only reported."""
    enabled = {x.canonical_name for x in (extensions if all_exts is None else all_exts) if x.enabled}
    return [req for req in ext.metadata.requires if not any(alt in enabled for alt in req.split("|"))]


def check_updates_all(exts: list[Extension] | None = None, timeout: float = 30.0, workers: int = 8) -> dict[str, str]:
    """check_updates for many extensions at once (each with its own timeout, one status per row, so one slow or
    broken remote never holds up the others); {name: status}."""
    exts = [e for e in (extensions if exts is None else exts) if not e.is_builtin]
    if not exts:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(exts)))) as pool:
        return dict(zip([e.name for e in exts], pool.map(lambda e: e.check_updates(timeout), exts)))
