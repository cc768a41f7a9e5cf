"""The index of available extensions (A1111's index.json): load it, mark what is installed, filter, search, sort.

Standard library only, no Gradio. Format: ``{"tags": {tag: description}, "extensions": [{"name", "url",
"description", "tags", "added", ...}]}``. The URL goes through modules.net_policy (proxy, GitHub mirror), and local
files (a path or file://) work too.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from modules import extension_manager, net_policy

DEFAULT_INDEX_URL = ("https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/"
                     "index.json")
HIDDEN_TAGS_DEFAULT = ("ads", "localization", "installed")
SORT_CHOICES = ("newest first", "oldest first", "a-z", "z-a")
LOAD_TIMEOUT = 15.0


def default_url() -> str:
    """$WEBUI_EXTENSIONS_INDEX when set (A1111's variable), else A1111's index."""
    return os.environ.get("WEBUI_EXTENSIONS_INDEX", "").strip() or DEFAULT_INDEX_URL


class IndexLoadError(Exception):
    """The index could not be loaded or is not an index; the message says so and what still works."""


@dataclass
class Entry:
    name: str
    url: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    added: str = ""
    installed: bool = False


@dataclass
class Index:
    url: str
    tags: dict[str, str]
    entries: list[Entry]


def _offline(url: str, reason: str) -> IndexLoadError:
    return IndexLoadError(f"could not load the extension index from {url}: {reason}; you can still install from a URL")


def _read(url: str, timeout: float) -> bytes:
    if "://" not in url:
        return Path(url).expanduser().read_bytes()
    with net_policy.opener().open(net_policy.rewrite_url(url), timeout=timeout) as response:
        return response.read()


def parse(data, url: str = "") -> Index:
    """An Index from the decoded JSON; entries without a name or url are skipped (the index is third-party)."""
    if not isinstance(data, dict) or not isinstance(data.get("extensions"), list):
        raise IndexLoadError(f"{url or 'the index'} is not an extension index: expected an object with an "
                          f"\"extensions\" list")
    tags = data.get("tags") if isinstance(data.get("tags"), dict) else {}
    entries = []
    for item in data["extensions"]:
        if not isinstance(item, dict) or not item.get("name") or not item.get("url"):
            continue
        item_tags = item.get("tags") if isinstance(item.get("tags"), list) else []
        entries.append(Entry(name=str(item["name"]), url=str(item["url"]),
                             description=str(item.get("description") or ""),
                             tags=[str(t) for t in item_tags], added=str(item.get("added") or "")))
    return Index(url, {str(k): str(v) for k, v in tags.items()}, entries)


def load(args, url: str | None = None, timeout: float = LOAD_TIMEOUT) -> Index:
    """Fetch and parse the index. Raises AccessDenied (the gate), or IndexLoadError with the offline message."""
    extension_manager.check_access(args)
    url = (url or "").strip() or default_url()
    try:
        raw = _read(url, timeout)
    except urllib.error.HTTPError as exc:
        raise _offline(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _offline(url, str(exc.reason)) from None
    except (OSError, ValueError) as exc:   # timeouts, refused connections, bad URLs, missing files
        raise _offline(url, str(exc) or type(exc).__name__) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexLoadError(f"{url} is not valid JSON ({exc}); you can still install from a URL") from None
    return parse(data, url)


def mark_installed(index: Index, exts) -> None:
    """Set ``installed`` on entries whose normalised URL is a listed extension's remote (or whose name is a folder)."""
    remotes = {extension_manager.normalize_remote(e.remote) for e in exts if not e.is_builtin and e.remote}
    folders = {e.canonical_name for e in exts}
    for entry in index.entries:
        entry.installed = (extension_manager.normalize_remote(entry.url) in remotes
                           or extension_manager.default_folder_name(entry.url).lower() in folders)


def select(index: Index, search: str = "", hidden_tags=HIDDEN_TAGS_DEFAULT, sort: str = "newest first") -> list[Entry]:
    """The entries to show: none with a hidden tag ("installed" is a tag here too), matching every word of
    ``search`` in name, description, URL or tags, in ``sort`` order."""
    if sort not in SORT_CHOICES:
        raise ValueError(f"sort must be one of {', '.join(SORT_CHOICES)} (got {sort!r})")
    hidden = set(hidden_tags or ())
    words = [w.lower() for w in (search or "").split()]
    out = []
    for entry in index.entries:
        tags = set(entry.tags) | ({"installed"} if entry.installed else set())
        if tags & hidden:
            continue
        text = " ".join([entry.name, entry.description, entry.url, *entry.tags]).lower()
        if all(w in text for w in words):
            out.append(entry)
    if sort in ("a-z", "z-a"):
        out.sort(key=lambda e: e.name.lower(), reverse=sort == "z-a")
    else:   # entries without a date go last either way
        dated = sorted((e for e in out if e.added), key=lambda e: e.added, reverse=sort == "newest first")
        out = dated + [e for e in out if not e.added]
    return out


def tag_choices(index: Index | None) -> list[str]:
    names = list(index.tags) if index else []
    for tag in (*HIDDEN_TAGS_DEFAULT, *(t for e in (index.entries if index else []) for t in e.tags)):
        if tag not in names:
            names.append(tag)
    return names


def web_url(url: str) -> str:
    """A link for the name column: only http(s) URLs become links."""
    return url if urllib.parse.urlsplit(url).scheme in ("http", "https") else ""
