"""A1111's `modules.shared`, the names extensions import (`opts`, `cmd_opts`, `state`, `sd_model`, …), as views of our
runtime — never a second copy of the settings, the model or the progress.

The composition root calls `bind(rt)` once the Runtime exists, before any extension script loads. Before that the
names can still be imported (extensions import them at module level): `opts` and `state` are views that look the
runtime up on every use, and the rest are read lazily (module `__getattr__`).
"""
from __future__ import annotations

import os
import sys
from typing import Any

from modules import devices as _devices
from modules import net_policy, paths, paths_internal, shared_cmd_options
from modules.file_lists import listfiles, natural_sort_key, walk_files  # noqa: F401 (A1111 names)
from modules.options import OptionHTML, OptionInfo, categories, options_section  # noqa: F401 (A1111 names)
from modules.sd_models_types import SdModelView
from modules.shared_cmd_options import cmd_opts, parser  # noqa: F401 (A1111 names)
from modules.shared_state import State

_runtime = None                    # the bound Runtime
_pending_templates: dict = {}      # options_templates entries added before bind(), moved into the settings by bind
_model_view: tuple[Any, SdModelView] | None = None
_upscalers: list | None = None


class NotBound(RuntimeError):
    """An A1111 name was used before the web UI's runtime existed."""


def bind(rt) -> None:
    """Makes `rt` the runtime every A1111 name reads from; points paths, devices and cmd_opts at it."""
    global _runtime, _model_view, _upscalers, config_filename, device, data_path, models_path, hf_endpoint
    _runtime = rt
    _model_view = None
    _upscalers = None
    shared_cmd_options.adopt(rt.args, rt.paths)
    paths.adopt(rt.paths)
    _devices.use(rt.device)
    config_filename = str(rt.paths.settings_file)
    device = rt.device.device
    data_path, models_path = str(rt.paths.data), str(rt.paths.models)
    hf_endpoint = net_policy.hf_endpoint() or "https://huggingface.co"
    if _pending_templates:
        rt.options.info.update(_pending_templates)
        _pending_templates.clear()


def runtime():
    """The bound Runtime; NotBound (naming the problem) before shared.bind ran."""
    if _runtime is None:
        raise NotBound("the web UI's runtime is not running yet: modules.shared is bound at start-up, before "
                       "extension scripts load (tests: call shared.bind(rt))")
    return _runtime


def bound() -> bool:
    return _runtime is not None


def on_job_thread() -> bool:
    """True in the job queue's worker (inside a running job), where queueing another job would wait forever."""
    import threading
    rt = _runtime
    return rt is not None and threading.current_thread() is getattr(rt.queue, "_worker", None)


def run_job(kind: str, payload: dict | None = None):
    """Runs a job kind on the queue, or at once when already inside a job (an extension's hook)."""
    rt = runtime()
    if on_job_thread():
        return rt.executors[kind](rt, payload or {}, rt.queue.current.state)
    return rt.queue.run(kind, payload or {})


class _OptsView:
    """`shared.opts`: every attribute is the bound runtime's Options' (`opts.data_labels`, `opts.key = v`, …)."""

    def __getattr__(self, name: str):
        return getattr(runtime().options, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(runtime().options, name, value)

    def __contains__(self, key) -> bool:
        return key in runtime().options.info

    def __repr__(self) -> str:
        return f"<shared.opts of {runtime().options.path}>" if bound() else "<shared.opts, not bound yet>"


class TotalTQDM:
    """A1111's console progress bar over a whole job; our progress is in the UI, so these do nothing."""

    def reset(self) -> None: ...
    def update(self) -> None: ...
    def updateTotal(self, new_total) -> None: ...  # noqa: N802 (A1111 name)
    def clear(self) -> None: ...


opts = _OptsView()
state = State(lambda: _runtime)
demo = None                        # the Gradio Blocks, once the UI has been built
mem_mon = None
total_tqdm = TotalTQDM()
script_path = paths_internal.script_path
data_path = paths_internal.data_path
models_path = paths_internal.models_path
config_filename = os.path.join(data_path, "config.json")
device = _devices.device
weight_load_location = "cpu"
hf_endpoint = net_policy.hf_endpoint() or "https://huggingface.co"
# A1111 globals some extensions read; here they say "none of these"
hypernetworks: dict = {}
loaded_hypernetworks: list = []
tab_names: list = []
restricted_opts: set = set()
parallel_processing_allowed = True
xformers_available = False
batch_cond_uncond = True
gradio_theme = None
progress_print_out = sys.stdout


def __getattr__(name: str):
    """The names that follow the runtime as it changes (the loaded model, the lists)."""
    if name == "options_templates":
        return runtime().options.info if bound() else _pending_templates
    if name == "sd_model":
        return _sd_model()
    if name == "sd_upscalers":
        return _sd_upscalers()
    if name == "interrogator":           # A1111's InterrogateModels: interrogate(pil_image) → CLIP caption
        from modules.interrogate.a1111_names import InterrogateModels
        return InterrogateModels(run_job)
    if name == "face_restorers":   # the runtime's (CodeFormer, GFPGAN); an extension may append its own
        if not bound():
            return _unbound_face_restorers
        from modules import face_restoration
        return face_restoration.for_runtime(runtime()).list
    if name == "prompt_styles":
        return runtime().styles
    if name == "styles_filename":
        return [str(runtime().paths.styles_file)]
    if name == "latent_upscale_modes":
        from modules.engine.run import LATENT_UPSCALE_MODES
        return {k: {"mode": mode, "antialias": aa} for k, (mode, aa) in LATENT_UPSCALE_MODES.items()}
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")


_unbound_face_restorers: list = []


def _sd_model():
    global _model_view
    model = runtime().models.model if bound() else None
    if model is None:
        return None
    if _model_view is None or _model_view[0] is not model:
        _model_view = (model, SdModelView(model, runtime().registry))
    return _model_view[1]


def _sd_upscalers() -> list:
    """The built-in upscalers, then the model upscalers, whose folders are read again at each call (a file added
    while the server runs is listed at once)."""
    global _upscalers
    from modules import upscaler
    if _upscalers is None:
        _upscalers = upscaler.builtin_upscalers()
    catalogue = getattr(runtime(), "upscaler_models", None) if bound() else None
    if catalogue is None:
        return list(_upscalers)
    return _upscalers + upscaler.model_upscalers(catalogue)


# --- helpers A1111 keeps in shared -------------------------------------------------------------------------------
def html_path(filename: str) -> str:
    return os.path.join(script_path, "html", filename)


def html(filename: str) -> str:
    """The text of html/<filename>, or "" when there is none."""
    try:
        with open(html_path(filename), encoding="utf8") as f:
            return f.read()
    except OSError:
        return ""


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    from modules.sd_models_types import CheckpointInfo
    rt = runtime()
    infos = [CheckpointInfo.of(c, rt.registry) for c in rt.registry.checkpoints]
    return [i.short_title if use_short else i.title for i in infos]


def refresh_checkpoints() -> None:
    runtime().registry.refresh_checkpoints()


def reload_gradio_theme(theme_name=None) -> None:
    """A1111 switches Gradio themes here; ours is fixed."""
