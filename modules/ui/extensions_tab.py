"""The Extensions tab (A1111's layout and element ids where they exist): Installed (enable, update, Apply and
restart), Available (an index of extensions), Install from URL.

Widgets only: what the buttons do is in modules.extension_manager and modules.extension_index, which also refuse
every action on a server others can reach (the gate). The tab shows why instead of hiding the buttons.
"""
from __future__ import annotations

import html
import logging

import gradio as gr

from modules import extension_index, extension_manager, extensions
from modules.ui import common

log = logging.getLogger("sd.ui")

CSS = """
#extensions_installed_table table, #extensions_available_table table { width: 100%; border-collapse: collapse; }
#extensions_installed_table th, #extensions_installed_table td,
#extensions_available_table th, #extensions_available_table td { padding: 4px 6px; border-bottom: 1px solid #8884;
  text-align: left; vertical-align: top; }
.ext-off { opacity: 0.6; }
.ext-reason, .ext-tags { font-size: 0.85em; opacity: 0.8; }
.ext-error { color: #b91c1c; font-size: 0.85em; white-space: pre-wrap; }
#extensions_access { color: #92400e; background: #fef3c7; padding: 8px; border-radius: 6px; }
"""

# After "Apply and restart UI": wait until the page is served by a new process (its boot marker differs), then reload.
_WAIT_FOR_RESTART_JS = """
async (message) => {
  if (!message || !message.includes('data-restarting')) return [];
  const old = 'sd-ext-boot-%s';
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    try {
      const response = await fetch(location.href, {cache: 'no-store'});
      const text = response.ok ? await response.text() : '';
      if (text.includes('sd-ext-boot-') && !text.includes(old)) { location.reload(); return []; }
    } catch (e) { /* the server is still down */ }
  }
}
"""


def _esc(value) -> str:
    return html.escape(str(value or ""))


def _message(text: str, error: bool = False) -> str:
    return common.error_html(text) if error else f'<div class="sd-info">{_esc(text)}</div>'


def _errors_cell(row: extension_manager.Row) -> str:
    out = []
    for phase, text in row.errors.items():
        lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
        out.append(f'<div class="ext-error" title="{_esc(text)}"><b>{_esc(phase)}</b>: '
                   f'{_esc(lines[-1] if lines else "")}</div>')
    return "".join(out)


