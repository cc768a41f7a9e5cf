"""The infotext of one image, derived from the run state `p` and the parameter schema (params.FIELDS): each field
with an infotext key is written when its rule says so; A1111's settings-type keys (model, VAE, ENSD, RNG) and
p.extra_generation_params (a value, a per-image list, or a callable) are added."""
from __future__ import annotations

from modules.engine import infotext
from modules.engine.params import FIELDS, hr_size


def _schema_fields(p, index: int) -> dict:
    out: dict = {}
    for f in FIELDS:
        if not f.infotext:
            continue
        value = getattr(p, f.name, None)
        if f.txt2img_only and getattr(p, "is_img2img", False) or f.img2img_only and not getattr(p, "is_img2img", 0):
            continue
        if f.infotext_when is not None and not f.infotext_when(p) or value is None:
            continue
        if f.choices is not None:
            value = f.choices[int(value)]
        out[f.infotext] = value
    out["Seed"] = p.all_seeds[index]
    if "Hires resize-1" in out:  # one of them may be 0 (keep the aspect ratio): write the size that ran
        out["Hires resize-1"], out["Hires resize-2"] = hr_size(p)
    if "Variation seed" in out:
        out["Variation seed"] = p.all_subseeds[index]
    for key in ("Size", "Seed resize from", "Hires resize"):  # pairs: "Size-1"/"Size-2" → "Size: WxH"
        if f"{key}-1" in out:
            out[key] = f"{out.pop(key + '-1')}x{out.pop(key + '-2')}"
    return out


def _extra(p, index: int) -> dict:
    out = {}
    for key, value in p.extra_generation_params.items():
        if callable(value):  # A1111 calls these with its create_infotext's variables as keywords
            value = value(p=p, index=index)
        elif isinstance(value, list):
            value = value[index] if index < len(value) else None
        out[key] = value
    return out


def create(p, index: int, run_info: dict) -> str:
    """run_info: what the run knows beyond p — "Model hash", "Model", "VAE", "ENSD", "RNG" (None = left out)."""
    fields = _schema_fields(p, index)
    ordered = {k: fields.pop(k) for k in ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed") if k in fields}
    merged = {**ordered, **run_info, **fields, **_extra(p, index)}
    return infotext.build(p.all_prompts[index], p.all_negative_prompts[index], merged)
