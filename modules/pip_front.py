"""The pip that extension installers reach: real pip under the core constraints, plus a fallback for conflicts.

Standard library only. While an extension's install.py runs, ``python -m pip`` and ``pip`` on PATH lead here
(extension_install puts a small ``pip`` package first on PYTHONPATH and a ``pip`` script first on PATH; everything
but ``python -m pip`` still resolves to pip's own code). Why: pip's resolver fails a whole command when one
requirement conflicts with a pinned core package, e.g. sd-dynamic-prompts asks for
``dynamicprompts[attentiongrabber,magicprompt]~=0.31.0`` and the ``magicprompt`` extra needs ``transformers<5``.

- ``pip install …`` runs real pip (``PIP_CONSTRAINT`` names the core pins, so nothing pinned can change). When pip
  reports ResolutionImpossible, each requirement is tried alone; one with extras that still conflicts is installed
  without its extras, then with each extra that fits. What was left out, and the pin that blocked it, is logged.
  Exit 0 when everything was installed or left out only because of a pin, and something was installed.
- ``pip uninstall`` of a pinned package is refused (the others are uninstalled).
- Everything else goes to real pip unchanged.
Each decision is appended as one JSON line to ``$SD_WEBUI_PIP_FRONT_LOG`` for the install report.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

FRONT_DIR_ENV = "SD_WEBUI_PIP_FRONT_DIR"
LOG_ENV = "SD_WEBUI_PIP_FRONT_LOG"

# pip install options that take a value (the rest are flags); "--opt=value" is handled too.
VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-t", "--target", "-i", "--index-url",
    "--extra-index-url", "-f", "--find-links", "--no-binary", "--only-binary", "--prefix", "--root",
    "--upgrade-strategy", "--platform", "--python-version", "--implementation", "--abi", "--src", "--progress-bar",
    "--log", "--cache-dir", "--trusted-host", "-C", "--config-settings", "--global-option", "--report", "--proxy",
    "--retries", "--timeout", "--exists-action", "--cert", "--client-cert", "--use-feature", "--use-deprecated",
    "--python", "--root-user-action", "--install-option", "--build-option",
}
REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*(.*)$")
CONFLICT_MARKERS = ("ResolutionImpossible", "conflicting dependencies")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_from(constraint_value: str | None) -> dict[str, str]:
    """{canonical name: "name==version"} from the constraints file(s) named in PIP_CONSTRAINT."""
    pins: dict[str, str] = {}
    for item in (constraint_value or "").split():
        path = item
        if item.startswith("file:"):
            from urllib.request import url2pathname
            from urllib.parse import urlsplit
            path = url2pathname(urlsplit(item).path)
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = REQ_RE.match(line.split("#", 1)[0])
            if m and m.group(3).startswith("=="):
                pins[canonical(m.group(1))] = line.strip()
    return pins


def real_env() -> dict[str, str]:
    """This environment minus the front (so real pip, and whatever pip starts, never comes back here)."""
    env = dict(os.environ)
    front = env.get(FRONT_DIR_ENV)
    if front:
        for var in ("PYTHONPATH", "PATH"):
            parts = [p for p in env.get(var, "").split(os.pathsep)
                     if p and os.path.abspath(p) not in (front, os.path.join(front, "bin"))]
            env[var] = os.pathsep.join(parts)
    return env


def run_pip(args: list[str]) -> tuple[int, str]:
    """Real pip; its output goes to ours as it comes (install.py's caller captures it) and is returned too."""
    proc = subprocess.Popen([sys.executable, "-m", "pip", *args], env=real_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    return proc.wait(), "".join(lines)


def log(entry: dict) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def split_install_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(options, requirement specs); ``-r file`` is read into specs (its option lines join the options)."""
    options, reqs = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-r", "--requirement") or a.startswith("--requirement="):
            file = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if "=" in a else 2
            try:
                text = open(file, encoding="utf-8").read()
            except OSError:
                options += ["-r", file]   # pip will report it
                continue
            for line in text.splitlines():
                line = line.split(" #", 1)[0].strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("-"):
                    options += line.split(None, 1)
                else:
                    reqs.append(line)
            continue
        if a.startswith("-"):
            options.append(a)
            if a in VALUE_OPTIONS and i + 1 < len(args):
                options.append(args[i + 1])
                i += 1
        else:
            reqs.append(a)
        i += 1
    return options, reqs


def conflict_reason(output: str) -> tuple[str, list[str]]:
    """pip's "The conflict is caused by:" lines joined, and the pins (constraints) they name."""
    causes, pins, inside = [], [], False
    for line in output.splitlines():
        if line.startswith("The conflict is caused by:"):
            inside = True
            continue
        if inside:
            if not line.strip():
                if causes:
                    inside = False
                continue
            causes.append(line.strip())
            m = re.match(r"The user requested \(constraint\) (\S+)", line.strip())
            if m:
                pins.append(m.group(1))
    if not causes:
        mismatch = pinned_mismatch(output)
        if mismatch:
            return mismatch
    return "; ".join(causes) or "conflicting dependencies", sorted(set(pins))


NO_MATCH_RE = re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?([^\n]*)")


def pinned_mismatch(output: str) -> tuple[str, list[str]] | None:
    """pip's other way of refusing a pin: with the constraints in force, every version of a pinned package but ours
    is invisible, so a dependency asking for another version reads "No matching distribution found for
    transformers[torch]<5; extra == "magicprompt"" instead of a ResolutionImpossible report."""
    pins = pins_from(os.environ.get("PIP_CONSTRAINT"))
    for m in NO_MATCH_RE.finditer(output):
        pin = pins.get(canonical(m.group(1)))
        if pin:
            wanted = (m.group(1) + (m.group(2) or "") + m.group(3)).strip()
            return f"{wanted} conflicts with the pinned {pin}", [pin]
    return None


def is_conflict(output: str) -> bool:
    return any(marker in output for marker in CONFLICT_MARKERS) or pinned_mismatch(output) is not None


def install_piecewise(pre: list[str], options: list[str], reqs: list[str], first=None) -> tuple[int, dict]:
    """Try each requirement alone; a conflicting one without its extras, then with each extra that fits.
    ``first``: (exit code, output) of the whole command, reused when it had one requirement only."""
    installed, left_out, failed = [], [], []
    for req in reqs:
        rc, out = first if first and len(reqs) == 1 else run_pip([*pre, "install", *options, req])
        if rc == 0:
            installed.append(req)
            continue
        if not is_conflict(out):
            failed.append({"requirement": req, "reason": _last_error(out)})
            continue
        reason, pins = conflict_reason(out)
        m = REQ_RE.match(req)
        extras = [e.strip() for e in (m.group(2) or "").split(",") if e.strip()] if m else []
        if not extras:
            left_out.append({"requirement": req, "reason": reason, "pins": pins})
            continue
        base = f"{m.group(1)}{m.group(3)}"
        rc, out = run_pip([*pre, "install", *options, base])
        if rc != 0:
            r, p = conflict_reason(out) if is_conflict(out) else (_last_error(out), [])
            left_out.append({"requirement": req, "reason": r, "pins": p})
            continue
        installed.append(base)
        for extra in extras:
            one = f"{m.group(1)}[{extra}]{m.group(3)}"
            rc, out = run_pip([*pre, "install", *options, one])
            if rc == 0:
                installed.append(one)
            else:
                r, p = conflict_reason(out) if is_conflict(out) else (_last_error(out), [])
                left_out.append({"requirement": req, "extra": extra, "reason": r, "pins": p})
    rc = 0 if installed and not failed else 1
    for item in left_out:
        what = f"extra [{item['extra']}] of {item['requirement']}" if "extra" in item else item["requirement"]
        print(f"[pip front] left out {what}: {item['reason']}", flush=True)
    return rc, {"installed": installed, "left_out": left_out, "failed": failed}


def _last_error(output: str) -> str:
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith("ERROR")]
    return errors[-1] if errors else (output.strip().splitlines() or ["pip failed"])[-1]


def uninstall(args: list[str]) -> int:
    pins = pins_from(os.environ.get("PIP_CONSTRAINT"))
    names = [a for a in args if not a.startswith("-")]
    refused = [n for n in names if canonical(REQ_RE.match(n).group(1) if REQ_RE.match(n) else n) in pins]
    for name in refused:
        print(f"[pip front] refused: uninstalling {name} (a core package of the web UI, pinned)", flush=True)
    log({"command": "uninstall", "args": args, "refused": refused})
    rest = [a for a in args if a not in refused]
    if [a for a in rest if not a.startswith("-")]:
        return run_pip(["uninstall", *rest])[0]
    return 0


def main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "uninstall":
        i = argv.index("uninstall")
        return uninstall(argv[i + 1:])
    if command != "install":
        return subprocess.run([sys.executable, "-m", "pip", *argv], env=real_env()).returncode
    i = argv.index("install")
    rc, out = run_pip(argv)
    if rc == 0 or not is_conflict(out):
        log({"command": "install", "args": argv[i + 1:], "returncode": rc})
        return rc
    reason, pins = conflict_reason(out)
    print(f"[pip front] pip refused the whole command ({reason}); installing the requirements one by one",
          flush=True)
    options, reqs = split_install_args(argv[i + 1:])
    rc, report = install_piecewise(argv[:i], options, reqs, first=(rc, out))
    log({"command": "install", "args": argv[i + 1:], "returncode": rc, "conflict": reason, "pins": pins, **report})
    return rc
