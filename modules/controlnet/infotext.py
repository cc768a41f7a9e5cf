"""The infotext entries `ControlNet N: "Module: canny, Model: …, Weight: 1.0, …"` (CONTROLNET-REFERENCE §1.7):
written per enabled unit (N counts enabled units), and parsed back into unit fields when an infotext is pasted."""
from __future__ import annotations

import re

from modules.controlnet.units import ControlNetUnit

# (infotext key, unit field) in the extension's order
FIELDS = (("Module", "module"), ("Model", "model"), ("Weight", "weight"), ("Resize Mode", "resize_mode"),
          ("Processor Res", "processor_res"), ("Threshold A", "threshold_a"), ("Threshold B", "threshold_b"),
          ("Guidance Start", "guidance_start"), ("Guidance End", "guidance_end"), ("Pixel Perfect", "pixel_perfect"),
          ("Control Mode", "control_mode"))
KEY_RE = re.compile(r"^ControlNet (\d+)$")


def unit_text(unit: ControlNetUnit) -> str | None:
    """The value for one unit; None when a value holds "," or ":" (the extension then writes nothing either)."""
    parts = []
    for key, name in FIELDS:
        value = str(getattr(unit, name))
        if "," in value or ":" in value:
            return None
        parts.append(f"{key}: {value}")
    return ", ".join(parts)


def parse_unit_text(text: str) -> dict:
    """`Module: canny, Model: x, Weight: 1.0, …` → unit fields (True/False, numbers, text)."""
    names = dict(FIELDS)
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in names:
            continue
        out[names[key]] = _value(value)
    return out


def units_from_infotext(params: dict) -> dict[int, dict]:
    """{unit number: fields} from a parsed infotext's keys `ControlNet N`; every such unit is enabled."""
    units = {}
    for key, value in params.items():
        m = KEY_RE.match(str(key))
        if m and isinstance(value, str):
            units[int(m.group(1))] = {"enabled": True, **parse_unit_text(value)}
    return units


def _value(text: str):
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
