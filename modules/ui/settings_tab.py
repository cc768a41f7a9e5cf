"""Settings: the options that exist, by section; Apply writes config.json atomically; Reload UI."""
from __future__ import annotations

import gradio as gr

from modules.options import QUICKSETTINGS_DEFAULT, OptionError
from modules.ui import common

HIDDEN = {"sd_model_checkpoint", "sd_checkpoint_hash"}  # the checkpoint is chosen in the top bar


def component(key: str, info, value, elem_id: str | None = None, **kwargs):
    """The control for one setting, the same kind wherever it is shown (Settings page, top bar). `value` is a
    callable: Gradio calls it on every page load, so a reload shows the settings now in force. `kwargs` (scale,
    visible, ...) go to the component."""
    label, elem = info.label, elem_id or page_elem_id(key)
    choices = info.choices() if callable(info.choices) else info.choices
    if isinstance(info.default, bool):
        return gr.Checkbox(label=label, value=value, elem_id=elem, **kwargs)
    if isinstance(info.default, list) and choices is not None:
        # names (setting keys, files), not words: the localization leaves them alone (.sd-names)
        return gr.Dropdown(choices, value=lambda: [v for v in value() if v in choices], multiselect=True, label=label,
                           elem_id=elem, elem_classes=["sd-names"], **kwargs)
    if choices:
        return gr.Dropdown(choices, value=value, label=label, elem_id=elem, **kwargs)
    if isinstance(info.default, (int, float)):
        if info.minimum is not None and info.maximum is not None:
            step = 1 if isinstance(info.default, int) else 0.01
            return gr.Slider(info.minimum, info.maximum, value=value, step=step, label=label, elem_id=elem, **kwargs)
        return gr.Number(value=value, label=label, elem_id=elem, precision=0 if isinstance(info.default, int) else None,
                         **kwargs)
    return gr.Textbox(value=lambda: str(value()), label=label, elem_id=elem, **kwargs)


def page_elem_id(key: str) -> str:
    """The Settings page's id for a setting: A1111's `setting_<key>`, except for the settings of the default top bar,
    whose top-bar controls have always had that id (scripts and tests find them by it); the page uses
    `setting_page_<key>` for those, so no id is in the page twice."""
    return f"setting_page_{key}" if key in QUICKSETTINGS_DEFAULT else f"setting_{key}"


def topbar_elem_id(key: str) -> str:
    """The top bar's id for a setting: `setting_<key>` for the default ones, `quicksettings_<key>` for the others."""
    return f"setting_{key}" if key in QUICKSETTINGS_DEFAULT else f"quicksettings_{key}"


def coerce(info, value):
    """A whole number from a slider or number box (which may send 3.0) for an int setting."""
    if isinstance(info.default, int) and not isinstance(info.default, bool) and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


def build(rt) -> dict:
    opts = rt.options
    keys = [k for k in opts.info if k not in HIDDEN]
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload UI", elem_id="settings_restart_gradio")
    result = gr.HTML(elem_id="settings_result")
    components = []
    sections: dict[str, list[str]] = {}
    for key in keys:
        sections.setdefault(opts.info[key].section, []).append(key)
    with gr.Tabs(elem_id="settings"):
        for section, section_keys in sections.items():
            with gr.Tab(section, elem_id=f"settings_{section.lower().replace(' ', '_')}"):
                for key in section_keys:
                    components.append(component(key, opts.info[key], lambda k=key: opts.get(k)))

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

    applied = apply.click(save, components, result)
    reload.click(None, None, None, js="() => { location.reload(); }")
    return {"components": dict(zip(keys, components)), "applied": applied}
