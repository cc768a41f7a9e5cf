"""Extra Networks in the page: a tab per registered page beside "Generation" in txt2img and img2img, and the routes
the page script (js/extra_networks.js) uses.

Lazy by design: each tab holds only an empty pane (a few bytes of page config); the first time the tab is shown the
script asks GET /sd_extra_networks/pane for its cards (search, sort, folders and refresh work on them in the
browser). Previews come from A1111's /sd_extra_networks/thumb, which serves images inside the pages' preview folders
and nothing else. The metadata editor reads and writes through /sd_extra_networks/user-metadata.
"""
from __future__ import annotations

import html
import logging
import os
import threading

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from modules import ui_extra_networks
from modules.ui_extra_networks import extra_pages, find_page, pages_in_preferred_order

log = logging.getLogger("sd.ui")
ROUTE = "/sd_extra_networks"


def register_default_pages() -> None:
    """Textual Inversion, Hypernetworks, Checkpoints (A1111's default pages; Lora comes from its extension)."""
    from modules.ui_extra_networks_checkpoints import ExtraNetworksPageCheckpoints
    from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks
    from modules.ui_extra_networks_textual_inversion import ExtraNetworksPageTextualInversion
    ui_extra_networks.initialize()
    for page in (ExtraNetworksPageTextualInversion(), ExtraNetworksPageHypernetworks(),
                 ExtraNetworksPageCheckpoints()):
        ui_extra_networks.register_page(page)


def warm_up() -> threading.Thread:
    """Runs each page's warm() (the LoRA folder scan) in a background thread, after the page is built: start-up
    does not wait for it, and the first opening of a tab finds the files listed."""
    def run(pages):
        for page in pages:
            try:
                page.warm()
            except Exception:  # noqa: BLE001 - the tab's own request reports the problem again when opened
                log.exception("Extra Networks page %r: warming up failed", page.title)
    thread = threading.Thread(target=run, args=(list(extra_pages),), name="extra-networks-warm-up", daemon=True)
    thread.start()
    return thread


def create_tabs(tabname: str) -> list:
    """Call inside the gr.Tabs that holds "Generation": one tab per page, each with an empty pane the script fills
    when the tab is first opened."""
    import gradio as gr
    tabs = []
    for page in pages_in_preferred_order(list(extra_pages)):
        ident = f"{tabname}_{page.extra_networks_tabname}"
        with gr.Tab(page.title, id=ident, elem_id=ident, elem_classes=["extra-page"]) as tab:
            gr.HTML(f"<div class='extra-network-pane' data-tabname='{html.escape(tabname, quote=True)}' "
                    f"data-page='{html.escape(page.extra_networks_tabname, quote=True)}'></div>",
                    elem_id=f"{ident}_cards_html", padding=False)
        tabs.append(tab)
    return tabs


# --- what the routes answer (plain functions, so the unit tests call them without a server) ---------------------
class RouteError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def page_or_404(name: str):
    page = find_page(name or "")
    if page is None:
        known = [p.extra_networks_tabname for p in extra_pages]
        raise RouteError(404, f"page={name!r}: no such Extra Networks page; pages: {known}")
    return page


def pane_html(page_name: str, tabname: str, refresh: bool = False) -> str:
    page = page_or_404(page_name)
    if tabname not in ("txt2img", "img2img"):
        raise RouteError(400, f"tabname={tabname!r}: expected txt2img or img2img")
    try:
        if refresh:
            page.refresh()
        return page.create_html(tabname)
    except Exception as exc:  # noqa: BLE001 - an extension's page must not break the others; shown in its pane
        log.exception("Extra Networks page %r could not be built", page.title)
        return f"<div class='sd-error'>{html.escape(page.title)}: {html.escape(str(exc))}</div>"


def single_card(page_name: str, tabname: str, name: str) -> str:
    """One card built again from its file (after its metadata was edited; A1111's get-single-card)."""
    page = page_or_404(page_name)
    with page.lock:
        page.lister.reset()   # the file's name.json and preview may be new since the pane was built
        item = page.create_item(name, enable_filter=False)
        if item is None:
            raise RouteError(404, f"name={name!r}: no such item on the {page.title} page")
        page.read_user_metadata(item, use_cache=False)
        item.setdefault("local_path", page._local_path(item.get("filename", "")))
        page.items[name] = item
        return page.create_item_html(tabname, item)


