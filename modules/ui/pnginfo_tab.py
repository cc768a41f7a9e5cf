"""PNG Info: drop an image, read its generation parameters, send them to txt2img / img2img / inpaint / extras."""
from __future__ import annotations

import html

import gradio as gr

from modules import images
from modules.engine import infotext


def build() -> dict:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="pil", elem_id="pnginfo_image", sources=["upload", "clipboard"],
                             height=360)
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_generation_info")
            details = gr.HTML(elem_id="pnginfo_html_info")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
                to_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_to_inpaint")
                to_extras = gr.Button("Send to extras", elem_id="pnginfo_send_to_extras")

    image.change(read, image, [text, details], queue=False)
    return {"image": image, "text": text, "to_txt2img": to_txt2img, "to_img2img": to_img2img,
            "to_inpaint": to_inpaint, "to_extras": to_extras}


def read(img) -> tuple[str, str]:
    """The image's infotext (PNG chunk, or JPEG/WebP EXIF, read as /sdapi/v1/png-info reads it) and its other text
    fields as HTML."""
    if img is None:
        return "", ""
    params, others = images.read_info(img)
    rows = "".join(f"<p><b>{html.escape(k)}</b><br>{html.escape(v)}</p>" for k, v in others.items())
    if params is None:
        return "", rows or "<p>No generation parameters in this image.</p>"
    return params, rows


def paste_values(text: str, fields: list[str]) -> list:
    """Infotext → one gr.update per field of a generating tab (fields not in the text are left as they are)."""
    if not text:
        return [gr.update() for _ in fields]
    params, _overrides = infotext.to_params(text)
    params.update(_callback_rewrites(text))
    problems = infotext.unsupported(text)
    if problems:
        # never replaced by something else silently: the fields stay as they are, and the user is told
        gr.Warning(unsupported_message(problems))
        for item in problems:
            field = _UNSUPPORTED_FIELDS.get(item.partition(":")[0])
            params.pop(field, None)
    if "enable_hr" not in params and "enable_hr" in fields:
        params["enable_hr"] = False
    return [gr.update(value=params[f]) if f in params else gr.update() for f in fields]


_UNSUPPORTED_FIELDS = {"Sampler": "sampler_name", "Schedule type": "scheduler", "Hires sampler": "hr_sampler_name",
                       "Hires schedule type": "hr_scheduler"}


def unsupported_message(problems: list[str]) -> str:
    return "not supported here: " + "; ".join(problems)


_PROMPT_KEYS = {"Prompt": "prompt", "Negative prompt": "negative_prompt", "Hires prompt": "hr_prompt",
                "Hires negative prompt": "hr_negative_prompt"}


def _callback_rewrites(text: str) -> dict:
    """The prompts as extensions' infotext_pasted callbacks leave them (the Lora extension renames a pasted LoRA to
    the file here with the same hash), A1111's paste order: callbacks first, then the fields."""
    from modules import infotext_utils
    pasted = infotext_utils.parse_generation_parameters(text)
    return {name: pasted[key] for key, name in _PROMPT_KEYS.items()
            if isinstance(pasted.get(key), str) and (pasted[key] or name in ("prompt", "negative_prompt"))}
