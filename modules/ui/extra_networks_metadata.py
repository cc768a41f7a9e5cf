"""The card's metadata editor (A1111's "Edit metadata" dialog): what it shows and how it saves. The user's fields are
kept in `name.json` beside the network file under A1111's key names ("description", "activation text",
"preferred weight", "negative text", "notes", "sd version"), so files written by A1111 and by us read the same;
keys the editor does not know are kept as they are. The dialog itself is page script (js/extra_networks.js), which
talks to the routes in extra_networks.py: no Gradio components, so the page config does not grow with it."""
from __future__ import annotations

import json
import math
import os

from modules import atomic_file
from modules.ui_extra_networks import get_user_metadata

WEIGHT_RANGE = (0.0, 2.0)   # A1111's "Preferred weight" slider


class MetadataError(ValueError):
    """A request the editor refuses; the message names the field and what it accepts."""


def _item(page, name: str) -> dict:
    item = page.items.get(name)
    if item is None:
        item = page.create_item(name, enable_filter=False)
    if item is None:
        raise MetadataError(f"item {name!r}: no such card on the {page.title} page")
    return item


def file_metadata_text(metadata) -> str | None:
    """The file's own metadata (a LoRA's training notes) as indented JSON, without the embedded cover images
    (base64 pictures, too big to show as text), as A1111 shows it."""
    if not metadata:
        return None
    shown = {k: v for k, v in metadata.items() if k != "ssmd_cover_images"}
    return json.dumps(shown, indent=4, ensure_ascii=False, default=str)


def editor_data(page, name: str) -> dict:
    """What the dialog shows for one card: the editable fields with their values, and the file's metadata."""
    item = _item(page, name)
    user = get_user_metadata(item.get("filename"))
    choices = getattr(page, "choices", {})
    fields = []
    for key, label, kind in page.user_metadata_fields:
        value = user.get(key, "")
        if key == "description" and value == "" and item.get("description"):
            value = item["description"]   # a description .txt beside the file shows until one is saved
        field = {"key": key, "label": label, "kind": kind, "value": value}
        if kind == "choice":
            field["choices"] = list(choices.get(key, []))
            field["value"] = value if value in field["choices"] else field["choices"][0]
        fields.append(field)
    stat = os.stat(item["filename"]) if os.path.exists(item["filename"]) else None
    return {"page": page.extra_networks_tabname, "name": name, "filename": item["filename"],
            "size": stat.st_size if stat else None, "modified": stat.st_mtime if stat else None,
            "shorthash": item.get("shorthash"), "preview": item.get("preview"), "fields": fields,
            "file_metadata": file_metadata_text(item.get("metadata"))}


def _clean(page, key: str, kind: str, value):
    if kind == "weight":
        if value in ("", None):
            return 0.0   # unset: the default multiplier applies, as A1111's slider at 0
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MetadataError(f"preferred weight: {value!r} is not a number (allowed: {WEIGHT_RANGE[0]:g} to "
                                f"{WEIGHT_RANGE[1]:g})") from None
        if not math.isfinite(number) or not WEIGHT_RANGE[0] <= number <= WEIGHT_RANGE[1]:
            raise MetadataError(f"preferred weight: {value!r} is outside {WEIGHT_RANGE[0]:g} to {WEIGHT_RANGE[1]:g}")
        return number
    if kind == "choice":
        allowed = list(getattr(page, "choices", {}).get(key, []))
        if value not in allowed:
            raise MetadataError(f"{key}: {value!r} is not one of {allowed}")
        return value
    if not isinstance(value, str):
        raise MetadataError(f"{key}: expected text, got {type(value).__name__}")
    return value


def save(page, name: str, values: dict) -> dict:
    """Writes the edited fields into `name.json` (atomically; other keys kept); returns what the file now holds."""
    if not isinstance(values, dict):
        raise MetadataError("values: expected an object of field → value")
    item = _item(page, name)
    kinds = {key: kind for key, _label, kind in page.user_metadata_fields}
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise MetadataError(f"fields {unknown} are not editable on the {page.title} page; editable: {list(kinds)}")
    data = get_user_metadata(item["filename"])
    for key, value in values.items():
        data[key] = _clean(page, key, kinds[key], value)
    target = os.path.splitext(item["filename"])[0] + ".json"
    with atomic_file.replacing(target) as tmp:
        with open(tmp, "w", encoding="utf8") as f:
            json.dump(data, f, indent=4, ensure_ascii=False)
    return data
