"""Builds the Gradio Blocks: the top bar (checkpoint dropdown) and the tabs."""
from __future__ import annotations

import logging

import gradio as gr

from modules.models.loader import native_resolution
from modules.models.manager import NO_MODEL_MESSAGE
from modules.ui import txt2img_tab

log = logging.getLogger("sd.ui")

CSS = """
.sd-error { color: #b91c1c; background: #fee2e2; border: 1px solid #fca5a5; padding: 8px; border-radius: 6px; }
#no_model_banner { color: #92400e; background: #fef3c7; padding: 8px; border-radius: 6px; }
"""


def build(rt) -> gr.Blocks:
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        with gr.Row(elem_id="quicksettings"):
            checkpoint = gr.Dropdown(rt.registry.titles(), value=_current_title(rt), label="Stable Diffusion checkpoint",
                                     elem_id="setting_sd_model_checkpoint", scale=4)
            refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
        banner = gr.Markdown(NO_MODEL_MESSAGE, visible=not rt.registry.checkpoints, elem_id="no_model_banner")
        status = gr.HTML(elem_id="checkpoint_status")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = txt2img_tab.build(rt, _native_size(rt))

        def change_checkpoint(title):
            if not title:
                return "", gr.update(), gr.update()
            try:
                rt.options.set("sd_model_checkpoint", title)
            except Exception as exc:  # shown in the page; the previous model stays loaded
                return txt2img_tab.error_html(str(exc)), gr.update(), gr.update()
            size = _native_size(rt)  # the size defaults follow the model
            return "", gr.update(value=size), gr.update(value=size)

        def do_refresh():
            rt.registry.refresh()
            titles = rt.registry.titles()
            return gr.update(choices=titles, value=_current_title(rt)), gr.update(visible=not titles)

        checkpoint.input(change_checkpoint, checkpoint, [status, t2i["width"], t2i["height"]])
        refresh.click(do_refresh, None, [checkpoint, banner])

        demo.load(lambda: gr.update(choices=rt.registry.titles(), value=_current_title(rt)), None, checkpoint)
    return demo


def _current_title(rt) -> str | None:
    model = rt.models.model
    if model is not None:
        return model.info.title
    info = rt.startup_checkpoint() if rt.registry.checkpoints else None
    return info.title if info else None


def _native_size(rt) -> int:
    model = rt.models.model
    if model is not None:
        return model.spec.native_resolution
    info = rt.startup_checkpoint() if rt.registry.checkpoints else None
    return native_resolution(info) if info else 512
