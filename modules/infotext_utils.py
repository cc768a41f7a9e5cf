"""A1111's `modules.infotext_utils` (also importable as `modules.generation_parameters_copypaste`): the infotext
parsed into A1111's dict, extensions' infotext_pasted callbacks, and the registry of "Send to …" paste buttons.

The parser is ours (modules/engine/infotext.py); this module gives its result A1111's shape: text values, `Size-1`/
`Size-2` for every "WxH" value, and A1111's defaults for keys a short infotext leaves out. Paste bindings that
extensions register are kept in `registered_param_bindings` for the UI to wire.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import tempfile

from modules import shared
from modules.engine import infotext as _infotext

_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")

# Keys A1111 fills in when an infotext does not have them (the value the generation used by default). RNG: our
# runs leave it out when it is CPU, our default (A1111's default, and so its missing value, is GPU).
A1111_DEFAULTS = {
    "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
    "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
    "Masked area padding": 32, "RNG": "CPU", "Schedule type": "Automatic", "Schedule max sigma": 0,
    "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full", "FP8 weight": "Disable",
}

# (infotext key, setting) pairs beyond the settings' own OptionInfo(infotext=…); empty, as in A1111 1.10.
infotext_to_setting_name_mapping: list[tuple[str, str]] = []

paste_fields: dict[str, dict] = {}
registered_param_bindings: list["ParamBinding"] = []


def quote(text) -> str:
    text = str(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001 - a half-quoted value stays as written
        return text


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict:
    """Infotext → A1111's dict ("Prompt", "Negative prompt", "Steps": "20", "Size-1": "512", …), then the extensions'
    infotext_pasted callbacks (which may change it). Keys in the infotext_skip_pasting setting or `skip_fields`
    are left out."""
    res: dict = {}
    parsed = _infotext.parse(x or "")
    split = {k[:-2] for k in parsed if k.endswith(("-1", "-2")) and k[:-2] in parsed}
    for key, value in parsed.items():
        if key.endswith(("-1", "-2")) and key[:-2] in split:
            continue  # our parser's own WxH split; done again below for every key
        if key in ("Prompt", "Negative prompt"):
            res[key] = value
            continue
        text = value if isinstance(value, str) else str(value)
        m = _IMAGE_SIZE.match(text)
        if m is not None:
            res[f"{key}-1"], res[f"{key}-2"] = m.group(1), m.group(2)
        else:
            res[key] = text
    for key, value in A1111_DEFAULTS.items():
        res.setdefault(key, value)
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    skip = set(skip_fields or [])
    if shared.bound():
        skip |= set(shared.opts.data.get("infotext_skip_pasting", []) or [])
    res = {k: v for k, v in res.items() if k not in skip}
    from modules import script_callbacks
    script_callbacks.infotext_pasted_callback(x, res)
    return res


def _setting_mapping() -> list[tuple[str, str]]:
    labels = shared.opts.data_labels if shared.bound() else {}
    return [(info.infotext, key) for key, info in labels.items() if getattr(info, "infotext", None)] + \
        infotext_to_setting_name_mapping


def create_override_settings_dict(text_pairs: list[str]) -> dict:
    """['Clip skip: 2', 'ENSD: 31337'] → {'CLIP_stop_at_last_layers': 2, 'eta_noise_seed_delta': 31337}."""
    params = {}
    for pair in text_pairs:
        k, _, v = pair.partition(":")
        params[k] = v.strip()
    res = {}
    for param_name, setting_name in _setting_mapping():
        value = params.get(param_name)
        if value is not None:
            res[setting_name] = shared.opts.cast_value(setting_name, value)
    return res


def get_override_settings(params: dict, *, skip_fields=None) -> list[tuple[str, str, object]]:
    """(infotext key, setting, value) for the settings an infotext sets to something else than they are now."""
    res = []
    for param_name, setting_name in _setting_mapping():
        if param_name in (skip_fields or {}) or params.get(param_name) is None:
            continue
        value = shared.opts.cast_value(setting_name, params[param_name])
        if value != getattr(shared.opts, setting_name, None):
            res.append((param_name, setting_name, value))
    return res


def image_from_url_text(filedata):
    """A PIL image from what a Gradio image or gallery sends: a data: URL, a file dict ({"path"/"name": …}) of a
    file Gradio or we wrote (its temp folder, our outputs), a list of those (the first), or an image."""
    from PIL import Image
    if filedata is None:
        return None
    if isinstance(filedata, (list, tuple)) and not isinstance(filedata, str):
        if not filedata:
            return None
        filedata = filedata[0]
        if isinstance(filedata, (list, tuple)):  # a gallery item: (image, caption)
            filedata = filedata[0]
    if isinstance(filedata, Image.Image):
        return filedata
    if isinstance(filedata, dict):
        if filedata.get("is_file", True) and (filedata.get("path") or filedata.get("name")):
            return _open_allowed(filedata.get("path") or filedata.get("name"))
        filedata = filedata.get("url") or filedata.get("data")
    if isinstance(filedata, str) and filedata.startswith("data:image/"):
        filedata = filedata.split(",", 1)[1]
    if not isinstance(filedata, str):
        raise ValueError(f"image_from_url_text: cannot read an image from {type(filedata).__name__}")
    return Image.open(io.BytesIO(base64.b64decode(filedata)))


def _open_allowed(path: str):
    from PIL import Image
    real = os.path.realpath(path)
    roots = [tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR", "")]
    if shared.bound():
        roots.append(str(shared.runtime().paths.outputs))
    if not any(root and (real + os.sep).startswith(os.path.realpath(root) + os.sep) for root in roots):
        raise ValueError(f"image_from_url_text: {path} is not a file the web UI wrote (outputs or Gradio's temp "
                         "folder), so it is not read")
    with Image.open(real) as im:
        im.load()
        return im.copy()


class ParamBinding:
    """A "Send to <tab>" button: what it copies (text and/or image) from where, and to which tab."""

    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)


def add_paste_fields(tabname: str, init_img, fields, override_settings_component=None) -> None:
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def create_buttons(tabs_list: list[str]) -> dict:
    """A "Send to <tab>" button per tab name (elem_id `<tab>_tab`)."""
    import gradio as gr
    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons: dict, send_image, send_generate_info) -> None:
    """Registers each button of create_buttons: it sends `send_image` and the infotext (a component, or the name
    of the tab whose infotext to send)."""
    import gradio as gr
    for tabname, button in buttons.items():
        text = send_generate_info if isinstance(send_generate_info, gr.components.Component) else None
        source_tab = send_generate_info if isinstance(send_generate_info, str) else None
        register_paste_params_button(ParamBinding(button, tabname, source_text_component=text,
                                                  source_image_component=send_image, source_tabname=source_tab))
