"""A1111's `modules.scripts`: the Script base class extensions subclass, the loader for `scripts/*.py`, and the two
runners (txt2img, img2img) that build the scripts' controls and call their methods during a generation
(EXTENSIONS-REFERENCE §1.5–1.7, §1.9).

A generation reaches the scripts through the engine's hook points: `attach(p)` adds one hook per point to the job's
own hooks (`p.hooks`), and each hook asks `p.scripts` — read when it fires, so a copied runner with other always-on
scripts (adetailer does this) is honoured — to call every always-on script that overrides that method, with its
slice of `p.script_args`. A script that raises is reported (log, Extension.errors) and the job goes on without it;
only a selectable script's `run()` fails the job, as in A1111.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules import extensions, script_callbacks, script_loading
from modules.engine.hooks import (MaskBlendArgs, PostprocessBatchListArgs, PostprocessImageArgs,  # noqa: F401
                                  PostProcessMaskOverlayArgs, PostSampleArgs)              # (A1111 names)
from modules.engine.params import ParamError

log = logging.getLogger("sd.extensions")

AlwaysVisible = object()   # show() returns this for scripts whose controls are always shown and that always run
SCRIPT_DIR = Path(__file__).resolve().parent.parent


@dataclass
class OnComponent:
    component: Any


@dataclass
class ScriptArg:
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list | None = None


@dataclass
class ScriptInfo:
    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list = field(default_factory=list)


class Script:
    name = None             # lower-cased title; set when ui() returned controls
    section = None          # where an always-on script's controls go (None: the scripts area)
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None  # [(component, infotext key or callable)] for paste
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None   # [(elem_id, callback)]
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None
    sorting_priority = 0

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba, *args):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess_image_after_composite(self, p, pp, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def on_before_component(self, callback, *, elem_id):
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self):
        return ""

    def elem_id(self, item_id):
        """script_[<tab>_]<title>_<item>, as A1111 builds it (extensions hard-code the results)."""
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabname = (("img2img" if self.is_img2img else "txt2img") + "_") if need_tabname else ""
        return f"{tabname}{item_id}"


current_basedir = str(SCRIPT_DIR)


def basedir():
    """The folder of the extension whose script is being loaded (the program root at any other time)."""
    return current_basedir


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list[ScriptClassData] = []
load_errors: list[tuple[str, str]] = []       # (script path, traceback) of files that failed to import
module_collisions: list[str] = []


def _canonical(ext, filename: str) -> str:
    return f"{'builtin/' if ext.is_builtin else ''}{ext.canonical_name}/{filename}"


def _ordered_script_files(exts) -> list[tuple[Any, ScriptFile]]:
    """Root scripts/ first, then each active extension's scripts/*.py; metadata.ini Requires/Before/After
    (§1.2) reorder them (a stable topological sort; unknown names and cycles are ignored)."""
    entries: list[tuple[Any, ScriptFile]] = []
    root = SCRIPT_DIR / "scripts"
    if root.is_dir():
        for name in sorted(os.listdir(root)):
            path = root / name
            if name.endswith(".py") and path.is_file():
                entries.append((None, ScriptFile(str(SCRIPT_DIR), name, str(path))))
    ext_entries = []
    for ext in exts:
        folder = Path(ext.path) / "scripts"
        if not folder.is_dir():
            continue
        for name in sorted(os.listdir(folder)):
            path = folder / name
            if name.endswith(".py") and path.is_file():
                ext_entries.append((ext, ScriptFile(ext.path, name, str(path))))
    names = {_canonical(e, f.filename): (e, f) for e, f in ext_entries}
    by_ext: dict[str, list[str]] = {}
    for key, (e, _) in names.items():
        by_ext.setdefault(e.canonical_name, []).append(key)

    def resolve(items) -> list[str]:
        out = []
        for item in items:
            item = item.strip().lower()
            if item in names:
                out.append(item)
            elif item in by_ext:
                out += by_ext[item]
        return out

    after: dict[str, set[str]] = {k: set() for k in names}   # key must load after these
    for key, (e, f) in names.items():
        meta = getattr(e, "metadata", None)
        rules = _script_rules(meta, f.filename)
        for dep in resolve(rules.get("requires", [])) + resolve(rules.get("after", [])):
            if dep != key:
                after[key].add(dep)
        for dep in resolve(rules.get("before", [])):
            if dep != key:
                after[dep].add(key)
    order, placed, visiting = [], set(), set()

    def visit(key):
        if key in placed or key in visiting:
            return
        visiting.add(key)
        for dep in sorted(after[key], key=list(names).index):
            visit(dep)
        visiting.discard(key)
        placed.add(key)
        order.append(key)
    for key in names:
        visit(key)
    return entries + [names[k] for k in order]


def _script_rules(meta, filename: str) -> dict[str, list[str]]:
    """Requires/Before/After for one script from the extension's metadata.ini ([scripts] and [scripts/<file>])."""
    if meta is None:
        return {}
    return {key: meta.get_script_requirements(field, f"scripts/{filename}", "scripts")
            for key, field in (("requires", "Requires"), ("before", "Before"), ("after", "After"))}


