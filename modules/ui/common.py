"""Widgets shared by the txt2img and img2img tabs: prompt boxes with token counters, sampling controls, seed row.

Each builder returns a dict of components; `params_kwargs` turns their values into GenerationParams keyword
arguments. Widget defaults, limits and casts come from the parameter schema (modules/engine/params.FIELDS), so the UI,
the API and the infotext cannot disagree about them.
"""
from __future__ import annotations

import contextlib
import html
import logging

import gradio as gr

from modules import scripts
from modules.engine import samplers
from modules.engine.params import BY_NAME
from modules.engine.prompt_chunks import token_count

log = logging.getLogger("sd.ui")

PARAM_FIELDS = ["prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "width", "height", "n_iter",
                "batch_size", "cfg_scale", "seed", "subseed", "subseed_strength", "seed_resize_from_w",
                "seed_resize_from_h"]


def error_html(message: str) -> str:
    return f'<div class="sd-error" role="alert">{html.escape(message)}</div>'


def prompt_row(rt, tab: str) -> dict:
    with gr.Row():
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (press Ctrl+Enter to generate)",
                                elem_id=f"{tab}_prompt")
            prompt_count = gr.HTML("0/75", elem_id=f"{tab}_token_counter", elem_classes=["token-counter"])
            negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="Negative prompt",
                                  elem_id=f"{tab}_neg_prompt")
            negative_count = gr.HTML("0/75", elem_id=f"{tab}_negative_token_counter", elem_classes=["token-counter"])
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", min_width=60)
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", min_width=60)
                # A1111's "Read generation parameters from prompt or last generation if prompt is empty"
                paste = gr.Button("↙️", elem_id=f"{tab}_paste", min_width=40, scale=0)
            styles = gr.Dropdown(list(rt.styles.styles), value=[], multiselect=True, label="Styles",
                                 elem_id=f"{tab}_styles")

    def count(text):
        model = rt.models.model
        if model is None:
            return "?/75"
        # a textual-inversion embedding counts as its number of vectors (A1111's counter)
        used, limit = token_count(model.tokenizers[0], text or "",
                                  find_embedding=rt.embeddings.token_counter_lookup(model))
        return f"{used}/{limit}"

    prompt.change(count, prompt, prompt_count, show_progress="hidden", queue=False)
    negative.change(count, negative, negative_count, show_progress="hidden", queue=False)
    interrupt.click(lambda: rt.queue.interrupt_current(), None, None, queue=False)
    skip.click(lambda: rt.queue.skip_current(), None, None, queue=False)
    return {"prompt": prompt, "negative_prompt": negative, "generate": generate, "styles": styles, "paste": paste}


def slider(name: str, label: str, elem_id: str, minimum: float | None = None, maximum: float | None = None,
           step: float | None = None, value=None) -> gr.Slider:
    """A slider for a schema field: its default, and its limits unless the UI shows a narrower range (A1111's)."""
    f = BY_NAME[name]
    return gr.Slider(f.minimum if minimum is None else minimum, f.maximum if maximum is None else maximum,
                     value=f.ui_default() if value is None else value, step=f.step if step is None else step,
                     label=label, elem_id=elem_id)


def default(name: str):
    return BY_NAME[name].ui_default()


def sampling_controls(tab: str, native_size: int) -> dict:
    with gr.Row():
        sampler = gr.Dropdown(samplers.sampler_names(), value=default("sampler_name"), label="Sampling method",
                              elem_id=f"{tab}_sampling")
        schedule = gr.Dropdown(samplers.SCHEDULES, value=default("scheduler"), label="Schedule type",
                               elem_id=f"{tab}_scheduler")
        steps = slider("steps", "Sampling steps", f"{tab}_steps")
    with gr.Row():
        with gr.Column(scale=4):
            # the loaded model's native size, not the schema's 512 (A1111 keeps 512 whatever the model)
            width = slider("width", "Width", f"{tab}_width", minimum=64, value=native_size)
            height = slider("height", "Height", f"{tab}_height", minimum=64, value=native_size)
        swap = gr.Button("⇅", elem_id=f"{tab}_res_switch_btn", min_width=40, scale=0)
        with gr.Column(scale=2):
            batch_count = slider("n_iter", "Batch count", f"{tab}_batch_count", maximum=100)
            batch_size = slider("batch_size", "Batch size", f"{tab}_batch_size", maximum=8)
    swap.click(lambda w, h: (h, w), [width, height], [width, height], queue=False)
    cfg = slider("cfg_scale", "CFG Scale", f"{tab}_cfg_scale", minimum=1, maximum=30)
    return {"sampler_name": sampler, "scheduler": schedule, "steps": steps, "width": width, "height": height,
            "n_iter": batch_count, "batch_size": batch_size, "cfg_scale": cfg}


