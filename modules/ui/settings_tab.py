"""Settings: the options that exist, by section (ours, then the extensions'); Apply writes config.json atomically;
Reload UI.

Extensions' settings (added with `shared.opts.add_option` or `shared.options_templates.update(options_section(…))`
from their on_ui_settings callbacks, before the UI is built) get a tab per section label, A1111's element ids
(`setting_<key>`, `refresh_<key>` for a refresh button) and the control their OptionInfo names: its `component`
(a Gradio class, or a callable) with `component_args`, or one chosen by the default's type.
"""
from __future__ import annotations

import html
import logging
import re

import gradio as gr

from modules.options import QUICKSETTINGS_DEFAULT, OptionError, OptionHTML
from modules.ui import common

log = logging.getLogger("sd.ui")

HIDDEN = {"sd_model_checkpoint", "sd_checkpoint_hash"}  # the checkpoint is chosen in the top bar
_LIMIT_ARGS = ("minimum", "maximum", "step", "choices")


def _hidden_section(info) -> bool:
    """A1111 leaves settings whose section id is None off the page (kept for scripts and the API)."""
    return info.section is not None and info.section[0] is None


def _plain(text: str) -> str:
    """An OptionInfo comment (HTML) as the plain text Gradio shows under a label."""
    return html.unescape(re.sub(r"<[^>]+>", "", text or "")).strip()


def _args(info) -> dict:
    args = info.component_args
    if callable(args):
        args = args()
    return dict(args) if isinstance(args, dict) else {}


