"""A1111's `modules.script_callbacks`: extensions register callbacks with `on_<category>(fn, name=None)` and the web UI
fires them at A1111's points with A1111's parameter objects (EXTENSIONS-REFERENCE §1.10).

Every callback is called inside a guard: an exception is logged with its traceback, recorded on the extension that
registered it (`Extension.errors["callback"]`, shown in the Extensions tab and /sdapi/v1/extensions) and the caller
goes on without it. The CFG callbacks are fed from the engine's hook points (`install_engine_bridge`), so they see
A1111's row layout: conditional rows first, then unconditional.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from modules.engine.hooks import (AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams,  # noqa: F401
                                  ExtraNoiseParams)

log = logging.getLogger("sd.extensions")


@dataclass
class ImageSaveParams:
    image: Any          # PIL image about to be saved; may be replaced
    p: Any              # the run state, or None
    filename: str       # the target file name; may be changed
    pnginfo: dict       # text chunks ("parameters": infotext); may be changed


@dataclass
class ImageGridLoopParams:
    imgs: list
    cols: int
    rows: int


@dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: Any


@dataclass
class ScriptCallback:
    script: str         # the file that registered it
    callback: Callable
    name: str           # "<extension or base>/<file>/<category>[/<name>]", unique


CATEGORIES = ("app_started", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings", "before_image_saved",
              "image_saved", "extra_noise", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_component",
              "after_component", "image_grid", "infotext_pasted", "script_unloaded", "before_ui", "on_reload",
              "list_optimizers", "list_unets", "before_token_counter")
# A1111 keys its lists "callbacks_<category>"; extensions (and a few tests of theirs) read callback_map directly.
callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{c}": [] for c in CATEGORIES}
# Categories that run last-registered first (A1111: undo in reverse order).
_REVERSED = {"script_unloaded", "before_ui"}
# Ordering: metadata.ini [callbacks/...] Before/After rules by callback name, then a user priority list per category
# (A1111's settings prioritized_callbacks_<category>); both filled by the script loader / settings.
order_rules: dict[str, tuple[list[str], list[str]]] = {}
priority: Callable[[str], list[str]] = lambda category: []  # noqa: E731


def _caller_file() -> str:
    """The file of the code that called into this module (frames only: inspect.stack() reads every frame's source
    and cost seconds at start-up with a few dozen callbacks)."""
    frame = sys._getframe(1)
    here = os.path.abspath(__file__)
    while frame is not None:
        if os.path.abspath(frame.f_code.co_filename) != here:
            return frame.f_code.co_filename
        frame = frame.f_back
    return "unknown"


def _extension_of(path: str):
    from modules import extensions
    return extensions.find_extension(path)


def _add(category: str, fn: Callable, name: str | None) -> None:
    if not callable(fn):
        raise TypeError(f"on_{category}: callback must be callable, got {fn!r}")
    script = _caller_file()
    ext = _extension_of(script)
    base = f"{ext.canonical_name if ext else 'base'}/{os.path.basename(script)}/{category}"
    unique = f"{base}/{name}" if name else base
    taken = {c.name for c in callback_map[f"callbacks_{category}"]}
    candidate, n = unique, 1
    while candidate in taken:
        candidate, n = f"{unique}-{n}", n + 1
    callback = ScriptCallback(script, fn, candidate)
    callback_map[f"callbacks_{category}"].append(callback)
    if category == "ui_settings" and _settings_done:
        # Registered after the settings were collected (sd-dynamic-prompts before its fix #760 does it in its
        # Script's __init__, which A1111 1.9+ runs after ui_settings and so loses the settings): run it now.
        try:
            fn()
        except Exception:
            report_exception(callback, category)


def ordered(category: str) -> list[ScriptCallback]:
    """The callbacks of a category in calling order: registration order, moved by metadata Before/After rules, then
    the user's priority list first."""
    items = list(callback_map[f"callbacks_{category}"])
    for cb in list(items):
        before, after = order_rules.get(cb.name, ([], []))
        for other_name in before:   # cb must run before other
            other = next((o for o in items if o.name == other_name), None)
            if other is not None and items.index(other) < items.index(cb):
                items.remove(cb)
                items.insert(items.index(other), cb)
        for other_name in after:    # cb must run after other
            other = next((o for o in items if o.name == other_name), None)
            if other is not None and items.index(other) > items.index(cb):
                items.remove(cb)
                items.insert(items.index(other) + 1, cb)
    wanted = [n for n in priority(category) if any(c.name == n for c in items)]
    items = [c for n in wanted for c in items if c.name == n] + [c for c in items if c.name not in wanted]
    return list(reversed(items)) if category in _REVERSED else items


_reported: set[tuple[str, str]] = set()


def report_exception(cb: ScriptCallback, category: str) -> None:
    """Logs the traceback the first time a callback fails this way (a CFG callback fails at every step), and keeps
    the last one on its extension."""
    text = traceback.format_exc()
    key = (cb.name, text.strip().splitlines()[-1])
    if key not in _reported:
        _reported.add(key)
        log.error("Error executing callback %s (%s):\n%s", cb.name, category, text)
    ext = _extension_of(cb.script)
    if ext is not None:
        ext.report_error("callback", f"{cb.name}: {text}")