def seed_row(tab: str, last_seed: gr.State) -> dict:
    with gr.Row():
        seed = gr.Number(value=default("seed"), precision=0, label="Seed", elem_id=f"{tab}_seed", scale=4)
        random_seed = gr.Button("🎲", elem_id=f"{tab}_random_seed", min_width=40, scale=0)
        reuse_seed = gr.Button("♻️", elem_id=f"{tab}_reuse_seed", min_width=40, scale=0)
        extra = gr.Checkbox(label="Extra", value=False, elem_id=f"{tab}_subseed_show", scale=1)
    with gr.Row(visible=False) as extra_row:
        subseed = gr.Number(value=default("subseed"), precision=0, label="Variation seed", elem_id=f"{tab}_subseed")
        subseed_strength = slider("subseed_strength", "Variation strength", f"{tab}_subseed_strength")
        resize_w = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                             elem_id=f"{tab}_seed_resize_from_w")
        resize_h = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                             elem_id=f"{tab}_seed_resize_from_h")
    random_seed.click(lambda: -1, None, seed, queue=False)
    reuse_seed.click(lambda s: s if s is not None else -1, last_seed, seed, queue=False)
    extra.change(lambda show: gr.update(visible=show), extra, extra_row, queue=False)
    return {"seed": seed, "subseed": subseed, "subseed_strength": subseed_strength, "seed_resize_from_w": resize_w,
            "seed_resize_from_h": resize_h}


def params_kwargs(fields: list[str], values: list) -> dict:
    """Widget values → GenerationParams keyword arguments, each cast to its schema field's type (sliders give
    floats; radios with type="index" give indices; an empty Number gives None → the field's default)."""
    kw = {name: BY_NAME[name].cast(value) for name, value in zip(fields, values)}
    for key in ("seed_resize_from_w", "seed_resize_from_h"):  # the sliders' 0 means "off", A1111's -1
        if kw.get(key) == 0:
            kw[key] = -1
    return kw


def output_panel(tab: str) -> dict:
    """Progress bar, gallery, Save / Zip / Send-to buttons, generation info and messages under every generating
    tab."""
    bar = gr.HTML("", elem_id=f"{tab}_progress", elem_classes=["sd-progress-area"])
    gallery = gr.Gallery(label="Output", format="png", columns=2, elem_id=f"{tab}_gallery", interactive=False,
                         height=420)
    with gr.Row(elem_id=f"image_buttons_{tab}"):
        save = gr.Button("Save", elem_id=f"{tab}_save", size="sm", min_width=60)
        make_zip = gr.Button("Zip", elem_id=f"{tab}_zip", size="sm", min_width=60)
        to_img2img = gr.Button("Send to img2img", elem_id=f"{tab}_send_to_img2img", size="sm")
        to_inpaint = gr.Button("Send to inpaint", elem_id=f"{tab}_send_to_inpaint", size="sm")
        to_extras = gr.Button("Send to extras", elem_id=f"{tab}_send_to_extras", size="sm")
    download = gr.File(label="Download", visible=False, interactive=False, elem_id=f"download_files_{tab}")
    info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id=f"generation_info_{tab}")
    message = gr.HTML(elem_id=f"html_info_{tab}")
    folder = gr.HTML(elem_id=f"{tab}_output_folder", elem_classes=["output-folder"])
    selected = gr.State(-1)
    gallery.select(_selected_index, None, selected, queue=False)
    gallery.change(lambda: -1, None, selected, queue=False)
    return {"gallery": gallery, "info": info, "message": message, "folder": folder, "to_img2img": to_img2img,
            "to_inpaint": to_inpaint, "to_extras": to_extras, "progress": bar, "save": save, "zip": make_zip,
            "download": download, "selected": selected}


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index if isinstance(evt.index, int) else -1


def wire_outputs(rt, tab: str, out: dict, last_images: gr.State, last_result: gr.State) -> None:
    """Save and Zip: write into outputs/save and offer the file for download; problems show as a message."""
    from modules.ui import saving

    def save(images, summary, index):
        try:
            path = saving.save_one(rt.paths.outputs, images, summary, index if index is not None else -1)
        except (ValueError, OSError) as exc:
            return gr.update(), error_html(str(exc))
        return gr.update(value=str(path), visible=True), f"Saved: {html.escape(path.name)}"

    def make_zip(images, summary):
        try:
            path = saving.zip_all(rt.paths.outputs, images, summary)
        except (ValueError, OSError) as exc:
            return gr.update(), error_html(str(exc))
        return gr.update(value=str(path), visible=True), f"Saved: {html.escape(path.name)}"

    out["save"].click(save, [last_images, last_result, out["selected"]], [out["download"], out["message"]])
    out["zip"].click(make_zip, [last_images, last_result], [out["download"], out["message"]])


