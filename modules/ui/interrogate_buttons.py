"""img2img's "Interrogate CLIP" and "Interrogate DeepBooru" buttons: the image of the current mode (or, in Batch,
every image of the input folder) described by the interrogator, the text put into the prompt box (Batch: one
`<name>.txt` per image in the output folder, as A1111 writes them)."""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from PIL import Image

from modules.engine import payload as payload_codec
from modules.ui import progress

log = logging.getLogger("sd.ui")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")   # what img2img's Batch reads

# A1111's labels (two lines on the button) and element ids
BUTTONS = (("Interrogate\nCLIP", "interrogate", "clip"), ("Interrogate\nDeepBooru", "deepbooru", "deepdanbooru"))


def interrogate(rt, image: Image.Image, model: str) -> str:
    """One image through the queued "interrogate" job (so it never runs beside a generation)."""
    return rt.queue.run("interrogate", {"image": payload_codec.image_to_png(image.convert("RGB")), "model": model})


def _batch(rt, model: str, input_dir: str, output_dir: str) -> int:
    if not input_dir or not output_dir:
        raise gr.Error("Batch: give an input and an output directory")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(Path(input_dir).iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        with Image.open(path) as im:
            text = interrogate(rt, im, model)
        (out / f"{path.stem}.txt").write_text(text, encoding="utf-8")
        count += 1
    return count


def create() -> dict:
    """The two buttons in a row (placed where this is called; wired by `wire`)."""
    with gr.Row(elem_id="img2img_interrogate_row"):
        return {model: gr.Button(label, elem_id=elem_id, size="sm", min_width=120, scale=0)
                for label, elem_id, model in BUTTONS}


def wire(rt, buttons: dict, prompt: gr.Textbox, mode: gr.State, image_for_mode, sources: list,
         batch_in: gr.Textbox, batch_out: gr.Textbox) -> None:
    """`image_for_mode(mode, *sources)` picks the mode's image (None when empty)."""
    def run(model, mode_name, current_prompt, b_in, b_out, *values):
        try:
            if mode_name == "Batch":
                n = _batch(rt, model, b_in, b_out)
                gr.Info(f"{n} captions written to {b_out}")
                return current_prompt
            image = image_for_mode(mode_name, *values)
            if image is None:
                raise gr.Error(f"{mode_name}: upload an image first")
            return interrogate(rt, image, model)
        except gr.Error:
            raise
        except Exception as exc:  # a missing or broken model file, a failed download: one line in the toast
            log.info("interrogate failed: %s", exc)
            raise gr.Error(progress.error_message(exc)) from None

    for model, button in buttons.items():
        button.click(lambda *a, m=model: run(m, *a), [mode, prompt, batch_in, batch_out, *sources], prompt,
                     show_progress="minimal")
