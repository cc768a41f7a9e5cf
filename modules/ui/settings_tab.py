"""Settings: the options that exist, by section; Apply writes config.json atomically; Reload UI."""
from __future__ import annotations

import gradio as gr

from modules.options import OptionError
from modules.ui import common

HIDDEN = {"sd_model_checkpoint", "sd_checkpoint_hash", "quicksettings_list"}


def _component(key: str, info, value):
    """`value` is a callable: Gradio calls it on every page load, so a reload shows the settings now in force."""
    label, elem = info.label, f"setting_{key}"
    choices = info.choices() if callable(info.choices) else info.choices
    if isinstance(info.default, bool):
        return gr.Checkbox(label=label, value=value, elem_id=elem)
    if choices:
        return gr.Dropdown(choices, value=value, label=label, elem_id=elem)
    if isinstance(info.default, (int, float)):
        if info.minimum is not None and info.maximum is not None:
            step = 1 if isinstance(info.default, int) else 0.01
            return gr.Slider(info.minimum, info.maximum, value=value, step=step, label=label, elem_id=elem)
        return gr.Number(value=value, label=label, elem_id=elem, precision=0 if isinstance(info.default, int) else None)
    return gr.Textbox(value=lambda: str(value()), label=label, elem_id=elem)


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
                    components.append(_component(key, opts.info[key], lambda k=key: opts.get(k)))

    def save(*values):
        changed, errors = [], []
        for key, value in zip(keys, values):
            if isinstance(opts.info[key].default, int) and not isinstance(opts.info[key].default, bool) \
                    and isinstance(value, float) and value.is_integer():
                value = int(value)
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