def _fire(category: str, *args, **kwargs) -> list:
    results = []
    for cb in ordered(category):
        try:
            results.append(cb.callback(*args, **kwargs))
        except Exception:
            report_exception(cb, category)
    return results


# --- firing (called by the web UI at A1111's points) -----------------------------------------------------------
def app_started_callback(demo, app) -> None:
    _fire("app_started", demo, app)


def app_reload_callback() -> None:
    _fire("on_reload")


before_reload_callback = app_reload_callback


def model_loaded_callback(sd_model) -> None:
    _fire("model_loaded", sd_model)


def ui_tabs_callback() -> list:
    tabs = []
    for result in _fire("ui_tabs"):
        tabs += list(result or [])
    return tabs


def ui_train_tabs_callback(params: UiTrainTabParams) -> None:
    _fire("ui_train_tabs", params)


_settings_done = False


def ui_settings_callback() -> None:
    global _settings_done
    _fire("ui_settings")
    _settings_done = True


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _fire("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _fire("image_saved", params)


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _fire("extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _fire("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _fire("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _fire("cfg_after_cfg", params)


def before_component_callback(component, **kwargs) -> None:
    _fire("before_component", component, **kwargs)


def after_component_callback(component, **kwargs) -> None:
    _fire("after_component", component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _fire("image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict) -> None:
    _fire("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _fire("script_unloaded")


def before_ui_callback() -> None:
    _fire("before_ui")


def list_optimizers_callback() -> list:
    res: list = []
    for cb in ordered("list_optimizers"):
        try:
            cb.callback(res)
        except Exception:
            report_exception(cb, "list_optimizers")
    return res


def list_unets_callback() -> list:
    res: list = []
    for cb in ordered("list_unets"):
        try:
            cb.callback(res)
        except Exception:
            report_exception(cb, "list_unets")
    return res


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _fire("before_token_counter", params)


def has(category: str) -> bool:
    return bool(callback_map[f"callbacks_{category}"])


# --- registration (what extensions call) -----------------------------------------------------------------------
def on_app_started(callback, *, name=None):
    """callback(demo: gr.Blocks | None, app: FastAPI), after the server is up; add routes here."""
    _add("app_started", callback, name)


def on_before_reload(callback, *, name=None):
    _add("on_reload", callback, name)


def on_model_loaded(callback, *, name=None):
    _add("model_loaded", callback, name)


def on_ui_tabs(callback, *, name=None):
    """callback() → [(blocks, title, elem_id), ...]: extra top-level tabs."""
    _add("ui_tabs", callback, name)


def on_ui_train_tabs(callback, *, name=None):
    _add("ui_train_tabs", callback, name)


def on_ui_settings(callback, *, name=None):
    """callback(): add settings with shared.opts.add_option before the UI is built."""
    _add("ui_settings", callback, name)


def on_before_image_saved(callback, *, name=None):
    _add("before_image_saved", callback, name)


def on_image_saved(callback, *, name=None):
    _add("image_saved", callback, name)


def on_extra_noise(callback, *, name=None):
    _add("extra_noise", callback, name)


def on_cfg_denoiser(callback, *, name=None):
    _add("cfg_denoiser", callback, name)


def on_cfg_denoised(callback, *, name=None):
    _add("cfg_denoised", callback, name)


def on_cfg_after_cfg(callback, *, name=None):
    _add("cfg_after_cfg", callback, name)


def on_before_component(callback, *, name=None):
    _add("before_component", callback, name)


def on_after_component(callback, *, name=None):
    _add("after_component", callback, name)


def on_image_grid(callback, *, name=None):
    _add("image_grid", callback, name)


def on_infotext_pasted(callback, *, name=None):
    _add("infotext_pasted", callback, name)


def on_script_unloaded(callback, *, name=None):
    _add("script_unloaded", callback, name)


def on_before_ui(callback, *, name=None):
    _add("before_ui", callback, name)


def on_list_optimizers(callback, *, name=None):
    _add("list_optimizers", callback, name)


def on_list_unets(callback, *, name=None):
    _add("list_unets", callback, name)


def on_before_token_counter(callback, *, name=None):
    _add("before_token_counter", callback, name)


# --- removal --------------------------------------------------------------------------------------------------
def clear_callbacks() -> None:
    global _settings_done
    for callbacks in callback_map.values():
        callbacks.clear()
    _settings_done = False


def remove_current_script_callbacks() -> None:
    script = os.path.abspath(_caller_file())
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if os.path.abspath(c.script) != script]


def remove_callbacks_for_function(callback_func) -> None:
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if c.callback != callback_func]


# --- the engine's hook points feed the CFG callbacks -----------------------------------------------------------
def attach_to_job(hooks) -> None:
    """Adds the CFG and extra-noise callbacks to one job's hooks, only for categories that have callbacks (the engine builds A1111's
    parameter objects only when a hook asks for them)."""
    for category, fire in (("cfg_denoiser", cfg_denoiser_callback), ("cfg_denoised", cfg_denoised_callback),
                           ("cfg_after_cfg", cfg_after_cfg_callback), ("extra_noise", extra_noise_callback)):
        if has(category):
            hooks.add(category, fire)
