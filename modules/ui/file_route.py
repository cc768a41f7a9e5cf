"""GET/HEAD {subpath}/file=<path>: files by path for the page, with the rules of Gradio 3.41's route, which A1111
extensions rely on (every extension script and style sheet is injected as file=…; tag autocomplete fetches
file=tmp/… and file=/abs/…/extensions/…/tags/….csv). Gradio 6 moved its own route to /gradio_api/file= with
stricter rules, so the page needs this one.

Served: an existing regular file whose real path (symlinks followed) lies under one of the roots — the program
folder, the data folder, the extension folders (each active extension's real folder too), outputs and tmp/.
Relative paths are taken from the program folder, where A1111 runs. Never served: dot-files and anything inside a
dot-folder (.git, .env), config.json, the login file and the TLS key. Range requests work (Starlette's FileResponse).
Behind --gradio-auth the route asks for the same login as the page."""
from __future__ import annotations

import os
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse

from modules import extensions
from modules.paths import SCRIPT_DIR

# Types a browser insists on (a module script needs a JavaScript type, a style sheet text/css).
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".json": "application/json",
               ".csv": "text/csv", ".txt": "text/plain"}
ROOT_NAMES = "the program folder, the data folder, the extension folders, outputs or tmp/"


class FileRouteError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def roots(rt) -> list[str]:
    from modules.ui.page_assets import active_extensions
    paths = [SCRIPT_DIR, rt.paths.data, rt.paths.extensions, extensions.BUILTIN_DIR, rt.paths.outputs,
             SCRIPT_DIR / "tmp", *(ext.path for ext in active_extensions(rt))]
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


def blocked(rt) -> set[str]:
    """Files no request gets, wherever they are: the settings, the login file, the TLS key."""
    args = rt.args
    files = [rt.paths.settings_file, SCRIPT_DIR / "config.json", Path(rt.paths.data) / "config.json",
             getattr(args, "gradio_auth_path", None), getattr(args, "tls_keyfile", None)]
    return {os.path.realpath(f) for f in files if f}


def _inside(path: str, root: str) -> list[str] | None:
    """The parts of `path` below `root`, or None when it is not inside."""
    if path == root:
        return []
    if not path.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return path[len(root.rstrip(os.sep)) + 1:].split(os.sep)


def _hidden(path: str, all_roots: list[str]) -> bool:
    """A dot-name below a root that holds the path (the roots themselves may sit in a dot-folder)."""
    below = [parts for parts in (_inside(path, r) for r in all_roots) if parts is not None]
    return bool(below) and all(any(p.startswith(".") for p in parts) for parts in below)


def resolve(rt, requested: str) -> Path:
    """The file `requested` names, or FileRouteError(403 forbidden | 404 missing) saying why."""
    if not requested or "\x00" in requested:
        raise FileRouteError(404, f"file={requested!r}: no file by that name")
    asked = requested if os.path.isabs(requested) else os.path.join(SCRIPT_DIR, requested)
    asked = os.path.normpath(asked)
    real = os.path.realpath(asked)
    all_roots = roots(rt)
    if not any(_inside(real, r) is not None for r in all_roots):
        raise FileRouteError(403, f"file={requested}: outside the folders this route serves ({ROOT_NAMES})")
    if _hidden(asked, all_roots) or _hidden(real, all_roots):
        raise FileRouteError(403, f"file={requested}: dot-files and dot-folders (.git, .env, ...) are never served")
    if real in blocked(rt):
        raise FileRouteError(403, f"file={requested}: settings, login and key files are never served")
    if not os.path.isfile(real):
        what = "is a folder, not a file" if os.path.isdir(real) else "does not exist"
        raise FileRouteError(404, f"file={requested}: {what}")
    return Path(real)


def mount(app, rt, subpath: str | None = None) -> None:
    """Registers the route; call before Gradio's mount, which would answer every path first."""
    base = (subpath or "").rstrip("/")
    auth_required = bool(getattr(rt.args, "gradio_auth", None) or getattr(rt.args, "gradio_auth_path", None))

    @app.api_route(base + "/file={requested:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def serve_file(requested: str, request: Request):
        if auth_required and not _logged_in(request):
            raise HTTPException(401, "Not authenticated: log in to the web UI first")
        try:
            path = resolve(rt, requested)
        except FileRouteError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower()))


def _logged_in(request) -> bool:
    """The page's login: the token cookie that Gradio's /login set, checked against the mounted Gradio app."""
    for route in request.app.routes:
        gradio_app = getattr(route, "app", None)
        tokens = getattr(gradio_app, "tokens", None)
        if isinstance(tokens, dict) and hasattr(gradio_app, "cookie_id"):
            cookie = gradio_app.cookie_id
            token = request.cookies.get(f"access-token-{cookie}") or \
                request.cookies.get(f"access-token-unsecure-{cookie}")
            return token is not None and token in tokens
    return False
