"""The preprocessor registry: sd-webui-controlnet's 72 modules (incl. "none"), looked up by internal name or label,
listed in the extension's order and described as /controlnet/module_list answers (§1.1, §3).

basic.py holds the cv2/numpy modules (§3.2), catalog.py the ones that need downloaded weights (§3.3); base.py the
record both build. `Detected` lives in modules.controlnet.detected (re-exported here): the openpose package builds
one and this package calls the openpose package, so it must not import this package.
"""
from __future__ import annotations

from modules.controlnet.detected import Detected
from modules.controlnet.preprocessors.base import (
    HIDDEN_DEFAULT, HIDDEN_MAX, HIDDEN_MIN, HIDDEN_RESOLUTION, RESOLUTION, Preprocessor, PreprocessorUnavailable, Slider)
from modules.controlnet.preprocessors.basic import BASIC
from modules.controlnet.preprocessors.catalog import CATALOG

__all__ = ["Detected", "Preprocessor", "PreprocessorUnavailable", "Slider", "RESOLUTION", "HIDDEN_DEFAULT",
           "HIDDEN_MIN", "HIDDEN_MAX", "HIDDEN_RESOLUTION", "get", "all_preprocessors", "module_list", "all_tags"]


def _sort_key(p: Preprocessor) -> str:
    # The extension sorts by str(priority).zfill(8) + label, descending: priority first, then label (Z→a).
    return str(p.priority).zfill(8) + p.label


def _build() -> tuple[list[Preprocessor], dict[str, Preprocessor], dict[str, Preprocessor], dict[str, Preprocessor]]:
    entries = [*BASIC, *CATALOG]
    by_label: dict[str, Preprocessor] = {}
    by_name: dict[str, Preprocessor] = {}
    for p in entries:
        if p.label in by_label or p.name in by_name:
            raise RuntimeError(f"preprocessor {p.name} ({p.label}) registered twice")
        by_label[p.label] = p
        by_name[p.name] = p
    rest = sorted((p for p in entries if p.name != "none"), key=_sort_key, reverse=True)
    ordered = [by_name["none"], *rest]
    folded: dict[str, Preprocessor] = {}
    for p in ordered:
        folded.setdefault(p.label.lower(), p)
        folded.setdefault(p.name.lower(), p)
    return ordered, by_label, by_name, folded


_ORDERED, _BY_LABEL, _BY_NAME, _FOLDED = _build()


def get(name_or_label: str) -> Preprocessor | None:
    """By label first, then internal name (the extension's order), then either ignoring case; None if unknown."""
    if not isinstance(name_or_label, str):
        return None
    key = name_or_label.strip()
    return _BY_LABEL.get(key) or _BY_NAME.get(key) or _FOLDED.get(key.lower())


def all_preprocessors() -> list[Preprocessor]:
    """module_list order: "none", then priority descending, then label descending."""
    return list(_ORDERED)


def all_tags() -> list[str]:
    """The control types: "All", then every tag sorted."""
    return ["All", *sorted({t for p in _ORDERED for t in p.tags})]


def module_list(alias_names: bool) -> dict:
    """The /controlnet/module_list body: keys are internal names, or labels with alias_names; each detail lists the
    visible sliders (resolution, a, b, c) and model_free."""
    names = [p.label if alias_names else p.name for p in _ORDERED]
    detail = {key: {"model_free": p.model_free, "sliders": [s.to_api() for s in p.sliders()]}
              for key, p in zip(names, _ORDERED)}
    return {"module_list": names, "module_detail": detail}