def apply_callback_order(exts) -> None:
    """metadata.ini [callbacks/<ext>/<file>/<category>[/<name>]] Before/After → script_callbacks.order_rules."""
    script_callbacks.order_rules.clear()
    for ext in exts:
        for name, before, after in ext.metadata.list_callback_order_instructions():
            script_callbacks.order_rules[name] = (before, after)


def _top_level_names(folder: str) -> set[str]:
    names = set()
    for entry in os.scandir(folder):
        if entry.name.startswith((".", "_")) or entry.name in ("scripts", "javascript", "localizations"):
            continue
        if entry.is_file() and entry.name.endswith(".py") and entry.name not in ("install.py", "preload.py"):
            names.add(entry.name[:-3])
        elif entry.is_dir() and (Path(entry.path) / "__init__.py").is_file():
            names.add(entry.name)
    return names


def _report_collisions(exts) -> None:
    """Two extensions that ship a helper module of the same top-level name share one sys.modules entry: whichever
    loads first wins for both (a known source of A1111 bugs). Name both."""
    owners: dict[str, str] = {}
    for ext in exts:
        for name in _top_level_names(ext.path):
            if name in owners and owners[name] != ext.name:
                message = (f"extensions {owners[name]} and {ext.name} both have a helper module named {name!r}; "
                           f"only one of them can be imported (the first loaded wins)")
                module_collisions.append(message)
                ext.report_error("import", message)
            owners.setdefault(name, ext.name)


def load_scripts(exts=None) -> None:
    """(Re)loads every scripts/*.py of the active extensions; callbacks are cleared first (A1111's behaviour)."""
    global current_basedir
    exts = extensions.active() if exts is None else exts
    scripts_data.clear()
    postprocessing_scripts_data.clear()
    load_errors.clear()
    module_collisions.clear()
    script_callbacks.clear_callbacks()
    apply_callback_order(exts)
    _report_collisions(exts)
    from modules import scripts_postprocessing
    pp_base = scripts_postprocessing.ScriptPostprocessing
    syspath = list(sys.path)
    try:
        for ext, sf in _ordered_script_files(exts):
            current_basedir = sf.basedir
            if sf.basedir not in sys.path:
                sys.path.insert(0, sf.basedir)
            try:
                module = script_loading.load_module(sf.path)
            except Exception:
                _record_failure(ext, "import", sf.path)
                continue
            finally:
                sys.path[:] = syspath
                current_basedir = str(SCRIPT_DIR)
            for obj in list(vars(module).values()):
                if not isinstance(obj, type):
                    continue
                if issubclass(obj, Script) and obj not in (Script, ScriptBuiltinUI):
                    scripts_data.append(ScriptClassData(obj, sf.path, sf.basedir, module))
                elif issubclass(obj, pp_base) and obj is not pp_base:
                    postprocessing_scripts_data.append(ScriptClassData(obj, sf.path, sf.basedir, module))
    finally:
        sys.path[:] = syspath
        current_basedir = str(SCRIPT_DIR)


reload_scripts = load_scripts


def _record_failure(ext, phase: str, where: str) -> None:
    text = traceback.format_exc()
    log.error("Error %s %s:\n%s", {"import": "loading script", "ui": "creating UI for"}.get(phase, phase), where,
              text)
    if phase == "import":
        load_errors.append((where, text))
    if ext is None:
        ext = extensions.find_extension(where)
    if ext is not None:
        ext.report_error(phase, f"{os.path.basename(where)}: {text}")


