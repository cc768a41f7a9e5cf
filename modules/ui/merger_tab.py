"""The Checkpoint Merger tab (A1111's layout and element ids): pick A/B/C, a mode and a multiplier, Merge.

Widgets only: Merge hands a MergeRequest to rt.merge_checkpoints (modules.merging: a job on the one queue, the model
list rescanned afterwards), then the tab refreshes A/B/C, the VAE list and the top bar's checkpoint dropdown.
"""
from __future__ import annotations

import html
import logging

import gradio as gr

from modules import merging
from modules.models import merge
from modules.ui import common

log = logging.getLogger("sd.ui")


def _titles(rt) -> list[str]:
    return merging.mergeable_titles(rt)


def _vae_choices(rt) -> list[str]:
    return [merging.NO_VAE] + [v.name for v in rt.registry.vaes]


def build_tab(rt, top_checkpoint: gr.Dropdown | None = None) -> dict:
    """Adds the tab (call inside gr.Tabs); `top_checkpoint` is the top bar's dropdown, refreshed after a merge."""
    with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger") as tab:
        comps = _build(rt, top_checkpoint)
    # a page opened before a merge (or a file dropped into the folder) sees the current list when the tab is opened
    tab.select(lambda: [gr.update(choices=_titles(rt))] * 3 + [gr.update(choices=_vae_choices(rt))], None,
               [comps["primary"], comps["secondary"], comps["tertiary"], comps["bake_in_vae"]], queue=False)
    return comps


def _build(rt, top_checkpoint) -> dict:
    titles = _titles(rt)
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            gr.HTML("<p>A merger of the models: the result is saved in the checkpoint folder and appears in the "
                    "checkpoint list.</p>", elem_id="modelmerger_help")
            with gr.Row():
                # value=None: start empty as in A1111 (Gradio would otherwise preselect the first model everywhere)
                primary = gr.Dropdown(titles, value=None, label="Primary model (A)",
                                      elem_id="modelmerger_primary_model_name")
                secondary = gr.Dropdown(titles, value=None, label="Secondary model (B)",
                                        elem_id="modelmerger_secondary_model_name")
                tertiary = gr.Dropdown(titles, value=None, label="Tertiary model (C)",
                                       elem_id="modelmerger_tertiary_model_name")
                refresh = gr.Button("🔄", elem_id="modelmerger_refresh_checkpoints", scale=0, min_width=40)
            custom_name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            multiplier = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M) - set to 0 to get model A",
                                   elem_id="modelmerger_interp_amount")
            method = gr.Radio(list(merge.INTERP_METHODS), value="Weighted sum", label="Interpolation Method",
                              elem_id="modelmerger_interp_method")
            with gr.Row(equal_height=True):
                fmt = gr.Radio(["ckpt", "safetensors"], value="safetensors", label="Checkpoint format",
                               elem_id="modelmerger_checkpoint_format", scale=2, min_width=240)
                half = gr.Checkbox(value=False, label="Save as float16", elem_id="modelmerger_save_as_half", scale=1)
                save_metadata = gr.Checkbox(value=True, label="Save metadata", elem_id="modelmerger_save_metadata",
                                            scale=1)
            config = gr.Radio(list(merge.CONFIG_SOURCES), value="A, B or C", label="Copy config from",
                              elem_id="modelmerger_config_method")
            with gr.Row():
                vae = gr.Dropdown(_vae_choices(rt), value=merging.NO_VAE, label="Bake in VAE",
                                  elem_id="modelmerger_bake_in_vae")
            discard = gr.Textbox(label="Discard weights with matching name", elem_id="modelmerger_discard_weights")
            merge_button = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact"):
            result = gr.HTML(elem_id="modelmerger_result")

    def run(a, b, c, name, m, interp, checkpoint_format, as_half, cfg, bake, discard_rx, metadata):
        keep = [gr.update()] * (4 + len(top))
        request = merge.MergeRequest(
            a or None, b or None, c or None, interp_method=interp, multiplier=m, custom_name=name or "",
            checkpoint_format=checkpoint_format, save_as_half=bool(as_half), config_source=cfg, bake_in_vae=bake,
            discard_weights=discard_rx or "", save_metadata=bool(metadata))
        try:
            done = rt.merge_checkpoints(request)
        except merging.FAILURES as exc:
            log.info("checkpoint merge failed: %s", exc)
            return [common.error_html(str(exc) or "merge interrupted"), *keep]
        message = (f"<p>Checkpoint saved to {html.escape(str(done.path))}</p>"
                   f"<p>It is in the checkpoint list as <b>{html.escape(done.title)}</b>"
                   + (f"; config copied to {html.escape(done.config.name)}" if done.config else "") + ".</p>")
        return [message, *[gr.update(choices=_titles(rt))] * 3, gr.update(choices=_vae_choices(rt)),
                *top_update()]

    def top_update() -> list:
        return [gr.update(choices=rt.registry.titles())] if top_checkpoint is not None else []

    def rescan():
        rt.registry.refresh()
        return [*[gr.update(choices=_titles(rt))] * 3, gr.update(choices=_vae_choices(rt)), *top_update()]

    top = [top_checkpoint] if top_checkpoint is not None else []
    merge_button.click(run, [primary, secondary, tertiary, custom_name, multiplier, method, fmt, half, config, vae,
                             discard, save_metadata],
                       [result, primary, secondary, tertiary, vae, *top], concurrency_limit=None)
    refresh.click(rescan, None, [primary, secondary, tertiary, vae, *top], queue=False)
    return {"primary": primary, "secondary": secondary, "tertiary": tertiary, "custom_name": custom_name,
            "multiplier": multiplier, "interp_method": method, "checkpoint_format": fmt, "save_as_half": half,
            "config_source": config, "bake_in_vae": vae, "discard_weights": discard, "merge": merge_button,
            "result": result}
