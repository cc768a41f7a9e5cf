"""The img2img tab with A1111's modes: img2img, Inpaint (paint the mask), Inpaint upload (image + mask file) and
Batch (folders); resize mode, denoising strength and the inpainting controls."""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from modules.engine.params import IMG2IMG_DENOISING_DEFAULT, INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES, \
    GenerationParams
from modules.ui import common, extra_networks, interrogate_buttons, progress

log = logging.getLogger("sd.ui")
MODES = ["img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch"]
# the sketch brush's colours (the first is the default); Inpaint keeps its fixed white mask brush
SKETCH_COLORS = ["#ff0000", "#00c000", "#0000ff", "#ffff00", "#ffffff", "#000000"]
I2I_FIELDS = ["resize_mode", "denoising_strength", "mask_blur", "inpainting_fill", "inpaint_full_res",
              "inpaint_full_res_padding", "inpainting_mask_invert"]


def mask_from_editor(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """ImageEditor value → (image, mask): the mask is wherever the user painted on any layer."""
    if not value or value.get("background") is None:
        return None, None
    background = value["background"]
    image = background.convert("RGB") if isinstance(background, Image.Image) else Image.fromarray(background)
    mask = np.zeros((image.height, image.width), dtype=bool)
    for layer in value.get("layers") or []:
        arr = np.asarray(layer.convert("RGBA") if isinstance(layer, Image.Image) else layer)
        if arr.ndim == 3 and arr.shape[2] == 4 and arr.shape[:2] == mask.shape:
            mask |= arr[..., 3] > 0
    return image, Image.fromarray((mask * 255).astype(np.uint8)) if mask.any() else None


def sketch_from_editor(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """ImageEditor value → (the image with the strokes drawn on it, the mask of where anything was drawn).

    Sketch uses the first as the init image; Inpaint sketch uses both: the strokes are the colour to start from and
    the area to repaint. Layers that do not match the image's size (never produced by the editor) are ignored."""
    if not value or value.get("background") is None:
        return None, None
    background = value["background"]
    base = background if isinstance(background, Image.Image) else Image.fromarray(background)
    composite = base.convert("RGBA")
    mask = np.zeros((composite.height, composite.width), dtype=bool)
    for layer in value.get("layers") or []:
        layer = (layer if isinstance(layer, Image.Image) else Image.fromarray(layer)).convert("RGBA")
        if layer.size != composite.size:
            continue
        composite.alpha_composite(layer)
        mask |= np.asarray(layer)[..., 3] > 0
    mask_image = Image.fromarray((mask * 255).astype(np.uint8)) if mask.any() else None
    return composite.convert("RGB"), mask_image


def image_for_mode(mode_name: str, image, sketch_value, editor_value, inpaint_sketch_value, up_image):
    """The picture the current mode shows (what Interrogate describes): the upload, or an editor's image."""
    if mode_name == "Sketch":
        return sketch_from_editor(sketch_value)[0]
    if mode_name == "Inpaint":
        return mask_from_editor(editor_value)[0]
    if mode_name == "Inpaint sketch":
        return sketch_from_editor(inpaint_sketch_value)[0]
    if mode_name == "Inpaint upload":
        return up_image
    return image


def _sketch_editor(label: str, elem_id: str) -> gr.ImageEditor:
    return gr.ImageEditor(label=label, type="pil", elem_id=elem_id, height=360, sources=["upload", "clipboard"],
                          brush=gr.Brush(colors=SKETCH_COLORS, default_color=SKETCH_COLORS[0],
                                         color_mode="defaults"))


def build(rt, native_size: int = 512) -> dict:
    last_seed = gr.State(-1)
    last_images = gr.State([])
    mode = gr.State("img2img")
    top = common.prompt_row(rt, "img2img")
    interrogate = interrogate_buttons.create()
    with gr.Tabs(elem_id="img2img_extra_tabs") as extra_tabs, \
            gr.Tab("Generation", id="img2img_generation", elem_id="img2img_generation"), gr.Row():
        with gr.Column():
            with gr.Tabs(elem_id="mode_img2img") as mode_tabs:
                with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as t_img:
                    init_image = gr.Image(label="Image for img2img", type="pil", elem_id="img2img_image",
                                          sources=["upload", "clipboard"], height=360)
                with gr.Tab("Sketch", id="sketch", elem_id="img2img_img2img_sketch_tab") as t_sketch:
                    sketch = _sketch_editor("Image for img2img", "img2img_sketch")
                with gr.Tab("Inpaint", id="inpaint", elem_id="img2img_inpaint_tab") as t_inpaint:
                    editor = gr.ImageEditor(label="Image for inpainting with mask", type="pil",
                                            elem_id="img2maskimg", height=360,
                                            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                with gr.Tab("Inpaint sketch", id="inpaint_sketch", elem_id="img2img_inpaint_sketch_tab") as t_isk:
                    inpaint_sketch = _sketch_editor("Color sketch inpainting", "inpaint_sketch")
                with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as t_up:
                    upload_image = gr.Image(label="Image", type="pil", elem_id="img_inpaint_base", height=260)
                    upload_mask = gr.Image(label="Mask", type="pil", elem_id="img_inpaint_mask", height=260)
                with gr.Tab("Batch", id="batch", elem_id="img2img_batch_tab") as t_batch:
                    batch_in = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
                    batch_out = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
                    batch_mask = gr.Textbox(label="Inpaint batch mask directory (optional)",
                                            elem_id="img2img_batch_inpaint_mask_dir")
            for tab, name in ((t_img, "img2img"), (t_sketch, "Sketch"), (t_inpaint, "Inpaint"),
                              (t_isk, "Inpaint sketch"), (t_up, "Inpaint upload"), (t_batch, "Batch")):
                tab.select(lambda n=name: n, None, mode, queue=False)
            resize_mode = gr.Radio(RESIZE_MODES, value=RESIZE_MODES[common.default("resize_mode")], type="index",
                                   label="Resize mode", elem_id="resize_mode")
            with gr.Group(elem_id="inpaint_controls"):
                with gr.Row():
                    mask_blur = common.slider("mask_blur", "Mask blur", "img2img_mask_blur")
                    invert = gr.Radio(MASK_MODES, value=MASK_MODES[common.default("inpainting_mask_invert")],
                                      type="index", label="Mask mode", elem_id="img2img_mask_mode")
                with gr.Row():
                    fill = gr.Radio(MASKED_CONTENT, value=MASKED_CONTENT[common.default("inpainting_fill")],
                                    type="index", label="Masked content", elem_id="img2img_inpainting_fill")
                    area = gr.Radio(INPAINT_AREAS, value=INPAINT_AREAS[int(common.default("inpaint_full_res"))],
                                    type="index", label="Inpaint area", elem_id="img2img_inpaint_full_res")
                    padding = common.slider("inpaint_full_res_padding", "Only masked padding, pixels",
                                            "img2img_inpaint_full_res_padding")
            controls = common.sampling_controls("img2img", native_size)
            denoise = common.slider("denoising_strength", "Denoising strength", "img2img_denoising_strength",
                                    value=IMG2IMG_DENOISING_DEFAULT)
            seeds = common.seed_row("img2img", last_seed)
            script_inputs = common.script_area(True)
        with gr.Column():
            out = common.output_panel("img2img")
    with extra_tabs:   # the Extra Networks pages beside "Generation", as in A1111
        extra_networks.create_tabs("img2img")

    fields = common.PARAM_FIELDS + I2I_FIELDS
    comps = {**top, **controls, **seeds, "resize_mode": resize_mode, "denoising_strength": denoise,
             "mask_blur": mask_blur, "inpainting_fill": fill, "inpaint_full_res": area,
             "inpaint_full_res_padding": padding, "inpainting_mask_invert": invert}

    last_result = gr.State({})
    task = progress.task_state("img2img")
    view = progress.ProgressView("img2img", rt.queue)
    results = common.result_outputs(out, last_seed, last_images, last_result)

    finish = common.job_finisher(rt, "img2img", "outdir_img2img_samples")

    def run(mode_name, image, sketch_value, editor_value, inpaint_sketch_value, up_image, up_mask, b_in, b_out,
            b_mask, styles, *values):
        values, script_args = common.split_script_values(fields, values)
        kw = common.params_kwargs(fields, values)
        try:
            if mode_name == "Batch":
                if not b_in or not b_out:
                    raise ValueError("Batch: give an input and an output directory")
                written = rt.img2img_folder(GenerationParams(**kw, styles=list(styles or [])), Path(b_in),
                                            Path(b_out), Path(b_mask) if b_mask else None)
                yield ("", [str(w) for w in written], f"{len(written)} images written to {b_out}", "", "",
                       gr.skip(), gr.skip(), gr.skip(), progress.remembered(""))
                return
            mask = None
            if mode_name == "Sketch":
                image, _drawn = sketch_from_editor(sketch_value)
            elif mode_name == "Inpaint":
                image, mask = mask_from_editor(editor_value)
                if mask is None:
                    raise ValueError("Inpaint: paint the area to repaint on the image first")
            elif mode_name == "Inpaint sketch":
                image, mask = sketch_from_editor(inpaint_sketch_value)
                if image is not None and mask is None:
                    raise ValueError("Inpaint sketch: draw over the area to repaint first")
            elif mode_name == "Inpaint upload":
                image, mask = up_image, up_mask
                if mask is None:
                    raise ValueError("Inpaint upload: upload a mask image (white = repaint)")
            if image is None:
                raise ValueError(f"{mode_name}: upload an image first")
            p = GenerationParams(**kw, styles=list(styles or []), init_images=[image], mask=mask)
            job = rt.submit_generate(p, script_args=script_args)
        except progress.EXPECTED_ERRORS as exc:
            log.info("img2img failed: %s", exc)
            yield ("", *common.failed_values(progress.error_message(exc)), progress.remembered(""))
            return
        yield from progress.follow(job, view, finish, len(results))

    interrogate_buttons.wire(rt, interrogate, top["prompt"], mode, image_for_mode,
                             [init_image, sketch, editor, inpaint_sketch, upload_image], batch_in, batch_out)
    inputs = [mode, init_image, sketch, editor, inpaint_sketch, upload_image, upload_mask, batch_in, batch_out,
              batch_mask, top["styles"]] + [comps[f] for f in fields] + script_inputs
    outputs = [out["progress"], *results, task]
    top["generate"].click(run, inputs, outputs, concurrency_limit=None, show_progress="hidden")
    progress.reattach_on_load(rt.queue, view, out["progress"], task, results, finish)
    common.wire_outputs(rt, "img2img", out, last_images, last_result)
    index_choices = {"resize_mode": RESIZE_MODES, "inpainting_fill": MASKED_CONTENT,
                     "inpaint_full_res": INPAINT_AREAS, "inpainting_mask_invert": MASK_MODES}
    script_paste = common.script_paste_targets(True)   # the always-on scripts' infotext_fields
    top["paste"].click(lambda text: common.paste_fields(rt, text, fields, index_choices, script_paste),
                       top["prompt"], [comps[f] for f in fields] + [c for c, _ in script_paste], queue=False)
    return {**comps, **out, "init_image": init_image, "editor": editor, "sketch": sketch,
            "inpaint_sketch": inpaint_sketch, "mode_tabs": mode_tabs, "mode": mode, "last_images": last_images,
            "fields": fields, "script_paste": script_paste}
