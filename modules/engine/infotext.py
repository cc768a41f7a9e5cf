"""A1111 infotext: the generation parameters text stored in images ("parameters" PNG chunk), written and parsed."""
from __future__ import annotations

import json
import re

VERSION = "v0.1.0"

# Keys in A1111's order; anything else goes after them, before Version.
KEY_ORDER = ["Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size",
             "Model hash", "Model", "VAE hash", "VAE", "Variation seed", "Variation seed strength", "Seed resize from",
             "Denoising strength", "Clip skip", "ENSD", "Token merging ratio", "RNG", "Tiling"]


def quote(value) -> str:
    text = str(value)
    if any(c in text for c in ",:\n\""):
        return json.dumps(text, ensure_ascii=False)
    return text


def _format_number(value) -> str | int | float:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def build(prompt: str, negative_prompt: str, fields: dict) -> str:
    """fields: key → value; None values are left out, keys ordered as A1111 orders them."""
    items = {k: v for k, v in fields.items() if v is not None and k != "Version"}
    ordered = [k for k in KEY_ORDER if k in items] + [k for k in items if k not in KEY_ORDER]
    params = ", ".join(f"{k}: {quote(_format_number(items[k]))}" for k in ordered)
    params = f"{params}, Version: {fields.get('Version', VERSION)}" if params else f"Version: {VERSION}"
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(params)
    return "\n".join(lines)


_PARAM_RX = re.compile(r'\s*(\w[\w \-/+.()]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse(text: str) -> dict:
    """Infotext → {"Prompt", "Negative prompt", key: value...}; numbers are converted, 'Size' also sets
    'Size-1'/'Size-2' as A1111's paste does."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM_RX.findall(last)) < 3:  # no parameter line: all of it is prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    result: dict = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM_RX.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        result[key.strip()] = _convert(value)
        if key.strip() in ("Size", "Seed resize from", "Hires resize") and isinstance(value, str) and "x" in value:
            w, _, h = value.partition("x")
            if w.strip().isdigit() and h.strip().isdigit():
                result[f"{key.strip()}-1"], result[f"{key.strip()}-2"] = int(w), int(h)
    return result


def _convert(value):
    if not isinstance(value, str):
        return value
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", value):
        return float(value)
    if value in ("True", "False"):
        return value == "True"
    return value


# Settings-type infotext keys: they go to override_settings, not to the parameters (the parameters' keys come from
# the schema, params.FIELDS). The sampler settings' keys (Eta, Sigma churn, Schedule rho, …) are added below.
_SETTINGS = {"ENSD": ("eta_noise_seed_delta", int), "RNG": ("randn_source", str)}


def _add_sampler_settings() -> None:
    from modules.engine.sampler_settings import option_templates
    for key, info in option_templates().items():
        default = info.default
        conv = (lambda v: v if isinstance(v, bool) else str(v) == "True") if isinstance(default, bool) else type(default)
        _SETTINGS[info.infotext] = (key, conv)


_add_sampler_settings()

# A1111 v1.10 infotext keys that change the image and that this engine does not do (value: what A1111 writes when it
# is on; None: any value)
_LACKING = {"Noise schedule": None, "Skip Early CFG": None, "Downcast alphas_cumprod": None, "Pad conds v0": None,
            "Token merging ratio": None, "Token merging ratio hr": None, "Emphasis": "Original"}
RNG_SOURCES = ("CPU", "GPU", "NV")


def unsupported(text: str) -> list[str]:
    """What an infotext asks for that we cannot do, as "key: value" items ("not supported here: …"): an unknown
    sampler or schedule type (never silently replaced by another), an RNG source we lack, and A1111 settings that
    change the image which this engine does not have."""
    from modules.engine import samplers
    parsed = parse(text or "")
    out = []
    for s_key, t_key in (("Sampler", "Schedule type"), ("Hires sampler", "Hires schedule type")):
        name, schedule = parsed.get(s_key), parsed.get(t_key)
        if name is None and schedule is None:
            continue
        if name is not None:
            try:
                samplers.resolve(str(name), "Automatic")
            except samplers.SamplerError:
                out.append(f"{s_key}: {name}")
        if schedule is not None and samplers.canonical_schedule(str(schedule)) is None:
            out.append(f"{t_key}: {schedule}")
    if "RNG" in parsed and str(parsed["RNG"]) not in RNG_SOURCES:
        out.append(f"RNG: {parsed['RNG']}")
    for key, allowed in _LACKING.items():
        if key in parsed and (allowed is None or str(parsed[key]) != allowed):
            value = parsed[key]
            if key.startswith("Token merging") and float(value or 0) == 0:
                continue
            out.append(f"{key}: {value}")
    return out


def _param_value(f, value):
    if f.choices is not None and isinstance(value, str):
        labels = [c.lower() for c in f.choices]
        if value.lower() not in labels:
            raise ValueError(value)
        index = labels.index(value.lower())
        return bool(index) if f.kind is bool else index
    return f.cast(value)


def to_params(text: str) -> tuple[dict, dict]:
    """Infotext → (GenerationParams keyword arguments, override_settings). Unknown keys are ignored; so A1111's own
    infotexts (with Version, Model hash and extension keys) parse too."""
    from modules.engine.params import BY_INFOTEXT
    parsed = parse(text)
    params: dict = {"prompt": parsed.get("Prompt", ""), "negative_prompt": parsed.get("Negative prompt", "")}
    overrides: dict = {}
    for key, value in parsed.items():
        if key in BY_INFOTEXT:
            f = BY_INFOTEXT[key]
            try:
                params[f.name] = _param_value(f, value)
            except (TypeError, ValueError):
                continue
        elif key in _SETTINGS:
            name, conv = _SETTINGS[key]
            overrides[name] = conv(value)
    if "Hires upscale" in parsed or "Hires resize-1" in parsed or "Hires upscaler" in parsed:
        params["enable_hr"] = True
    if "Sampler" in parsed and "Schedule type" not in parsed:
        params["scheduler"] = "Automatic"  # older infotexts: the schedule is part of the sampler name
    if "Model hash" in parsed or "Model" in parsed:
        overrides["sd_model_checkpoint"] = str(parsed.get("Model hash") or parsed.get("Model"))
    return params, overrides
