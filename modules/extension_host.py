"""Brings the extensions into a running web UI: list them, give them A1111's module surface, load their scripts, and
fire the start-up callbacks at A1111's moments. The composition root (webui.py) calls, in this order:

    start(rt)               after the Runtime exists: listing, Gradio shims, shared.bind, scripts, ui_settings,
                            one instance of every Script per tab (before the UI is built)
    build_api_defaults()    with --nowebui: the scripts' controls in a throwaway Blocks (the API's default args)
    app_started(demo, app)  once every route exists: on_app_started callbacks (extension routes), then Gradio's
                            catch-all mount is moved behind the routes they added

Nothing here may stop the server from starting: every extension failure is recorded on its Extension (errors by
phase) and logged.
"""
from __future__ import annotations

import logging
import time

from modules import a1111_defaults, extension_install, extensions, gradio_compat, script_callbacks, scripts
from modules.options import OptionInfo

log = logging.getLogger("sd.extensions")

timings: dict[str, float] = {}


def _register_settings(rt) -> None:
    opts = rt.options
    if "disabled_extensions" not in opts.info:
        opts.add("disabled_extensions", OptionInfo([], "Disable these extensions", "Extensions"))
    if "disable_all_extensions" not in opts.info:
        opts.add("disable_all_extensions", OptionInfo("none", "Disable all extensions (preserves the list of "
                                                              "disabled extensions)", "Extensions",
                                                      choices=list(extensions.DISABLE_ALL_CHOICES)))


def _list(rt) -> list:
    """The extensions as the settings and flags say, with what their last install.py run left (errors; an extension
    whose requirements could not be installed at all stays off for this run)."""
    exts = extensions.list_from_args(rt.args, rt.paths.extensions, extensions.BUILTIN_DIR, rt.paths.settings_file)
    extension_install.apply_results(exts, rt.paths.cache)
    rt.extensions = exts
    return exts


def start(rt) -> list:
    t0 = time.perf_counter()
    _register_settings(rt)
    a1111_defaults.register(rt.options)   # settings every A1111 install has, which extensions read
    exts = _list(rt)
    for ext in exts:
        if ext.enabled:
            missing = extensions.missing_requirements(ext, exts)
            if missing:
                log.warning("extension %s requires %s, which is not installed or not enabled", ext.name,
                            ", ".join(missing))
    gradio_compat.install()
    gradio_compat.add_component_listener(before=scripts.component_before, after=scripts.component_after)
    for ext in extensions.active():
        gradio_compat.register_extension_root(ext.name, ext.path)
    from modules import shared
    shared.bind(rt)
    t1 = time.perf_counter()
    scripts.load_scripts()
    timings["load scripts"] = time.perf_counter() - t1
    script_callbacks.ui_settings_callback()
    for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
        runner.initialize_scripts(is_img2img)
    rt.models.on_loaded.append(_model_loaded)
    timings["extensions start"] = time.perf_counter() - t0
    loaded = [e.name for e in extensions.active()]
    if loaded:
        log.info("extensions: %s (%d scripts, %.2f s)", ", ".join(loaded), len(scripts.scripts_data),
                 timings["extensions start"])
    return exts


def _model_loaded(model) -> None:
    from modules import shared
    script_callbacks.model_loaded_callback(shared.sd_model)


def build_api_defaults() -> None:
    """With --nowebui there is no page, but A1111 still builds the UI: the API's defaults come from the scripts'
    controls and some extensions set themselves up in ui() or their tab builder. Build them once in a Blocks that is
    never served."""
    import gradio as gr
    with gr.Blocks(analytics_enabled=False):
        ui_tabs()   # some extensions set themselves up while building their tab
        for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
            if not runner.ui_created:
                runner.setup_ui()
    script_callbacks.before_ui_callback()   # A1111 with --nowebui: after its (unserved) UI was built


def ui_tabs() -> list:
    """on_ui_tabs results: (blocks, title, elem_id) triples; a raising callback is reported and left out."""
    tabs = []
    for item in script_callbacks.ui_tabs_callback():
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            tabs.append((item[0], item[1], item[2] if len(item) > 2 else None))
    return tabs


_extension_routes: list = []


def app_started(demo, app) -> None:
    # after a Reload UI the callbacks add their routes again: the old ones (bound to the old modules) go first
    app.router.routes[:] = [r for r in app.router.routes if r not in _extension_routes]
    _extension_routes.clear()
    gradio_compat.report()   # one line per extension naming the Gradio 3 idioms it needed
    before = len(app.router.routes)
    script_callbacks.app_started_callback(demo, app)
    added = app.router.routes[before:]
    _extension_routes.extend(added)
    if added:
        # Gradio is mounted at the root and would answer every path first: routes that extensions add go before it
        rest = app.router.routes[:before]
        mounts = [r for r in rest if hasattr(getattr(r, "app", None), "get_blocks")]
        app.router.routes[:] = [r for r in rest if r not in mounts] + added + mounts


def _forget_extension_modules(folders: list[str]) -> list[str]:
    """Helper modules imported from extension folders, dropped so that a reload imports their current code (A1111
    keeps them, a known trap: ljleb/prompt-fusion-extension#24)."""
    import os
    import sys
    roots = tuple(os.path.realpath(f) + os.sep for f in folders)
    gone = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file).startswith(roots):
            del sys.modules[name]
            gone.append(name)
    return gone


def reload(rt, app=None) -> None:
    """Reload UI (A1111's order): before_reload, script_unloaded (extensions undo their patches), the extensions are
    listed again, their helper modules forgotten, every script re-executed with the callbacks cleared, settings and
    the runners' scripts set up again. The caller then builds the page and calls app_started."""
    script_callbacks.app_reload_callback()
    script_callbacks.script_unloaded_callback()
    previous = [e.path for e in extensions.active()]
    _list(rt)
    _forget_extension_modules(previous + [e.path for e in extensions.active()])
    for ext in extensions.active():
        gradio_compat.register_extension_root(ext.name, ext.path)
    scripts.load_scripts()
    script_callbacks.ui_settings_callback()
    for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
        runner.initialize_scripts(is_img2img)
    log.info("Reload UI: %d scripts from %d extensions", len(scripts.scripts_data), len(extensions.active()))
