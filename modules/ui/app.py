"""Builds the Gradio Blocks: the top bar (checkpoint, quicksettings) and the tabs, and wires Send-to buttons."""
from __future__ import annotations

import logging
import re
import threading

import gradio as gr

from modules import script_callbacks
from modules.models.loader import native_resolution
from modules.models.manager import NO_MODEL_MESSAGE
from modules.ui import common, extras_tab, img2img_tab, merger_tab, pnginfo_tab, settings_tab, txt2img_tab
from modules.ui import extensions_tab, extra_networks
from modules.ui import localization_ui, page_assets, quicksettings

log = logging.getLogger("sd.ui")

CSS = """
.sd-error { color: #b91c1c; background: #fee2e2; border: 1px solid #fca5a5; padding: 8px; border-radius: 6px; }
#no_model_banner { color: #92400e; background: #fef3c7; padding: 8px; border-radius: 6px; }
.token-counter { text-align: right; font-size: 0.8em; opacity: 0.7; margin-top: -8px; }
""" + extensions_tab.CSS

# Ctrl+Enter generates in the visible tab, as in A1111.
JS = """
() => {
  document.addEventListener('keydown', (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.key !== 'Enter') return;
    const buttons = ['txt2img_generate', 'img2img_generate'].map(id => document.getElementById(id));
    const visible = buttons.find(b => b && b.offsetParent !== null);
    if (visible) { e.preventDefault(); visible.click(); }
  });
}
"""