def installed_html(exts) -> str:
    rows = extension_manager.installed_rows(exts)
    if not rows:
        return "<p>No extensions installed. Use Available or Install from URL.</p>"
    head = ("<tr><th>Extension</th><th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>Update</th>"
            "<th>Errors</th></tr>")
    body = []
    for r in rows:
        state = "on" if r.enabled else "off"
        reason = f'<div class="ext-reason">{_esc(r.disabled_reason)}</div>' if r.disabled_reason else ""
        # names, URLs, branches and commits are left untranslated (.sd-names); "built-in" and "local" are words
        remote = (f'<a class="sd-names" href="{_esc(r.url)}" target="_blank" rel="noopener">{_esc(r.remote)}</a>'
                  if r.url else _esc(r.remote))
        body.append(f'<tr class="ext-{state}" data-extension="{_esc(r.name)}" data-enabled="{str(r.enabled).lower()}">'
                    f'<td><b class="sd-names">{_esc(r.name)}</b>{reason}</td><td>{remote}</td>'
                    f'<td class="sd-names">{_esc(r.branch)}</td>'
                    f'<td class="sd-names">{_esc(r.version)}</td><td>{_esc(r.commit_date)}</td>'
                    f'<td class="ext-status">{_esc(r.status)}</td><td class="ext-errors">{_errors_cell(r)}</td></tr>')
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def available_html(entries) -> str:
    if not entries:
        return "<p>No extension matches.</p>"
    body = []
    for e in entries:
        link = extension_index.web_url(e.url)
        name = f'<a href="{_esc(link)}" target="_blank" rel="noopener">{_esc(e.name)}</a>' if link else _esc(e.name)
        state = "installed" if e.installed else ""
        body.append(f'<tr data-extension="{_esc(e.name)}"><td>{name}<div class="ext-tags">{_esc(", ".join(e.tags))}'
                    f'</div></td><td>{_esc(e.description)}</td><td>{_esc(e.added)}</td><td>{state}</td></tr>')
    return ("<table><thead><tr><th>Extension</th><th>Description</th><th>Added</th><th></th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _gate_html(reason: str | None) -> str:
    return f"<p>{_esc(reason)}</p>" if reason else ""


def build_tab(rt) -> dict:
    """Adds the tab (call inside gr.Tabs)."""
    exts = rt.extensions if getattr(rt, "extensions", None) is not None else extensions.extensions
    reason = extension_manager.access_blocked(rt.args)
    with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
        gate = gr.HTML(_gate_html(reason), visible=bool(reason), elem_id="extensions_access")
        message = gr.HTML(elem_id="extensions_message")
        with gr.Tabs(elem_id="tabs_extensions"):
            with gr.Tab("Installed", id="extensions_installed", elem_id="tab_extensions_installed"):
                installed = _installed(rt, exts, message)
            with gr.Tab("Available", id="extensions_available", elem_id="tab_extensions_available"):
                available = _available(rt, exts, message, installed)
            with gr.Tab("Install from URL", id="extensions_from_url", elem_id="tab_extensions_from_url"):
                from_url = _from_url(rt, exts, message, installed)
    return {"gate": gate, "message": message, **installed, **available, **from_url}


def _names(exts) -> list[str]:
    return [e.name for e in exts]


def _installed(rt, exts, message) -> dict:
    with gr.Row():
        apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
        check = gr.Button("Check for updates", elem_id="extensions_check")
    # Values as of this start (every change of the settings restarts the server, which builds the page again); an
    # install updates the page itself, and `shown` tells Apply which extensions this page could tick.
    disable_all = gr.Radio(list(extensions.DISABLE_ALL_CHOICES), label="Disable all extensions",
                           value=rt.options.get("disable_all_extensions"), elem_id="extensions_disable_all")
    enabled = gr.CheckboxGroup(_names(exts), value=[e.name for e in exts if e.enabled_in_settings],
                               label="Enabled extensions (untick to disable after the restart)",
                               elem_id="extensions_enabled", elem_classes=["sd-names"])
    update = gr.CheckboxGroup([], value=[], label="Update on Apply (extensions with new commits)",
                              elem_id="extensions_update", elem_classes=["sd-names"])
    table = gr.HTML(installed_html(exts), elem_id="extensions_installed_table")
    shown = gr.State(_names(exts))

    def do_apply(enabled_names, mode, update_names, shown_names):
        try:
            result = extension_manager.apply(rt.args, rt.options, exts, enabled_names, mode, update_names,
                                             shown_names=shown_names)
        except (extension_manager.AccessDenied, ValueError) as exc:   # OptionError is a ValueError
            return _failed("Apply and restart UI", exc)
        extension_manager.schedule_restart()
        log.info("extensions: %s Restarting.", result.message())
        return f'<div class="sd-info" data-restarting="1">{_esc(result.message())} Restarting the server…</div>'

    def do_check():
        try:
            statuses = extension_manager.check_updates(rt.args, exts)
        except extension_manager.AccessDenied as exc:
            return _failed("Check for updates", exc), gr.skip(), gr.skip()
        updatable = [e.name for e in exts if e.can_update]
        counts = sum(1 for s in statuses.values() if s in ("new commits", "behind HEAD"))
        return (_message(f"Checked {len(statuses)} extension(s): {counts} can be updated."), installed_html(exts),
                gr.update(choices=updatable, value=updatable))

    apply.click(do_apply, [enabled, disable_all, update, shown], message).then(
        None, message, None, js=_WAIT_FOR_RESTART_JS % extension_manager.BOOT_ID)
    check.click(do_check, None, [message, table, update])
    return {"apply": apply, "check": check, "disable_all": disable_all, "enabled": enabled, "update": update,
            "table": table, "shown": shown}


def _available(rt, exts, message, installed: dict) -> dict:
    with gr.Row():
        index_url = gr.Textbox(extension_index.default_url(), label="Extension index URL", scale=4,
                               elem_id="extensions_index_url")
        load = gr.Button("Load from:", elem_id="extensions_load", scale=1)
    with gr.Row():
        hide_tags = gr.CheckboxGroup(extension_index.tag_choices(None), value=list(extension_index.HIDDEN_TAGS_DEFAULT),
                                     label="Hide extensions with tags", elem_id="extensions_hide_tags", scale=3)
        sort = gr.Radio(list(extension_index.SORT_CHOICES), value="newest first", label="Order",
                        elem_id="extensions_sort", scale=2)
    search = gr.Textbox(label="Search", elem_id="extensions_search")
    with gr.Row():
        pick = gr.Dropdown([], value=None, label="Extension to install", elem_id="extensions_available_pick",
                           scale=4)
        install = gr.Button("Install", variant="primary", elem_id="extensions_available_install", scale=1)
    table = gr.HTML(elem_id="extensions_available_table")
    index_state = gr.State(None)

    def show(index, search_text, hidden, order):
        if index is None:
            return "", gr.update(choices=[], value=None)
        extension_index.mark_installed(index, exts)
        entries = extension_index.select(index, search_text, hidden, order)
        installable = [e.name for e in entries if not e.installed]
        return available_html(entries), gr.update(choices=installable, value=None)

    def do_load(url, search_text, hidden, order):
        try:
            index = extension_index.load(rt.args, url)
        except (extension_manager.AccessDenied, extension_index.IndexLoadError) as exc:
            return _failed("Load the index", exc), None, gr.skip(), "", gr.update(choices=[], value=None)
        rows, picker = show(index, search_text, hidden, order)
        note = _message(f"Loaded {len(index.entries)} extension(s) from {index.url}.")
        return note, index, gr.update(choices=extension_index.tag_choices(index)), rows, picker

    def do_install(index, name, enabled_names, search_text, hidden, order):
        entry = next((e for e in index.entries if e.name == name), None) if index is not None and name else None
        url = entry.url if entry is not None else ""
        if entry is None and extension_manager.access_blocked(rt.args) is None:
            problem = (f"{name!r} is not in the loaded index" if index is not None and name
                       else "load the index and pick an extension first")
            return (common.error_html(f"Install: Extension to install: {problem}"),) + (gr.skip(),) * 5
        # a refused server says why even before anything is picked: install_from_url checks the gate first
        out, _ = _install_and_refresh(rt, exts, url, "", "", "Install", enabled_names)
        return out + show(index, search_text, hidden, order)

    load.click(do_load, [index_url, search, hide_tags, sort], [message, index_state, hide_tags, table, pick])
    for control in (hide_tags, sort):
        control.change(show, [index_state, search, hide_tags, sort], [table, pick], queue=False)
    search.submit(show, [index_state, search, hide_tags, sort], [table, pick], queue=False)
    install.click(do_install, [index_state, pick, installed["enabled"], search, hide_tags, sort],
                  [message, *_refreshed(installed), table, pick])
    return {"index_url": index_url, "load": load, "hide_tags": hide_tags, "sort": sort, "search": search,
            "pick": pick, "available_install": install, "available_table": table}


def _failed(action: str, exc: Exception) -> str:
    """An error line that names the button, so two refusals in a row read (and render) differently."""
    return common.error_html(f"{action}: {exc}")


def _refreshed(installed: dict) -> list:
    """What an install changes on the Installed tab."""
    return [installed["table"], installed["enabled"], installed["shown"]]


def _install_and_refresh(rt, exts, url: str, branch: str, folder: str, action: str, enabled_names):
    """Install; ((message, Installed table, enabled ticks with the new one ticked, names the page shows), ok)."""
    before = set(_names(exts))
    try:
        result = extension_manager.install_from_url(rt.args, rt.paths.data, exts, url, branch, folder)
    except (extension_manager.AccessDenied, ValueError, RuntimeError, OSError) as exc:
        return (_failed(action, exc), gr.skip(), gr.skip(), gr.skip()), False
    added = [n for n in _names(exts) if n not in before]
    ticked = list(enabled_names or []) + added      # ticked: Apply and restart turns it on
    return (_message(result.message, error=bool(result.install_error)), installed_html(exts),
            gr.update(choices=_names(exts), value=ticked), _names(exts)), True


def _from_url(rt, exts, message, installed: dict) -> dict:
    url = gr.Textbox(label="URL for extension's git repository", elem_id="extensions_install_url")
    branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for the default branch",
                        elem_id="extensions_install_branch")
    folder = gr.Textbox(label="Local directory name", placeholder="Leave empty for the last part of the URL",
                        elem_id="extensions_install_dirname")
    install = gr.Button("Install", variant="primary", elem_id="extensions_install_button")

    def do_install(url_text, branch_text, folder_text, enabled_names):
        out, ok = _install_and_refresh(rt, exts, url_text, branch_text, folder_text, "Install from URL",
                                       enabled_names)
        return out + ("" if ok else gr.skip(),)     # the URL box is emptied after an install

    install.click(do_install, [url, branch, folder, installed["enabled"]],
                  [message, *_refreshed(installed), url])
    return {"install_url": url, "install_branch": branch, "install_dirname": folder, "install_button": install}
