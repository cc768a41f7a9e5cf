"""The txt2img tab: prompts, sampling, seed, Hires. fix, Generate, and the output panel."""
from __future__ import annotations

import logging

import gradio as gr

from modules.engine.params import HR_DENOISING_DEFAULT, GenerationParams
from modules.engine.run import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES
from modules.ui import common, create_refresh_button, extra_networks, progress

log = logging.getLogger("sd.ui")
HIRES_FIELDS = ["enable_hr", "hr_upscaler", "hr_second_pass_steps", "denoising_strength", "hr_scale", "hr_resize_x",
                "hr_resize_y"]


def hires_upscalers(rt) -> list[str]:
    """The latent modes, the Pillow upscalers, then the model upscalers (folders read again: 🔄 shows a new file)."""
    return list(LATENT_UPSCALE_MODES) + list(IMAGE_UPSCALERS) + rt.upscaler_models.names()


def build(rt, native_size: int = 512) -> dict:
    last_seed = gr.State(-1)
    last_images = gr.State([])
    top = common.prompt_row(rt, "txt2img")
    with gr.Tabs(elem_id="txt2img_extra_tabs") as extra_tabs, \
            gr.Tab("Generation", id="txt2img_generation", elem_id="txt2img_generation"), gr.Row():
        with gr.Column():
            controls = common.sampling_controls("txt2img", native_size)
            seeds = common.seed_row("txt2img", last_seed)
            with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires_fix"):
                enable_hr = gr.Checkbox(label="Enable", value=False, elem_id="txt2img_enable_hr")
                with gr.Row():
                    hr_upscaler = gr.Dropdown(hires_upscalers(rt), value=common.default("hr_upscaler"),
                                              label="Upscaler", elem_id="txt2img_hr_upscaler")
                    create_refresh_button(hr_upscaler, lambda: None, lambda: {"choices": hires_upscalers(rt)},
                                          "txt2img_hr_refresh_upscalers")
                    hr_steps = common.slider("hr_second_pass_steps", "Hires steps", "txt2img_hires_steps")
                    hr_denoise = common.slider("denoising_strength", "Denoising strength",
                                               "txt2img_denoising_strength", value=HR_DENOISING_DEFAULT)
                with gr.Row():
                    hr_scale = common.slider("hr_scale", "Upscale by", "txt2img_hr_scale", maximum=4)
                    hr_x = common.slider("hr_resize_x", "Resize width to", "txt2img_hr_resize_x", maximum=2048)
                    hr_y = common.slider("hr_resize_y", "Resize height to", "txt2img_hr_resize_y", maximum=2048)
            script_inputs = common.script_area(False)
        with gr.Column():
            out = common.output_panel("txt2img")
    with extra_tabs:   # the Extra Networks pages beside "Generation", as in A1111
        extra_networks.create_tabs("txt2img")

    fields = common.PARAM_FIELDS + HIRES_FIELDS
    comps = {**top, **controls, **seeds, "enable_hr": enable_hr, "hr_upscaler": hr_upscaler,
             "hr_second_pass_steps": hr_steps, "denoising_strength": hr_denoise, "hr_scale": hr_scale,
             "hr_resize_x": hr_x, "hr_resize_y": hr_y}

    last_result = gr.State({})
    task = progress.task_state("txt2img")
    view = progress.ProgressView("txt2img", rt.queue)
    results = common.result_outputs(out, last_seed, last_images, last_result)

    finish = common.job_finisher(rt, "txt2img", "outdir_txt2img_samples")

    def run(styles, *values):
        values, script_args = common.split_script_values(fields, values)
        kw = common.params_kwargs(fields, values)
        try:
            job = rt.submit_generate(GenerationParams(**kw, styles=list(styles or [])), script_args=script_args)
        except progress.EXPECTED_ERRORS as exc:
            log.info("txt2img failed: %s", exc)
            yield ("", *common.failed_values(progress.error_message(exc)), progress.remembered(""))
            return
        yield from progress.follow(job, view, finish, len(results))

    inputs = [top["styles"]] + [comps[f] for f in fields] + script_inputs
    outputs = [out["progress"], *results, task]
    top["generate"].click(run, inputs, outputs, concurrency_limit=None, show_progress="hidden")
    top["prompt"].submit(run, inputs, outputs, concurrency_limit=None, show_progress="hidden")
    progress.reattach_on_load(rt.queue, view, out["progress"], task, results, finish)
    common.wire_outputs(rt, "txt2img", out, last_images, last_result)
    script_paste = common.script_paste_targets(False)   # the always-on scripts' infotext_fields
    top["paste"].click(lambda text: common.paste_fields(rt, text, fields, script_targets=script_paste),
                       top["prompt"], [comps[f] for f in fields] + [c for c, _ in script_paste], queue=False)
    return {**comps, **out, "last_images": last_images, "fields": fields, "script_paste": script_paste}