def _report_script_error(script, method: str) -> None:
    _record_failure(None, "script", f"{script.filename} ({method})")


# --- the runners ---------------------------------------------------------------------------------------------
class ScriptRunner:
    def __init__(self):
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]
        self.is_img2img = False
        self.ui_created = False
        self.on_before_component_elem_id: dict[str, list] = {}
        self.on_after_component_elem_id: dict[str, list] = {}

    def initialize_scripts(self, is_img2img: bool) -> None:
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        self.is_img2img = is_img2img
        self.ui_created = False
        self.on_before_component_elem_id.clear()   # the previous instances' callbacks go with them
        self.on_after_component_elem_id.clear()
        for data in scripts_data:
            try:
                script = data.script_class()
                script.filename = data.path
                script.is_txt2img = not is_img2img
                script.is_img2img = is_img2img
                script.tabname = "img2img" if is_img2img else "txt2img"
                visibility = script.show(script.is_img2img)
            except Exception:
                _record_failure(None, "init", data.path)
                continue
            if visibility is AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        self.apply_on_before_component_callbacks()

    def apply_on_before_component_callbacks(self):
        for script in self.scripts:
            for elem_id, callback in script.on_before_component_elem_id or []:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((callback, script))
            for elem_id, callback in script.on_after_component_elem_id or []:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))
            script.on_before_component_elem_id = []
            script.on_after_component_elem_id = []

    # --- UI ------------------------------------------------------------------------------------------------------
    def create_script_ui(self, script: Script) -> None:
        import gradio as gr
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
        if controls is None:
            return
        controls = list(controls)
        script.name = wrap_call(script.title, script.filename, "title", default=script.filename).lower()
        api_args = []
        for control in controls:
            if not isinstance(control, gr.components.Component) and not hasattr(control, "value"):
                continue
            control.custom_script_source = os.path.basename(script.filename)
            api_args.append(ScriptArg(label=getattr(control, "label", None), value=getattr(control, "value", None),
                                      minimum=getattr(control, "minimum", None),
                                      maximum=getattr(control, "maximum", None), step=getattr(control, "step", None),
                                      choices=_choices(control)))
        script.api_info = ScriptInfo(script.name, script.alwayson, script.is_img2img, api_args)
        script.controls = controls
        self.inputs += controls
        script.args_to = len(self.inputs)
        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names

    def setup_ui_for_section(self, section, scriptlist=None) -> None:
        import gradio as gr
        for script in scriptlist if scriptlist is not None else self.alwayson_scripts:
            if script.alwayson and script.section != section:
                continue
            if script.create_group:
                with gr.Group(visible=script.alwayson) as group:
                    self.create_script_ui(script)
                script.group = group
            else:
                self.create_script_ui(script)

    def prepare_ui(self):
        self.inputs = [None]
        self.infotext_fields = []
        self.paste_field_names = []

    def setup_ui(self) -> list:
        """Builds the always-on scripts' controls and the Script dropdown with the selectable scripts' controls
        (inside the current gr.Blocks). Returns every input, the dropdown first: the argument vector's layout."""
        import gradio as gr
        global scripts_current
        previous, scripts_current = scripts_current, self
        try:
            self.prepare_ui()
            self.titles = [wrap_call(s.title, s.filename, "title") or s.filename for s in self.selectable_scripts]
            sections = [None] + sorted({s.section for s in self.alwayson_scripts if s.section is not None},
                                       key=str)
            for section in sections:
                self.setup_ui_for_section(section)
            dropdown = gr.Dropdown(label="Script", elem_id=("img2img" if self.is_img2img else "txt2img") + "_script",
                                   choices=["None"] + self.titles, value="None", type="index")
            self.inputs[0] = dropdown
            self.setup_ui_for_section(None, self.selectable_scripts)

            grouped = [s for s in self.selectable_scripts if s.group is not None]

            def select_script(index):
                selected = self.selectable_scripts[index - 1] if index and index > 0 else None
                updates = [gr.update(visible=selected is s) for s in grouped]
                # Gradio takes a one-output function's return value whole: a list would be the group's "value"
                return updates[0] if len(updates) == 1 else updates
            if grouped:
                dropdown.change(select_script, dropdown, [s.group for s in grouped])
            self.title_map = {t.lower(): s for t, s in zip(self.titles, self.selectable_scripts)}
            self.ui_created = True
            return self.inputs
        finally:
            scripts_current = previous

    def default_args(self) -> list:
        """The argument vector with every control at its UI default (the API's starting point, §1.9)."""
        args = [0]
        for control in self.inputs[1:]:
            args.append(getattr(control, "value", None))
        return args

    # --- generation ----------------------------------------------------------------------------------------------
    def run(self, p, *args):
        script_index = args[0] if args else 0
        if not script_index:
            return None
        script = self.selectable_scripts[script_index - 1]
        script_args = args[script.args_from:script.args_to]
        return script.run(p, *script_args)

    def _call_alwayson(self, method: str, p, *args, **kwargs) -> None:
        for script in self.alwayson_scripts:
            if getattr(type(script), method, None) is getattr(Script, method):
                continue   # not overridden
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, method)(p, *args, *script_args, **kwargs)
            except ParamError:
                raise   # a script rejecting the request's input (a 422 naming the field), not a script failure
            except Exception:
                _report_script_error(script, method)

    def setup_scripts(self, p, *, is_ui=True):
        for script in self.alwayson_scripts:
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                script.setup(p, *script_args)
            except ParamError:
                raise
            except Exception:
                _report_script_error(script, "setup")

    setup_scrips = setup_scripts   # A1111's spelling

    def before_process(self, p):
        self._call_alwayson("before_process", p)

    def process(self, p):
        self._call_alwayson("process", p)

    def before_process_batch(self, p, **kwargs):
        self._call_alwayson("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._call_alwayson("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call_alwayson("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._call_alwayson("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._call_alwayson("before_hr", p)

    def post_sample(self, p, ps):
        self._call_alwayson("post_sample", p, ps)

    def postprocess_batch(self, p, images, **kwargs):
        self._call_alwayson("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._call_alwayson("postprocess_batch_list", p, pp, **kwargs)

    def on_mask_blend(self, p, mba):
        self._call_alwayson("on_mask_blend", p, mba)

    def postprocess_image(self, p, pp):
        self._call_alwayson("postprocess_image", p, pp)

    def postprocess_maskoverlay(self, p, ppmo):
        self._call_alwayson("postprocess_maskoverlay", p, ppmo)

    def postprocess_image_after_composite(self, p, pp):
        self._call_alwayson("postprocess_image_after_composite", p, pp)

    def postprocess(self, p, processed):
        self._call_alwayson("postprocess", p, processed)

    def before_component(self, component, **kwargs):
        for callback, script in self.on_before_component_elem_id.get(kwargs.get("elem_id"), []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                _report_script_error(script, "on_before_component")
        for script in self.scripts:
            if type(script).before_component is not Script.before_component:
                try:
                    script.before_component(component, **kwargs)
                except Exception:
                    _report_script_error(script, "before_component")

    def after_component(self, component, **kwargs):
        for callback, script in self.on_after_component_elem_id.get(getattr(component, "elem_id", None), []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                _report_script_error(script, "on_after_component")
        for script in self.scripts:
            if type(script).after_component is not Script.after_component:
                try:
                    script.after_component(component, **kwargs)
                except Exception:
                    _report_script_error(script, "after_component")

    def script(self, title: str):
        return self.title_map.get(title.lower())

    def find_by_title(self, title: str):
        t = title.lower()
        for s in self.scripts:
            try:
                if s.title().lower() == t:
                    return s
            except Exception:
                continue
        return None


# The hook points a runner serves, and how each hook's arguments map to the runner method.
_POINTS = ("before_process", "process", "before_process_batch", "after_extra_networks_activate", "process_batch",
           "process_before_every_sampling", "before_hr", "post_sample", "postprocess_batch",
           "postprocess_batch_list", "mask_blend", "postprocess_image", "postprocess_maskoverlay",
           "postprocess_image_after_composite", "postprocess")


def attach(p) -> None:
    """Connects p's scripts to p's hooks (once per hook set: A1111's scripts run copy.copy(p), whose copies share
    p.hooks, and must not fire the always-on scripts twice). Each hook reads p.scripts when it fires."""
    if getattr(p.hooks, "_scripts_attached", False):
        return
    p.hooks._scripts_attached = True
    for point in _POINTS:
        method = "on_mask_blend" if point == "mask_blend" else point

        def hook(p_, *args, _method=method, **kwargs):
            runner = getattr(p_, "scripts", None)
            if runner is not None and runner.alwayson_scripts:
                getattr(runner, _method)(p_, *args, **kwargs)
        p.hooks.add(point, hook)
    script_callbacks.attach_to_job(p.hooks)


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception:
        _record_failure(None, "ui" if funcname == "ui" else "script", f"{filename} ({funcname})")
    return default


def _choices(control):
    choices = getattr(control, "choices", None)
    if not choices:
        return None
    return [c[0] if isinstance(c, (tuple, list)) else c for c in choices]


scripts_txt2img = ScriptRunner()
scripts_img2img = ScriptRunner()
scripts_postproc = None
scripts_current: ScriptRunner | None = None


def runner_for(is_img2img: bool) -> ScriptRunner:
    return scripts_img2img if is_img2img else scripts_txt2img


def component_before(component, **kwargs) -> None:
    """Gradio component constructor listener: the current tab's scripts, then the global callbacks (§1.6)."""
    if scripts_current is not None:
        scripts_current.before_component(component, **kwargs)
    script_callbacks.before_component_callback(component, **kwargs)


def component_after(component, **kwargs) -> None:
    script_callbacks.after_component_callback(component, **kwargs)
    if scripts_current is not None:
        scripts_current.after_component(component, **kwargs)


# --- the API's argument vector (§1.9) ------------------------------------------------------------------------
def api_script_args(runner: ScriptRunner, script_name: str | None, script_args: list | None,
                    alwayson_scripts: dict | None) -> list:
    """The argument vector for an API request: every control at its UI default, then `script_name` selects a
    selectable script and `script_args` fill its slice, and each `alwayson_scripts[title]["args"]` fills that
    script's slice — a list by position (A1111; shorter keeps the defaults, longer is cut) or, our addition, a dict
    keyed by a control's label or elem_id. Unknown titles and keys raise ParamError naming them."""
    from modules.engine.params import ParamError
    args = runner.default_args()
    if script_name:
        script = runner.script(script_name)
        if script is None:
            raise ParamError("script_name", f"Script {script_name!r} not found; selectable scripts: "
                                            f"{[s.title() for s in runner.selectable_scripts]}")
        _fill(args, script, script_args or [], "script_args")
        args[0] = runner.selectable_scripts.index(script) + 1
    for title, entry in (alwayson_scripts or {}).items():
        script = runner.find_by_title(title)
        if script is None:
            raise ParamError("alwayson_scripts", f"always on script {title!r} not found; always-on scripts: "
                                                 f"{[s.title() for s in runner.alwayson_scripts]}")
        if not script.alwayson:
            raise ParamError("alwayson_scripts", f"script {title!r} is selectable, not always on: use "
                                                 "script_name/script_args")
        given = entry.get("args", []) if isinstance(entry, dict) else entry
        check = getattr(script, "check_api_args", None)
        if callable(check):     # our addition: a script may reject its API arguments before the job is queued
            check(given, f"alwayson_scripts.{title}.args")
        _fill(args, script, given, f"alwayson_scripts.{title}.args")
    return args


def _fill(args: list, script: Script, given, where: str) -> None:
    from modules.engine.params import ParamError
    width = (script.args_to or 0) - (script.args_from or 0)
    if isinstance(given, dict):
        keys = {}
        for i, control in enumerate(script.controls or []):
            for key in (getattr(control, "label", None), getattr(control, "elem_id", None)):
                if key:
                    keys.setdefault(str(key), i)
        unknown = [k for k in given if k not in keys]
        if unknown:
            raise ParamError(where, f"unknown argument(s) {unknown}; this script's arguments: {list(keys)}")
        for key, value in given.items():
            args[script.args_from + keys[key]] = value
        return
    if not isinstance(given, (list, tuple)):
        raise ParamError(where, "must be a list (by position) or an object keyed by argument label")
    for i, value in enumerate(list(given)[:width]):
        args[script.args_from + i] = value
