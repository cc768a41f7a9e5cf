"""A1111's Extra Networks page API (its modules/ui_extra_networks.py): the pages of cards beside "Generation" in
txt2img and img2img, and the names extensions use to add their own page (`register_page`, `ExtraNetworksPage` and
the item dicts it yields).

A page lists items (dicts with A1111's keys: name, filename, shorthash, preview, description, search_terms, prompt,
negative_prompt, local_preview, metadata, sort_keys, user_metadata, onclick); `create_html` turns them into the pane
the page shows. `prompt`/`negative_prompt` are JavaScript expressions (A1111's form: `quote_js("<lora:x:") + " + " +
"opts.extra_networks_default_multiplier" + ...`), evaluated in the card's onclick. The pane is built when a tab is
first opened (modules/ui/extra_networks.py serves it), never at page load: a folder of thousands of LoRAs costs
nothing until it is looked at. No Gradio here, so extensions and tests import it cheaply.
"""
from __future__ import annotations

import html
import json
import os
import threading
import urllib.parse

from modules import shared
from modules.file_lists import natural_sort_key

extra_pages: list = []
allowed_dirs: set[str] = set()
default_allowed_preview_extensions = ["png", "jpg", "jpeg", "webp", "gif"]
SORT_FIELDS = {"Default": "default", "Name": "name", "Path": "path", "Date Created": "date_created",
               "Date Modified": "date_modified"}
_fallback_options = None


def opts():
    """The settings: the runtime's when it is running, else the defaults (a tool or a test without a runtime)."""
    global _fallback_options
    if shared.bound():
        return shared.runtime().options
    if _fallback_options is None:
        from modules.options import Options
        _fallback_options = Options(None)
    return _fallback_options


def setting(key: str):
    """A setting's value; for an A1111 setting nobody registered (the Lora extension's, before it loads), A1111's
    default."""
    from modules.options import OptionError
    try:
        return opts().get(key)
    except OptionError:
        from modules.a1111_defaults import DEFAULTS
        return DEFAULTS.get(key)


def register_page(page) -> None:
    """Adds a page of cards to both tabs (extensions: call it from an on_before_ui callback, as in A1111)."""
    extra_pages.append(page)
    allowed_dirs.clear()
    allowed_dirs.update(d for p in extra_pages for d in p.allowed_directories_for_previews() if d)


def initialize() -> None:
    extra_pages.clear()
    allowed_dirs.clear()


intialize = initialize  # A1111's earlier spelling, still called by old extensions


def find_page(name: str):
    """The registered page whose name ("lora", "textual inversion") or tab name ("textual_inversion") is `name`."""
    for page in extra_pages:
        if name in (page.name, page.extra_networks_tabname):
            return page
    return None


def quote_js(s) -> str:
    return json.dumps(s, ensure_ascii=False)


def allowed_preview_extensions() -> list[str]:
    """png, jpg, jpeg, webp, gif and the samples format, in the order previews are looked for."""
    fmt = str(setting("samples_format") or "png").lower()
    return default_allowed_preview_extensions + ([fmt] if fmt not in default_allowed_preview_extensions else [])


def pages_in_preferred_order(pages: list) -> list:
    """A1111's ui_extra_networks_tab_reorder: pages whose name contains an earlier entry come first."""
    order = [x.lower().strip() for x in str(setting("ui_extra_networks_tab_reorder") or "").split(",") if x.strip()]

    def score(item):
        index, page = item
        rank = next((i for i, part in enumerate(order) if part in page.name.lower()), len(order))
        return rank, index
    return [page for _index, page in sorted(enumerate(pages), key=score)]


