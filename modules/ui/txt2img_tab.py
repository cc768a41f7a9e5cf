"""The txt2img tab: prompt boxes, sampling controls, Generate, gallery and generation info."""
from __future__ import annotations

import html
import logging

import gradio as gr

from modules.engine import samplers
from modules.engine.params import GenerationParams
from modules.models.manager import NoModelError

log = logging.getLogger("sd.ui")


def error_html(message: str) -> str:
    return f'<div class="sd-error" role="alert">{html.escape(message)}</div>'


def build(rt, native_size: int = 512) -> dict:
    with gr.Row():
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (press Ctrl+Enter to generate)",
                                elem_id="txt2img_prompt")
            negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="Negative prompt",
                                  elem_id="txt2img_neg_prompt")
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                sampler = gr.Dropdown(samplers.sampler_names(), value="DPM++ 2M", label="Sampling method",
                                      elem_id="txt2img_sampling")
                schedule = gr.Dropdown(samplers.SCHEDULES, value="Automatic", label="Schedule type",
                                       elem_id="txt2img_scheduler")
                steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="txt2img_steps")
            with gr.Row():
                width = gr.Slider(64, 2048, value=native_size, step=8, label="Width", elem_id="txt2img_width")
                height = gr.Slider(64, 2048, value=native_size, step=8, label="Height", elem_id="txt2img_height")
            with gr.Row():
                batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id="txt2img_batch_count")
                batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="txt2img_batch_size")
            cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
            seed = gr.Number(value=-1, precision=0, label="Seed", elem_id="txt2img_seed")
        with gr.Column():
            gallery = gr.Gallery(label="Output", format="png", columns=2, elem_id="txt2img_gallery",
                                 interactive=False)
            info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="generation_info_txt2img")
            message = gr.HTML(elem_id="html_info_txt2img")

    def run(prompt_text, negative_text, sampler_name, schedule_name, n_steps, w, h, n_iter, size, cfg_scale,
            seed_value):
        p = GenerationParams(prompt=prompt_text or "", negative_prompt=negative_text or "", sampler_name=sampler_name,
                             scheduler=schedule_name, steps=int(n_steps), width=int(w), height=int(h),
                             n_iter=int(n_iter), batch_size=int(size), cfg_scale=float(cfg_scale),
                             seed=int(seed_value) if seed_value is not None else -1)
        try:
            result = rt.generate(p)
        except (ValueError, KeyError, NoModelError, RuntimeError, OSError) as exc:
            log.info("txt2img failed: %s", exc)
            return gr.update(), "", error_html(str(exc.args[0] if isinstance(exc, KeyError) else exc))
        shown = result.saved_paths if len(result.saved_paths) == len(result.images) else result.images
        return shown, result.infotexts[0] if result.infotexts else "", ""

    inputs = [prompt, negative, sampler, schedule, steps, width, height, batch_count, batch_size, cfg, seed]
    generate.click(run, inputs, [gallery, info, message], concurrency_limit=None)
    prompt.submit(run, inputs, [gallery, info, message], concurrency_limit=None)
    interrupt.click(lambda: rt.queue.interrupt_current(), None, None, queue=False)
    return {"width": width, "height": height}
