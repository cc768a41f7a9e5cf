"""The page side of A1111 extensions: what goes into the page's <head> (A1111's globals, every active extension's
javascript/*.js and *.mjs, their style.css and user.css) and the hidden #settings_json box that fills `opts`.

Order, as A1111 injects it: window.localization, the globals, extension scripts (builtins first, then user
extensions, each extension's files sorted), modules, then a last script that tells the globals every script ran
(only then does onUiLoaded fire, so callbacks that extension scripts register are never missed). Gradio 6 puts
`head=` into the page with async=false, so external scripts run in this order. Style sheets go at the end of <body>,
after every style sheet Gradio adds to <head> (also the ones it loads later per component), as A1111's do.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from modules import extensions
from modules.paths import SCRIPT_DIR
from modules.ui import localization_ui, settings_tab

log = logging.getLogger("sd.ui")

JS_DIR = Path(__file__).with_name("js")
GLOBALS_JS = JS_DIR / "a1111_globals.js"          # gradioApp(), onUiLoaded(), opts, ... (inline: runs first)
PROMPT_DOM_JS = JS_DIR / "a1111_prompt_dom.js"    # #txt2img_prompt > label > textarea, as in Gradio 3 (inline)
SCRIPTS_DONE_JS = JS_DIR / "a1111_scripts_done.js"  # runs after every extension script (external, last)
EXTRA_NETWORKS_JS = JS_DIR / "extra_networks.js"      # the Extra Networks cards (external, before extensions')
EXTRA_NETWORKS_CSS = JS_DIR / "extra_networks.css"    # their style, before extension style sheets and user.css
SETTINGS_JSON_ID = "settings_json"


def active_extensions(rt) -> list:
    """The enabled extensions in load order. The extension host lists them at start; a runtime built without it
    (a tool, a test) gets the listing made here from the same folders and settings."""
    if Path(extensions.extensions_dir) != Path(rt.paths.extensions):
        extensions.list_from_args(rt.args, rt.paths.extensions, extensions.BUILTIN_DIR, rt.paths.settings_file)
    return extensions.active()


def web_path(path: str | Path) -> str:
    """A1111's `file=<path>?<mtime>`: relative to the program folder when inside it, else absolute; the mtime makes
    a browser fetch a changed file again. URL-quoted, so any file name survives."""
    path = Path(path)
    try:
        shown = path.resolve().relative_to(SCRIPT_DIR).as_posix()
    except ValueError:
        shown = path.resolve().as_posix()
    return f"file={quote(shown, safe='/:')}?{path.stat().st_mtime_ns // 1_000_000}"


def extension_files(exts, subdir: str, suffix: str) -> list[Path]:
    return [Path(f.path) for ext in exts for f in ext.list_files(subdir, suffix)]


def style_sheets(rt, exts) -> list[Path]:
    """Each active extension's style.css in load order, then user.css in the data folder."""
    files = [Path(ext.path) / "style.css" for ext in exts]
    files.append(Path(rt.paths.data) / "user.css")
    return [f for f in files if f.is_file()]


def _script(src: str, **attrs: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{html.escape(value)}"' for name, value in attrs.items())
    return f'<script src="{html.escape(src)}"{extra}></script>'


def _inline(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    if "</script" in text.lower():  # our own files; this guards the inline form
        raise ValueError(f"{path} contains '</script' and cannot be inlined")
    return f'<script data-sd="{name}">{text}</script>'


def head(rt, subpath: str | None = None) -> str:
    """The whole <head> addition for Gradio's `head=`: localization, then what extensions need."""
    exts = active_extensions(rt)
    sheets = [EXTRA_NETWORKS_CSS, *style_sheets(rt, exts)]
    config = {"css": [web_path(f) for f in sheets], "theme": getattr(rt.args, "theme", None),
              "settingsId": SETTINGS_JSON_ID}
    parts = [localization_ui.head(subpath),
             f"<script>window.SD_PAGE_CONFIG = {json.dumps(config)};</script>",
             _inline(GLOBALS_JS, "a1111-globals"),
             _inline(PROMPT_DOM_JS, "a1111-prompt-dom"),
             _script(web_path(EXTRA_NETWORKS_JS), data_sd="extra-networks")]
    parts += [_script(web_path(f), data_sd="extension-script") for f in extension_files(exts, "javascript", ".js")]
    parts += [_script(web_path(f), type="module", data_sd="extension-module")
              for f in extension_files(exts, "javascript", ".mjs")]
    # onerror: should it fail to load, onUiLoaded must still fire
    parts.append(_script(web_path(SCRIPTS_DONE_JS), data_sd="scripts-done",
                         onerror="window.sdA1111 && window.sdA1111.scriptsDone()"))
    return "\n".join(parts)


def settings_json_text(rt, overlay: dict | None = None) -> str:
    data = rt.options.as_dict()
    data.update(overlay or {})
    return json.dumps(data, default=str, ensure_ascii=False)


def settings_json(rt) -> gr.Textbox:
    """The hidden box holding the settings as JSON (A1111's #settings_json): the page script reads it into `opts`
    and watches it for changes. A textarea (lines > 1), as A1111 extensions look for one; nothing in it is
    translated (sd-no-translate)."""
    return gr.Textbox(lambda: settings_json_text(rt), elem_id=SETTINGS_JSON_ID, lines=2, visible="hidden",
                      show_label=False, interactive=False, elem_classes=["sd-no-translate"])


def wire_settings_json(rt, box: gr.Textbox, settings: dict, controls: dict) -> None:
    """Keeps #settings_json current: after Settings → Apply, and when a top-bar control (setting key → component)
    is changed, with the value picked, so the page does not wait for the change to be saved."""
    applied = settings.get("applied")
    if applied is not None:
        applied.then(lambda: settings_json_text(rt), None, box, show_progress="hidden")
    for key, control in controls.items():
        control.input(lambda value, k=key: settings_json_text(rt, _checked(rt, k, value)), control, box,
                      show_progress="hidden", queue=False)


def _checked(rt, key: str, value) -> dict:
    try:
        return {key: rt.options.validate(key, settings_tab.coerce(rt.options.info[key], value))}
    except Exception:  # noqa: BLE001 - a refused value is reported by the setting's own handler
        return {}