def component(key: str, info, value, elem_id: str | None = None, **kwargs):
    """The control for one setting, the same kind wherever it is shown (Settings page, top bar). `value` is a
    callable (Gradio calls it on every page load, so a reload shows the settings now in force: one load event per
    control) or the value itself (the caller refreshes it: the top bar does all of its controls in one load event).
    `kwargs` (scale, visible, ...) go to the component."""
    elem = elem_id or page_elem_id(key)
    if isinstance(info, OptionHTML):   # page text, not a setting
        return gr.HTML(label=info.label, value=value, elem_id=elem, elem_classes="settings-info", **kwargs)
    comment = _plain(" ".join(filter(None, [info.comment_before, info.comment_after])))
    if info.component is not None:
        args = _args(info)
        try:
            extra = {"info": comment} if comment else {}
            try:
                return info.component(label=info.label, value=value, elem_id=elem, **args, **extra, **kwargs)
            except TypeError:
                if not extra:
                    raise
                return info.component(label=info.label, value=value, elem_id=elem, **args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - an extension's Gradio 3 arguments must not break the page
            log.warning("setting %s: %s(%s) failed (%s); shown as a plain control", key,
                        getattr(info.component, "__name__", info.component), args, exc)
    return _by_type(key, info, value, elem, comment, **kwargs)


def _by_type(key: str, info, value, elem: str, comment: str, **kwargs):
    """The control for a setting without a component of its own, from its default's type and component_args."""
    label = info.label
    args = _args(info) if info.component is None else {}
    extra = {k: v for k, v in args.items() if k not in _LIMIT_ARGS}
    if comment:
        extra.setdefault("info", comment)
    try:
        choices = info.choices() if callable(info.choices) else info.choices
    except Exception as exc:  # noqa: BLE001 - shown without a list rather than not at all
        log.warning("setting %s: its choices could not be read (%s)", key, exc)
        choices = None
    kw = {**extra, **kwargs}
    if isinstance(info.default, bool):
        return gr.Checkbox(label=label, value=value, elem_id=elem, **kw)
    if isinstance(info.default, list):
        # names (setting keys, files), not words: the localization leaves them alone (.sd-names)
        listed = list(choices) if choices is not None else []
        def kept(current):
            return [v for v in current if choices is None or v in listed]
        return gr.Dropdown(listed, value=(lambda: kept(value())) if callable(value) else kept(value),
                           multiselect=True, allow_custom_value=choices is None, label=label, elem_id=elem,
                           elem_classes=["sd-names"], **kw)
    if choices:
        return gr.Dropdown(choices, value=value, label=label, elem_id=elem, **kw)
    if isinstance(info.default, (int, float)):
        if info.minimum is not None and info.maximum is not None:
            step = args.get("step") or (1 if isinstance(info.default, int) else 0.01)
            return gr.Slider(info.minimum, info.maximum, value=value, step=step, label=label, elem_id=elem, **kw)
        return gr.Number(value=value, label=label, elem_id=elem, precision=0 if isinstance(info.default, int) else None,
                         **kw)
    def text(current):
        return "" if current is None else str(current)
    return gr.Textbox(value=(lambda: text(value())) if callable(value) else text(value), label=label, elem_id=elem,
                      **kw)


def page_elem_id(key: str) -> str:
    """The Settings page's id for a setting: A1111's `setting_<key>`, except for the settings of the default top bar,
    whose top-bar controls have always had that id (scripts and tests find them by it); the page uses
    `setting_page_<key>` for those, so no id is in the page twice."""
    return f"setting_page_{key}" if key in QUICKSETTINGS_DEFAULT else f"setting_{key}"


def topbar_elem_id(key: str) -> str:
    """The top bar's id for a setting: `setting_<key>` for the default ones, `quicksettings_<key>` for the others."""
    return f"setting_{key}" if key in QUICKSETTINGS_DEFAULT else f"quicksettings_{key}"


def coerce(info, value):
    """A whole number from a slider or number box (which may send 3.0) for an int setting; a number from a text box
    for a number setting."""
    if isinstance(info.default, int) and not isinstance(info.default, bool) and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    if isinstance(info.default, (int, float)) and not isinstance(info.default, bool) and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if isinstance(info.default, int) and number.is_integer() else number
    return value


def _with_refresh(key: str, info, make):
    """The control, with a 🔄 button (`refresh_<key>`) beside it when the setting has a refresh function."""
    if info.refresh is None:
        return make()
    from modules import ui_common
    with gr.Row():
        control = make()
        ui_common.create_refresh_button(control, info.refresh, info.component_args, f"refresh_{key}")
    return control


RELOAD_UI_JS = """
async () => {
  const base = location.href.replace(/[?#].*$/, '').replace(/\\/?$/, '/');
  const r = await fetch(new URL('internal/reload-ui', base), {method: 'POST'});
  if (!r.ok) { alert('Reload UI failed: ' + r.status + ' ' + (await r.text())); return; }
  location.reload();
}
"""


def build(rt) -> dict:
    opts = rt.options
    shown = [k for k, i in opts.info.items() if k not in HIDDEN and not _hidden_section(i)]
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload UI", elem_id="settings_restart_gradio")
    result = gr.HTML(elem_id="settings_result")
    controls = {}
    sections: dict[tuple[str, str], list[str]] = {}
    for key in shown:
        info = opts.info[key]
        sections.setdefault((info.section_id, info.section_label), []).append(key)
    with gr.Tabs(elem_id="settings", overflow_behavior="wrap"):
        for (section_id, label), section_keys in sections.items():
            with gr.Tab(label, elem_id=f"settings_{section_id}"):
                for key in section_keys:
                    info = opts.info[key]
                    # page text keeps its callable; settings get their value now and are all refreshed by the
                    # one load event in "load" (a callable each would be one queued load event per setting)
                    controls[key] = _with_refresh(
                        key, info, lambda k=key, i=info: component(
                            k, i, (lambda: opts.get(k)) if isinstance(i, OptionHTML) else opts.get(k)))
    keys = [k for k in shown if not opts.info[k].do_not_save]   # page text (OptionHTML) is not applied

    def save(*values):
        changed, errors = [], []
        for key, value in zip(keys, values):
            value = coerce(opts.info[key], value)
            try:
                if opts.set(key, value, save=False):
                    changed.append(key)
            except (OptionError, KeyError, ValueError) as exc:
                errors.append(str(exc))
        opts.save()
        text = f"{len(changed)} settings changed" + (f": {', '.join(changed)}." if changed else ".")
        return text + (common.error_html("; ".join(errors)) if errors else "")

    applied = apply.click(save, [controls[k] for k in keys], result)
    # A1111's Reload UI: the server re-runs the extensions' scripts and rebuilds the page (webui.py,
    # /internal/reload-ui, relative to the page so that --subpath works), then the browser loads the new page
    reload.click(None, None, None, js=RELOAD_UI_JS)

    def current_values():
        return [opts.get(k) for k in keys]

    # the caller registers it on the page's load (app.py): the values in force, whoever changed them since
    load = (current_values, [controls[k] for k in keys])
    return {"components": {k: controls[k] for k in keys}, "applied": applied, "save": save, "shown": controls,
            "load": load}