def build(rt) -> gr.Blocks:
    size = _native_size(rt)
    from modules import extension_host
    extra_networks.register_default_pages()   # before the extensions' on_before_ui, which add theirs (A1111's order)
    script_callbacks.before_ui_callback()
    extension_tabs = extension_host.ui_tabs()   # built as their own Blocks first, rendered as tabs below (A1111)
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        with gr.Row(elem_id="quicksettings"):
            checkpoint = gr.Dropdown(rt.registry.titles(), value=_current_title(rt), label="Stable Diffusion checkpoint",
                                     elem_id="setting_sd_model_checkpoint", scale=4)
            refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
            quick = quicksettings.build(rt)  # the Quicksettings list: SD VAE, Clip skip, ... (shown per page load)
            language = localization_ui.switch(rt)
        banner = gr.Markdown(NO_MODEL_MESSAGE, visible=not rt.registry.checkpoints, elem_id="no_model_banner")
        status = gr.HTML(elem_id="checkpoint_status")
        settings_json = page_assets.settings_json(rt)  # A1111's #settings_json: the page's `opts`
        localization_errors = localization_ui.errors_box(rt)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"), common.scripts_tab(False):
                t2i = txt2img_tab.build(rt, size)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"), common.scripts_tab(True):
                i2i = img2img_tab.build(rt, size)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                ext = extras_tab.build(rt)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = pnginfo_tab.build()
            merger_tab.build_tab(rt, checkpoint)  # its own gr.Tab "Checkpoint Merger" (id modelmerger)
            for blocks, title, elem_id in extension_tabs:
                _render_extension_tab(blocks, title, elem_id)
            extensions_tab.build_tab(rt)  # its own gr.Tab "Extensions" (id extensions)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings = settings_tab.build(rt)

        switching = threading.Lock()

        def change_checkpoint(title):
            unchanged = ("", gr.update(), gr.update(), gr.update(), gr.update())
            # Gradio's dropdown may fire `input` twice for one pick (and again on blur): one switch at a time, and
            # picking the model in use neither loads it again nor resets the sizes the user typed since
            with switching:
                chosen = rt.registry.find_checkpoint(title) if title else None
                model = rt.models.model
                if not title or chosen is not None and model is not None and chosen.filename == model.info.filename:
                    return unchanged
                try:
                    rt.options.set("sd_model_checkpoint", title)
                except Exception as exc:  # noqa: BLE001 - shown in the page; nothing else changes
                    return (common.error_html(str(exc)),) + unchanged[1:]
            new = _native_size(rt)  # the size defaults follow the model
            return "", gr.update(value=new), gr.update(value=new), gr.update(value=new), gr.update(value=new)

        def do_refresh():
            rt.registry.refresh()
            titles = rt.registry.titles()
            return (gr.update(choices=titles, value=_current_title(rt)), gr.update(visible=not titles),
                    gr.update(choices=_vae_choices(rt)))

        checkpoint.input(change_checkpoint, checkpoint,
                         [status, t2i["width"], t2i["height"], i2i["width"], i2i["height"]])
        refresh.click(do_refresh, None, [checkpoint, banner, quick["controls"]["sd_vae"]])
        quicksettings.wire(rt, demo, quick, status, settings)
        page_assets.wire_settings_json(rt, settings_json, settings,
                                       {**quick["controls"], "sd_model_checkpoint": checkpoint})
        localization_ui.wire(rt, demo, language, status, localization_errors, settings)
        demo.load(lambda: gr.update(choices=rt.registry.titles(), value=_current_title(rt)), None, checkpoint)
        demo.load(settings["load"][0], None, settings["load"][1], show_progress="hidden")

        # Send to ...: images from an output panel or PNG Info into another tab
        def first_image(images):
            return images[0] if images else None

        for source in (t2i, i2i):
            source["to_img2img"].click(lambda imgs: (first_image(imgs), gr.Tabs(selected="img2img"),
                                                     gr.Tabs(selected="img2img")),
                                       source["last_images"], [i2i["init_image"], tabs, i2i["mode_tabs"]])
            source["to_inpaint"].click(lambda imgs: (first_image(imgs), gr.Tabs(selected="img2img"),
                                                     gr.Tabs(selected="inpaint"), "Inpaint"),
                                       source["last_images"], [i2i["editor"], tabs, i2i["mode_tabs"], i2i["mode"]])
            source["to_extras"].click(lambda imgs: (first_image(imgs), gr.Tabs(selected="extras")),
                                      source["last_images"], [ext["image"], tabs])

        # each tab's fields, then its always-on scripts' infotext_fields (A1111 pastes those too)
        t2i_fields = [t2i[f] for f in t2i["fields"]] + [c for c, _ in t2i["script_paste"]]
        i2i_fields = [i2i[f] for f in i2i["fields"]] + [c for c, _ in i2i["script_paste"]]

        def t2i_values(text):
            return pnginfo_tab.paste_values(text, t2i["fields"]) + common.script_paste_values(text, t2i["script_paste"])

        def i2i_values(text):
            return pnginfo_tab.paste_values(text, i2i["fields"]) + common.script_paste_values(text, i2i["script_paste"])

        png["to_txt2img"].click(lambda text: [*t2i_values(text), gr.Tabs(selected="txt2img")], png["text"],
                                [*t2i_fields, tabs])
        png["to_img2img"].click(lambda text, img: [*i2i_values(text), img, gr.Tabs(selected="img2img"),
                                                   gr.Tabs(selected="img2img")],
                                [png["text"], png["image"]], [*i2i_fields, i2i["init_image"], tabs, i2i["mode_tabs"]])
        png["to_inpaint"].click(lambda text, img: [*i2i_values(text), img, gr.Tabs(selected="img2img"),
                                                   gr.Tabs(selected="inpaint"), "Inpaint"],
                                [png["text"], png["image"]],
                                [*i2i_fields, i2i["editor"], tabs, i2i["mode_tabs"], i2i["mode"]])
        png["to_extras"].click(lambda img: (img, gr.Tabs(selected="extras")), png["image"], [ext["image"], tabs])
    extra_networks.warm_up()   # the LoRA folder scan, in the background
    return demo


def _render_extension_tab(blocks, title: str, elem_id: str | None) -> None:
    tab_id = elem_id or re.sub(r"[^a-z0-9_]", "_", str(title).lower())
    try:
        with gr.Tab(str(title), id=tab_id, elem_id=f"tab_{tab_id}"):
            blocks.render()
    except Exception:  # noqa: BLE001 - an extension's tab must not take the page down
        log.exception("extension tab %r could not be shown", title)


def _vae_choices(rt) -> list[str]:
    return ["Automatic", "None"] + [v.name for v in rt.registry.vaes]


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
