"""The UI side of localization: the maps served to the page, the language switch in the top bar, and the script
(localization.js) that translates the open page live when the language changes. The files themselves are read by
modules/localization.py."""
from __future__ import annotations

import html
import json
from pathlib import Path

import gradio as gr

from modules.localization import ENGLISH

SCRIPT = Path(__file__).with_name("localization.js")


def base_path(subpath: str | None) -> str:
    """Where the routes live: beside the Gradio page (which --subpath may move)."""
    return (subpath or "").rstrip("/")


def mount_routes(app, rt, subpath: str | None = None) -> None:
    """GET {base}/localizations (current name, names, errors) and GET {base}/localizations/{name}.json (one map).
    Registered before Gradio's mount so they are matched first."""
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse

    base = base_path(subpath)

    @app.get(f"{base}/localizations", include_in_schema=False)
    def localizations_state():
        return {"current": rt.options.localization, "names": rt.localizations.names(),
                "errors": [str(e) for e in rt.localizations.errors()]}

    @app.get(base + "/localizations/{name}.json", include_in_schema=False)
    def localization_map(name: str):
        loc = rt.localizations.get(name)
        if loc is None:
            raise HTTPException(404, f"no localization {name!r}; available: {rt.localizations.names()}")
        body = dict(loc.translations)
        if loc.rtl:
            body["rtl"] = True
        return JSONResponse(body, headers={"Cache-Control": "no-cache"})


def head(subpath: str | None = None) -> str:
    """The <head> addition: the script runs before Gradio renders, so the first paint can already be translated."""
    config = json.dumps({"base": base_path(subpath)})
    return (f"<script>window.SD_LOCALIZATION_CONFIG = {config};</script>\n"
            f"<script>{SCRIPT.read_text(encoding='utf-8')}</script>")


def switch_choices(rt) -> list[tuple[str, str]]:
    return [("English", ENGLISH)] + [(name, name) for name in rt.localizations.names()]


def errors_html(rt) -> str:
    errors = rt.localizations.errors()
    if not errors:
        return ""
    lines = "".join(f"<div>Localization file skipped: {html.escape(str(e.path))} line {e.line} column {e.column}: "
                    f"{html.escape(e.message)}</div>" for e in errors)
    return f'<div class="sd-error" role="alert">{lines}</div>'


def switch(rt) -> gr.Dropdown:
    """The language switch for the top bar (values are localization names; "None" is shown as English)."""
    return gr.Dropdown(switch_choices(rt), value=lambda: rt.options.localization, label="Language",
                       elem_id="localization_switch", scale=1, min_width=120)


def errors_box(rt) -> gr.HTML:
    """Where localization files that could not be read are reported (file, line, column), on every page load."""
    return gr.HTML(lambda: errors_html(rt), elem_id="localization_errors")


def wire(rt, demo: gr.Blocks, language: gr.Dropdown, status, errors: gr.HTML, settings: dict | None = None) -> None:
    """Switching changes the open page at once (in the browser) and saves the choice in config.json; Settings →
    Localization and the switch follow each other."""
    setting = (settings or {}).get("components", {}).get("localization")
    applied = (settings or {}).get("applied")

    def choose(name):
        try:
            rt.options.set("localization", name)
        except Exception as exc:  # noqa: BLE001 - shown in the page; nothing else changes
            from modules.ui import common
            return common.error_html(str(exc)), gr.update()
        return "", gr.update(value=name)

    # .change also fires when Settings → Apply updates the switch, so every change reaches the page.
    language.change(None, language, None, js="(name) => { window.sdLocalization && window.sdLocalization.use(name); }")
    if setting is not None:
        language.input(choose, language, [status, setting])
    else:
        language.input(lambda name: choose(name)[0], language, status)
    if applied is not None:
        applied.then(lambda: rt.options.localization, None, language)
    demo.load(lambda: (gr.update(choices=switch_choices(rt), value=rt.options.localization), errors_html(rt)),
              None, [language, errors])
