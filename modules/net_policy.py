"""Where the app's downloads really go: proxies, a Hugging Face endpoint and a GitHub mirror, in one place.

Standard library only (launch.py uses it before the venv has packages). Every download and every git command the
app starts asks this module, so a user behind a proxy or a mirror sets it once:

- ``http_proxy`` / ``https_proxy`` / ``no_proxy`` (either case): urllib's default opener reads them; ``opener()``
  builds ours the same way so nothing bypasses them, and ``connect_target`` tells a reachability probe to try the
  proxy instead of the real host. git reads them itself.
- ``HF_ENDPOINT``: ``https://huggingface.co/...`` becomes ``$HF_ENDPOINT/...`` (huggingface_hub reads the same
  variable for weight downloads).
- ``--github-mirror PREFIX`` or ``GITHUB_MIRROR``: ``https://github.com/...`` and
  ``https://raw.githubusercontent.com/...`` become ``PREFIX + url`` (the usual "proxy prefix" mirrors); git gets the
  same rewrite through ``-c url.<PREFIX>https://github.com/.insteadOf=https://github.com/``.
"""
from __future__ import annotations

import os
import urllib.parse
import urllib.request

HF_HOST = "https://huggingface.co/"
GITHUB_PREFIXES = ("https://github.com/", "https://raw.githubusercontent.com/")

_github_mirror: str | None = None  # set from the flag by configure(); None: read GITHUB_MIRROR


def configure(github_mirror: str | None = None) -> None:
    """Remember the --github-mirror flag (it wins over GITHUB_MIRROR) and export it, so subprocesses (install.py,
    git) see the same policy."""
    global _github_mirror
    if github_mirror:
        _github_mirror = _check_prefix(github_mirror, "--github-mirror")
        os.environ["GITHUB_MIRROR"] = _github_mirror


def _check_prefix(value: str, name: str) -> str:
    value = value.strip()
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"{name} must be a URL starting with http://, https:// or file:// (got {value!r})")
    return value if value.endswith("/") else value + "/"


def github_mirror() -> str | None:
    if _github_mirror:
        return _github_mirror
    env = os.environ.get("GITHUB_MIRROR", "").strip()
    return _check_prefix(env, "GITHUB_MIRROR") if env else None


def hf_endpoint() -> str | None:
    env = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return env or None


def rewrite_url(url: str) -> str:
    """The URL to fetch instead of ``url`` under the current mirror settings (unchanged when none applies)."""
    endpoint = hf_endpoint()
    if endpoint and url.startswith(HF_HOST):
        return endpoint + "/" + url[len(HF_HOST):]
    mirror = github_mirror()
    if mirror and url.startswith(GITHUB_PREFIXES):
        return mirror + url
    return url


def git_config_args() -> list[str]:
    """``git -c`` options that send github.com through the mirror (empty without one). Given to every git
    command, so clone, fetch, ls-remote and submodules all follow it."""
    mirror = github_mirror()
    if not mirror:
        return []
    return ["-c", f"url.{mirror}https://github.com/.insteadOf=https://github.com/"]


def opener() -> urllib.request.OpenerDirector:
    """urllib opener that honours the proxy variables (read at call time, so a changed environment counts)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler(urllib.request.getproxies()))


def proxy_for(url: str) -> str | None:
    """The proxy URL urllib would use for ``url``, or None (no proxy set, or the host is in no_proxy)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme.lower())
    if not proxy or not host:
        return None
    if urllib.request.proxy_bypass(host if port is None else f"{host}:{port}"):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def connect_target(url: str) -> tuple[str | None, int | None]:
    """(host, port) a request for ``url`` first connects to: the proxy when one applies, else the URL's host."""
    target = proxy_for(url) or url
    try:
        parts = urllib.parse.urlsplit(target)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    except ValueError:
        return None, None
    return parts.hostname, port