def result_outputs(out: dict, last_seed: gr.State, last_images: gr.State, last_result: gr.State) -> list:
    """The components a finished generation fills, in the order finished_values / failed_values give them."""
    return [out["gallery"], out["info"], out["message"], out["folder"], last_seed, last_images, last_result]


def failed_values(message: str) -> tuple:
    return gr.skip(), "", error_html(message), gr.skip(), gr.skip(), gr.skip(), gr.skip()


def job_finisher(rt, tab: str, outdir_option: str):
    """What a generating tab shows when its job ends: the error line, or the images, infotext and output folder."""
    from modules.ui import progress

    def finish(job):
        message = progress.job_error(job)
        if message is not None:
            log.info("%s failed: %s", tab, message)
            return failed_values(message)
        return finished_values(job.result, f"Saved to {rt.paths.data / rt.options.get(outdir_option)}")
    return finish


def finished_values(result, folder: str) -> tuple:
    from modules.ui import saving
    shown = result.saved_paths if len(result.saved_paths) == len(result.images) else result.images
    # A1111 shows the job's comments ("Networks not found: …") under the images
    comments = "".join(f"<p class=\"sd-comment\">{html.escape(c)}</p>" for c in result.comments.splitlines() if c)
    return (shown, result.infotexts[0] if result.infotexts else "", comments, folder if result.saved_paths else "",
            result.seeds[0] if result.seeds else -1, result.images, saving.result_summary(result))


def paste_fields(rt, text: str, fields: list[str], index_choices: dict | None = None,
                 script_targets: list | None = None) -> list:
    """↙: the prompt box's infotext (or, when it is empty, the last generation's) → one update per field, then one
    per script paste target (script_paste_targets)."""
    from modules.ui import pnginfo_tab
    text = (text or "").strip() or rt.last_infotext()
    updates = pnginfo_tab.paste_values(text, fields)
    for i, name in enumerate(fields):  # radios that hand the handler an index show their label
        choices = (index_choices or {}).get(name)
        value = updates[i].get("value") if isinstance(updates[i], dict) else None
        if choices and isinstance(value, (int, bool)) and 0 <= int(value) < len(choices):
            updates[i] = gr.update(value=choices[int(value)])
    return updates + script_paste_values(text, script_targets or [])


def script_paste_targets(is_img2img: bool) -> list:
    """The always-on scripts' `infotext_fields` of a tab, (component, infotext key or callable(params)) pairs, as
    collected while its script area was built (call after common.script_area)."""
    return list(scripts.runner_for(is_img2img).infotext_fields)


def script_paste_values(text: str, targets: list) -> list:
    """A1111's paste for scripts' infotext_fields: the infotext parsed to A1111's dict (infotext_pasted callbacks
    included); a key's value, or the callable's result, becomes the component's value, cast to the type of its
    current value ("False" for a checkbox is False); None, or a value that cannot be cast, leaves it as it is; a
    gr.update is used as it is."""
    if not targets:
        return []
    from modules import infotext_utils
    params = infotext_utils.parse_generation_parameters(text) if text else {}
    out = []
    for component, key in targets:
        try:
            value = key(params) if callable(key) else params.get(key)
        except Exception:  # noqa: BLE001 - one script's bad field must not stop the paste
            log.exception("pasting infotext into %s failed", getattr(component, "elem_id", component))
            value = None
        out.append(_cast_pasted(component, value))
    return out


def _cast_pasted(component, value):
    if value is None:
        return gr.update()
    if isinstance(value, dict) and value.get("__type__") == "update":
        return value
    kind = type(getattr(component, "value", None))
    try:
        if kind is bool and isinstance(value, str):
            value = value == "True"
        elif kind in (bool, int, float, str):
            value = float(value) if kind is int else kind(value)
    except (TypeError, ValueError):
        return gr.update()
    return gr.update(value=value)


@contextlib.contextmanager
def scripts_tab(is_img2img: bool):
    """While a generation tab is built, its script runner sees every component created (A1111's
    before_component/after_component: extensions capture txt2img_width, txt2img_prompt, ... this way)."""
    previous = scripts.scripts_current
    scripts.scripts_current = scripts.runner_for(is_img2img)
    try:
        yield scripts.scripts_current
    finally:
        scripts.scripts_current = previous


def script_area(is_img2img: bool) -> list:
    """The always-on scripts' controls, then the Script dropdown with the selectable scripts' controls. Returns the
    inputs in the order of the scripts' argument vector (the dropdown, an index, first)."""
    tab = "img2img" if is_img2img else "txt2img"
    with gr.Column(elem_id=f"{tab}_script_container"):
        return scripts.runner_for(is_img2img).setup_ui()


def split_script_values(fields: list[str], values: list) -> tuple[list, list]:
    """A Generate click's values: the parameter fields, then the script inputs (the dropdown's index first)."""
    params, rest = list(values[:len(fields)]), list(values[len(fields):])
    if rest:
        rest[0] = rest[0] or 0
    return params, rest
