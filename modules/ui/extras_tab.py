"""Extras: resize/upscale a single image or a batch with one or two upscalers (Pillow ones, upscaler models), then
face restoration (GFPGAN, CodeFormer) by visibility, as A1111's postprocessing runs them."""
from __future__ import annotations

import gradio as gr

from modules.engine import extras
from modules.interrogate.weights import WeightsMissing
from modules.models.upscaler_models import UpscalerModelMissing
from modules.ui import common, create_refresh_button


def upscaler_choices(rt) -> list[str]:
    """None, Lanczos, Nearest, then the model upscalers (their folders read again: 🔄 shows a new file)."""
    return list(extras.UPSCALERS) + rt.upscaler_models.names()


def build(rt) -> dict:
    with gr.Row():
        with gr.Column():
            with gr.Tabs():
                with gr.Tab("Single Image", elem_id="extras_single_tab"):
                    image = gr.Image(label="Source", type="pil", elem_id="extras_image", height=320)
                with gr.Tab("Batch Process", elem_id="extras_batch_tab"):
                    batch = gr.File(label="Batch Process", file_count="multiple", elem_id="extras_image_batch")
            mode = gr.Radio(["Scale by", "Scale to"], value="Scale by", type="index", label="Resize",
                            elem_id="extras_resize_mode")
            with gr.Row():
                scale = gr.Slider(1, 8, value=2, step=0.05, label="Resize", elem_id="extras_upscaling_resize")
                width = gr.Slider(64, 4096, value=512, step=8, label="Width", elem_id="extras_upscaling_resize_w")
                height = gr.Slider(64, 4096, value=512, step=8, label="Height", elem_id="extras_upscaling_resize_h")
                crop = gr.Checkbox(label="Crop to fit", value=True, elem_id="extras_upscaling_crop")
            with gr.Row():
                choices = upscaler_choices(rt)
                upscaler = gr.Dropdown(choices, value="Lanczos", label="Upscaler 1", elem_id="extras_upscaler_1")
                upscaler_2 = gr.Dropdown(choices, value="None", label="Upscaler 2", elem_id="extras_upscaler_2")
                create_refresh_button([upscaler, upscaler_2], lambda: None,
                                      lambda: {"choices": upscaler_choices(rt)}, "extras_refresh_upscalers")
            visibility_2 = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                     elem_id="extras_upscaler_2_visibility")
            with gr.Row():   # A1111's GFPGAN and CodeFormer postprocessing scripts; 0 leaves the image alone
                gfpgan = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility",
                                   elem_id="extras_gfpgan_visibility")
                codeformer = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility",
                                       elem_id="extras_codeformer_visibility")
                codeformer_weight = gr.Slider(0.0, 1.0, value=0.0, step=0.001,
                                              label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                              elem_id="extras_codeformer_weight")
            run_button = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column():
            gallery = gr.Gallery(label="Result", format="png", elem_id="extras_gallery", interactive=False)
            message = gr.HTML(elem_id="html_info_extras")

    def run(img, files, mode_index, factor, w, h, do_crop, name, name_2, visibility, gfpgan_v, codeformer_v,
            codeformer_w):
        from PIL import Image
        try:
            sources = [img] if img is not None else [Image.open(f.name if hasattr(f, "name") else f)
                                                     for f in (files or [])]
            if not sources:
                raise ValueError("Extras: upload an image first")
            outs = rt.extras(sources, upscaler_1=name, upscaler_2=name_2 or "None",
                             visibility_2=float(visibility or 0), resize_mode=int(mode_index), scale=float(factor),
                             width=int(w), height=int(h), crop=bool(do_crop), gfpgan_visibility=float(gfpgan_v or 0),
                             codeformer_visibility=float(codeformer_v or 0),
                             codeformer_weight=float(codeformer_w or 0))
        except (ValueError, UpscalerModelMissing, WeightsMissing) as exc:   # a bad choice; a file missing (offline)
            return gr.update(), common.error_html(str(exc))
        return outs, f"<p>{outs[0].width}x{outs[0].height}</p>"

    run_button.click(run, [image, batch, mode, scale, width, height, crop, upscaler, upscaler_2, visibility_2,
                           gfpgan, codeformer, codeformer_weight], [gallery, message])
    return {"image": image, "gallery": gallery}