def get_user_metadata(filename: str | None) -> dict:
    """`name.json` beside the file (the metadata editor's file, A1111's key names); {} when there is none."""
    if not filename:
        return {}
    try:
        with open(os.path.splitext(filename)[0] + ".json", encoding="utf8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class DirListing:
    """Which files exist, read as one listing per folder (A1111's MassFileLister): a pane of 2,000 cards asks about
    ten preview names each, and one scandir per folder answers them all instead of 20,000 stat calls."""

    def __init__(self):
        self._dirs: dict[str, dict[str, os.DirEntry]] = {}

    def entries(self, folder: str) -> dict:
        """The folder's files by lower-cased name."""
        if folder not in self._dirs:
            try:
                with os.scandir(folder or ".") as it:
                    self._dirs[folder] = {e.name.lower(): e for e in it}
            except OSError:
                self._dirs[folder] = {}
        return self._dirs[folder]

    def find(self, path: str) -> os.DirEntry | None:
        folder, name = os.path.split(path)
        entry = self.entries(folder).get(name.lower())
        return entry if entry is not None and entry.name == name else None

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def mctime(self, path: str) -> tuple[float, float]:
        entry = self.find(path)
        try:
            st = entry.stat() if entry is not None else os.stat(path)
        except OSError:
            return 0.0, 0.0
        return st.st_mtime, st.st_ctime

    def reset(self) -> None:
        self._dirs.clear()


class ExtraNetworksPage:
    """One tab of cards. Subclasses give `list_items`, `create_item` and `allowed_directories_for_previews`."""

    # the fields of the metadata editor: (A1111 key in name.json, label, kind)
    user_metadata_fields = (("description", "Description", "text"), ("notes", "Notes", "text"))

    def __init__(self, title: str):
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")
        self.id_page = self.extra_networks_tabname
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata: dict = {}
        self.items: dict = {}
        self.lister = DirListing()
        self.lock = threading.RLock()
        self._snapshot: dict | None = None   # settings and folders, read once per pane build (2,000 cards ask)

    # --- what subclasses give ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        pass

    def create_item(self, name, index=None, enable_filter=True):
        raise NotImplementedError()

    def list_items(self):
        raise NotImplementedError()

    def allowed_directories_for_previews(self) -> list:
        return []

    def warm(self) -> None:
        """Ours, not A1111's: slow groundwork (a folder scan) done in the background once the page is built, so
        the first opening of the tab does not wait for it."""

    # --- helpers items are built with -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The settings and folders cards are built with: read once while a pane is built, fresh otherwise."""
        if self._snapshot is not None:
            return self._snapshot
        dirs = [os.path.abspath(str(d)).rstrip(os.sep) for d in self.allowed_directories_for_previews() if d]
        keys = ("extra_networks_card_height", "extra_networks_card_width", "extra_networks_card_text_scale",
                "extra_networks_card_show_desc", "extra_networks_card_description_is_html", "samples_format")
        return {"dirs": dirs, "preview_extensions": allowed_preview_extensions(), **{k: setting(k) for k in keys}}

    def read_user_metadata(self, item: dict, use_cache: bool = True) -> None:
        filename = item.get("filename")
        known = not use_cache or not filename or self.lister.exists(os.path.splitext(filename)[0] + ".json")
        metadata = get_user_metadata(filename) if known else {}
        if metadata.get("description") is not None:
            item["description"] = metadata["description"]
        item["user_metadata"] = metadata

    def link_preview(self, filename: str) -> str:
        quoted = urllib.parse.quote(filename.replace("\\", "/"))
        mtime, _ = self.lister.mctime(filename)
        return f"./sd_extra_networks/thumb?filename={quoted}&mtime={mtime}"

    def search_terms_from_path(self, filename, possible_directories=None) -> str:
        """The file's path from its folder's parent ("Lora/styles/ink.safetensors"), which search matches."""
        abspath = os.path.abspath(filename)
        dirs = possible_directories if possible_directories is not None else self.snapshot()["dirs"]
        for parentdir in dirs:
            parent = os.path.dirname(os.path.abspath(parentdir)).rstrip(os.sep)
            if abspath.startswith(parent + os.sep):
                return abspath[len(parent) + 1:]   # = relpath, without its cost (2,000 cards)
        return ""

    def get_sort_keys(self, path) -> dict:
        path = str(path)
        mtime, ctime = self.lister.mctime(path)
        return {"date_created": int(ctime), "date_modified": int(mtime), "name": os.path.basename(path).lower(),
                "path": path.lower()}

    def find_preview(self, path: str) -> str | None:
        """`path.png`, `path.preview.png` (and the other image types) beside the file, as a thumb link."""
        folder, base = os.path.split(path)
        entries = self.lister.entries(folder)   # one listing answers every candidate name
        for ext in self.snapshot()["preview_extensions"]:
            for candidate in (f"{base}.{ext}", f"{base}.preview.{ext}"):
                entry = entries.get(candidate.lower())
                if entry is not None and entry.name == candidate:
                    return self.link_preview(os.path.join(folder, candidate))
        return None

    def find_description(self, path: str) -> str | None:
        for candidate in (f"{path}.txt", f"{path}.description.txt"):
            if self.lister.exists(candidate):
                try:
                    with open(candidate, encoding="utf-8", errors="replace") as f:
                        return f.read()
                except OSError:
                    pass
        return None

    def user_metadata_file(self, item: dict) -> str:
        return os.path.splitext(item["filename"])[0] + ".json"

    # --- HTML -------------------------------------------------------------------------------------------------
    def create_item_html(self, tabname: str, item: dict, template=None) -> str:
        """One card (A1111's classes: .card, .preview, .button-row, .actions > .name, .description). Its buttons
        carry no handlers of their own: the page script handles their clicks (less markup per card)."""
        snap = self.snapshot()
        style = "".join([f"height: {snap['extra_networks_card_height']}px;" if snap["extra_networks_card_height"]
                         else "", f"width: {snap['extra_networks_card_width']}px;"
                         if snap["extra_networks_card_width"] else ""])
        scale = float(snap["extra_networks_card_text_scale"] or 1)
        style += f"font-size: {scale * 100:g}%;" if scale != 1 else ""
        preview = item.get("preview")
        image = (f'<img src="{html.escape(preview)}" class="preview" loading="lazy" alt="">' if preview
                 else '<div class="no-preview">no preview</div>')
        onclick = item.get("onclick")
        if onclick is None:
            onclick = html.escape(f"cardClicked({quote_js(tabname)}, {item.get('prompt') or quote_js('')}, "
                                  f"{item.get('negative_prompt') or quote_js('')}, "
                                  f"{str(self.allow_negative_prompt).lower()})")
        buttons = (f'<div class="copy-path-button card-button" title="Copy path to clipboard" '
                   f'data-clipboard-text="{html.escape(item["filename"])}"></div>')
        if item.get("metadata"):
            buttons += '<div class="metadata-button card-button" title="Show internal metadata"></div>'
        buttons += '<div class="edit-button card-button" title="Edit metadata"></div>'
        sort_keys = " ".join(f'data-sort-{k}="{html.escape(str(v))}"' for k, v in item.get("sort_keys", {}).items())
        terms = item.get("search_terms")
        if terms is None:
            terms = [item.get("search_term", "")]
        search_html = "".join(f"<span class='hidden search_terms'>{html.escape(str(t))}</span>" for t in terms if t)
        description = item.get("description") or "" if snap["extra_networks_card_show_desc"] else ""
        if not snap["extra_networks_card_description_is_html"]:
            description = html.escape(description)
        classes = "card" + (" card-skipped" if item.get("skipped") else "")
        badge = f"<span class='card-badge'>{html.escape(str(item['skipped']))}</span>" if item.get("skipped") else ""
        style_attr = f' style="{style}"' if style else ""
        return (f'<div class="{classes}"{style_attr} onclick="{onclick}" data-name="{html.escape(item["name"])}" '
                f'data-path="{html.escape(item.get("local_path", ""))}" {sort_keys}>{image}'
                f'<div class="button-row">{buttons}</div>'
                f'<div class="actions"><div class="additional">{search_html}</div>{badge}'
                f'<span class="name">{html.escape(item["name"])}</span>'
                f'<span class="description">{description}</span></div></div>')

    def _local_path(self, filename: str) -> str:
        """The file's folder below its root ("styles/ink"), '' at the top; the folder list filters on it."""
        if not filename:
            return ""
        abspath = os.path.abspath(filename)
        for root in self.snapshot()["dirs"]:
            if abspath.startswith(root + os.sep):
                return os.path.dirname(abspath[len(root) + 1:]).replace(os.sep, "/")
        return ""

    def create_dirs_view_html(self, tabname: str) -> str:
        """The subfolders that hold items, as buttons (A1111's "Dirs" view); a click filters the cards."""
        folders: set[str] = set()
        for item in self.items.values():
            parts = item.get("local_path", "").split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts) + 1) if parts[0])
        show_hidden = setting("extra_networks_show_hidden_directories")
        folders = {f for f in folders if show_hidden or not any(p.startswith(".") for p in f.split("/"))}
        if not folders:
            return ""
        buttons = ["<button class='extra-network-dir search-all' data-path=''>all</button>"]
        buttons += [f"<button class='extra-network-dir' data-path='{html.escape(f, quote=True)}' "
                    f"style='padding-left: {0.6 + f.count('/')}em'>{html.escape(f)}/</button>"
                    for f in sorted(folders, key=natural_sort_key)]
        return "".join(buttons)

    def create_card_view_html(self, tabname: str, *, none_message=None) -> str:
        cards = [self.create_item_html(tabname, item) for item in self.items.values()]
        if not cards:
            dirs = "".join(f"<li>{html.escape(str(d))}</li>" for d in self.allowed_directories_for_previews())
            return none_message or (f"<div class='nocards'><h1>Nothing here. Add some content to the following "
                                    f"directories:</h1><ul>{dirs}</ul></div>")
        return "".join(cards)

    def create_html(self, tabname: str, *, empty: bool = False) -> str:
        """The whole pane: search, sort, direction, folder view toggle, refresh, folders and cards."""
        with self.lock:
            self.lister.reset()
            self._snapshot = None
            self._snapshot = self.snapshot()
            try:
                return self._create_html(tabname, empty)
            finally:
                self._snapshot = None

    def _create_html(self, tabname: str, empty: bool) -> str:
        self.metadata = {}
        items = [] if empty else list(self.list_items())
        self.items = {x["name"]: x for x in self._in_setting_order(items)}
        for item in self.items.values():
            if item.get("metadata"):
                self.metadata[item["name"]] = item["metadata"]
            if "user_metadata" not in item:
                self.read_user_metadata(item)
            item.setdefault("local_path", self._local_path(item.get("filename", "")))
        return self._pane(tabname, self.create_card_view_html(tabname, none_message="Loading..." if empty
                                                               else None), self.create_dirs_view_html(tabname))

    @staticmethod
    def _sort_setting() -> tuple[str, bool]:
        field = SORT_FIELDS.get(setting("extra_networks_card_order_field"), "path")
        return field, setting("extra_networks_card_order") == "Descending"

    def _in_setting_order(self, items: list) -> list:
        """The items in the order the settings ask for, so the page shows them without moving 2,000 nodes; the
        page re-sorts (in its own collation) only when the user picks another order."""
        field, descending = self._sort_setting()

        def key(item):
            value = item.get("sort_keys", {}).get(field)
            return (0, value, "") if isinstance(value, (int, float)) else (1, 0, natural_sort_key(str(value or "")))
        return sorted(items, key=key, reverse=descending)

    def _pane(self, tabname: str, cards: str, dirs: str) -> str:
        ident = f"{tabname}_{self.extra_networks_tabname}"
        field = setting("extra_networks_card_order_field")
        options = "".join(f"<option value='{key}'{' selected' if label == field else ''}>{label}</option>"
                          for label, key in SORT_FIELDS.items())
        direction = "Descending" if setting("extra_networks_card_order") == "Descending" else "Ascending"
        tree = bool(setting("extra_networks_tree_view_default_enabled"))
        sorted_by = "|".join(map(str, self._sort_setting()))   # the order the cards come in (the page skips it)
        return (f"<div class='extra-network-controls' id='{ident}_controls'>"
                f"<input type='search' class='extra-network-search' id='{ident}_extra_search' "
                f"placeholder='Search' aria-label='Search'>"
                f"<select class='extra-network-sort' id='{ident}_extra_sort' title='Sort by'>{options}</select>"
                f"<button class='extra-network-sortdir' id='{ident}_extra_sortdir' data-sortdir='{direction}' "
                f"title='Sort direction'>{'▲' if direction == 'Ascending' else '▼'}</button>"
                f"<button class='extra-network-tree-toggle' id='{ident}_extra_tree_view' "
                f"aria-pressed='{str(tree).lower()}' title='Show folders'>🗀</button>"
                f"<button class='extra-network-refresh' id='{ident}_extra_refresh' title='Refresh'>🔄</button>"
                f"</div><div class='extra-network-body'>"
                f"<div class='extra-network-dirs' id='{ident}_dirs'{'' if tree and dirs else ' hidden'}>{dirs}</div>"
                f"<div class='extra-network-cards' id='{ident}_cards' data-sorted='{sorted_by}'>"
                f"{cards}</div></div>")