def preview_roots() -> list[str]:
    return list(dict.fromkeys(os.path.realpath(d) for p in extra_pages
                              for d in p.allowed_directories_for_previews() if d))


def thumb_path(filename: str) -> str:
    """The preview image `filename` names, if it is an image inside a page's preview folders (else 403/404)."""
    if not filename or "\x00" in filename:
        raise RouteError(404, "filename: empty")
    real = os.path.realpath(filename)
    roots = preview_roots()
    if not any(real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise RouteError(403, f"filename={filename}: not inside the Extra Networks folders ({', '.join(roots)})")
    ext = os.path.splitext(real)[1].lower().lstrip(".")
    if ext not in ui_extra_networks.allowed_preview_extensions():
        raise RouteError(403, f"filename={filename}: only images are served "
                              f"({', '.join(ui_extra_networks.allowed_preview_extensions())})")
    if not os.path.isfile(real):
        raise RouteError(404, f"filename={filename}: no such file")
    return real


def file_metadata(page_name: str, item: str) -> dict:
    """A1111's /sd_extra_networks/metadata: {"metadata": indented JSON text} or {} when the item has none."""
    from modules.ui.extra_networks_metadata import file_metadata_text
    page = find_page(page_name or "")
    text = file_metadata_text(page.metadata.get(item)) if page is not None else None
    return {"metadata": text} if text else {}


def mount_routes(app, rt, subpath: str | None = None) -> None:
    """GET thumb, pane, metadata, get-single-card, user-metadata; POST user-metadata. Behind --gradio-auth they ask
    for the page's login. Call before Gradio's mount, which answers every path."""
    from modules.ui import extra_networks_metadata as editor
    from modules.ui.file_route import _logged_in

    base = (subpath or "").rstrip("/") + ROUTE
    auth_required = bool(getattr(rt.args, "gradio_auth", None) or getattr(rt.args, "gradio_auth_path", None))

    def guarded(fn):
        def call(request: Request, *args):
            if auth_required and not _logged_in(request):
                raise HTTPException(401, "Not authenticated: log in to the web UI first")
            try:
                return fn(*args)
            except RouteError as exc:
                raise HTTPException(exc.status, str(exc)) from None
            except editor.MetadataError as exc:
                raise HTTPException(422, str(exc)) from None
        return call

    @app.get(base + "/thumb", include_in_schema=False)
    def thumb(request: Request, filename: str = "", mtime: str = ""):
        path = guarded(thumb_path)(request, filename)
        return FileResponse(path, headers={"Accept-Ranges": "bytes", "Cache-Control": "max-age=86400"})

    @app.get(base + "/pane", include_in_schema=False)
    def pane(request: Request, page: str = "", tabname: str = "txt2img", refresh: bool = False):
        return HTMLResponse(guarded(pane_html)(request, page, tabname, refresh))

    @app.get(base + "/metadata", include_in_schema=False)
    def metadata(request: Request, page: str = "", item: str = ""):
        return JSONResponse(guarded(file_metadata)(request, page, item))

    @app.get(base + "/get-single-card", include_in_schema=False)
    def get_single_card(request: Request, page: str = "", tabname: str = "txt2img", name: str = ""):
        return JSONResponse({"html": guarded(single_card)(request, page, tabname, name)})

    @app.get(base + "/user-metadata", include_in_schema=False)
    def read_user_metadata(request: Request, page: str = "", item: str = ""):
        return JSONResponse(guarded(lambda p, i: editor.editor_data(page_or_404(p), i))(request, page, item))

    @app.post(base + "/user-metadata", include_in_schema=False)
    async def write_user_metadata(request: Request):
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "expected a JSON body {page, item, tabname, values}") from None

        def save(body):
            if not isinstance(body, dict):
                raise editor.MetadataError("expected a JSON object {page, item, tabname, values}")
            page = page_or_404(str(body.get("page", "")))
            name, tabname = str(body.get("item", "")), str(body.get("tabname", "txt2img"))
            with page.lock:
                saved = editor.save(page, name, body.get("values"))
            return {"user_metadata": saved, "html": single_card(page.extra_networks_tabname, tabname, name)}
        return JSONResponse(guarded(save)(request, body))
