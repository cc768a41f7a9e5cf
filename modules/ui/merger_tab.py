"""The Checkpoint Merger tab (A1111's layout and element ids): pick A/B/C, a mode and a multiplier, Merge.

The merge runs as a job on the one queue, so it waits for a running generation instead of competing with it, and it
never touches the loaded model. Afterwards the model list is rescanned so the result shows up in the top bar's
checkpoint dropdown and in A/B/C.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path

import gradio as gr

from modules.jobs import Interrupted, JobState
from modules.models import merge
from modules.models.safe_load import ModelFileError
from modules.ui import common

log = logging.getLogger("sd.ui")


def output_dir(rt) -> Path:
    """Where merges go: the --ckpt-dir folder when given (as in A1111), else models/Stable-diffusion."""
    return rt.paths.extra_checkpoint_dirs[0] if rt.paths.extra_checkpoint_dirs else rt.paths.checkpoints


def _titles(rt) -> list[str]:
    return [c.title for c in rt.registry.checkpoints if not c.is_diffusers_dir]


def _vae_choices(rt) -> list[str]:
    return ["None"] + [v.name for v in rt.registry.vaes]


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
                vae = gr.Dropdown(_vae_choices(rt), value="None", label="Bake in VAE",
                                  elem_id="modelmerger_bake_in_vae")
            discard = gr.Textbox(label="Discard weights with matching name", elem_id="modelmerger_discard_weights")
            merge_button = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact"):
            result = gr.HTML(elem_id="modelmerger_result")

    def model_ref(title: str | None, field: str) -> merge.ModelRef | None:
        if not title:
            return None
        info = rt.registry.find_checkpoint(title)
        if info is None:
            raise merge.MergeError(field, f"no checkpoint matches {title!r}; press 🔄 to rescan the folder")
        return merge.ModelRef(info.filename, info.model_name, info.sha256)

    def run(a, b, c, name, m, interp, checkpoint_format, as_half, cfg, bake, discard_rx, metadata):
        keep = [gr.update()] * (4 + len(top))
        try:
            vae_path = None
            if bake and bake != "None":
                found = rt.registry.find_vae(bake)
                if found is None:
                    raise merge.MergeError("bake_in_vae", f"no VAE named {bake!r}")
                vae_path = found.filename
            request = merge.MergeRequest(
                model_ref(a, "primary_model_name"), model_ref(b, "secondary_model_name"),
                model_ref(c, "tertiary_model_name"), interp_method=interp, multiplier=m, custom_name=name or "",
                checkpoint_format=checkpoint_format, save_as_half=bool(as_half), config_source=cfg,
                bake_in_vae=vae_path, discard_weights=discard_rx or "", save_metadata=bool(metadata))
            if request.primary is None:
                raise merge.MergeError("primary_model_name", "choose model A")
            merge.validate(request)  # a bad field is reported at once, not after the queue's current job
            done = rt.queue.run(lambda state: _merge_job(rt, request, state), "model merge")
        except (merge.MergeError, ModelFileError, Interrupted, OSError, RuntimeError, ValueError) as exc:
            log.info("checkpoint merge failed: %s", exc)
            return [common.error_html(str(exc) or "merge interrupted"), *keep]
        rt.registry.refresh()
        titles = _titles(rt)
        info = rt.registry.find_checkpoint(str(done.path))
        shown = info.title if info else done.path.name
        message = (f"<p>Checkpoint saved to {html.escape(str(done.path))}</p>"
                   f"<p>It is in the checkpoint list as <b>{html.escape(shown)}</b>"
                   + (f"; config copied to {html.escape(done.config.name)}" if done.config else "") + ".</p>")
        return [message, *[gr.update(choices=titles)] * 3, gr.update(choices=_vae_choices(rt)), *top_update()]

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


def _merge_job(rt, request: merge.MergeRequest, state: JobState) -> merge.MergeResult:
    """Runs on the job worker: hashes come from the registry's cache, progress goes to /progress, Interrupt stops."""
    for ref in (request.primary, request.secondary, request.tertiary):
        if ref is not None and ref.sha256 is None:
            info = rt.registry.find_checkpoint(str(ref.path))
            if info is not None:
                rt.registry.ensure_hash(info)
                ref.sha256 = info.sha256
    state.job_count = 1

    def progress(done: int, total: int) -> None:
        state.sampling_steps, state.sampling_step = total, done
        if state.interrupted:
            raise Interrupted("merge interrupted; nothing was written")

    return merge.merge_checkpoints(request, output_dir(rt), progress)
