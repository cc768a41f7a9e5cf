"""Gradio 3 idioms on Gradio 6: A1111 extensions were written for Gradio 3.41; install() makes their UI code run here.

What it translates is listed in docs/EXTENSIONS.md ("Gradio 3 idioms we translate"). In short: `_js=` on events,
`Component.update()`, `gr.Box`, `gr.inputs`/`gr.outputs`, `gr.components.IOComponent`, Gradio 3 constructor keywords
(renamed where Gradio 6 has an equivalent, otherwise dropped with one warning), `.style()`, `gr.Image(tool="sketch")`,
and component subclasses defined in extension scripts (Gradio would crash on them, or write a .pyi beside them).

It also carries A1111's component hooks: listeners called before and after every component constructor, and the
`gradio-<block>` CSS classes on every component and layout block. Our own UI passes only valid Gradio 6 arguments, so
for it every translation is a pass-through; the CSS classes are the one visible change (A1111 adds them to its core UI
too, and extension CSS relies on them).

Which extension used which idiom is recorded from the call stack (register_extension_root) for report().
This module imports nothing from `modules`: others register listeners here, so it must sit below them.
"""
from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import logging
import os
import sys
import threading
import types

import gradio as gr
from gradio import blocks_events, component_meta, events
from gradio.blocks import Block
from gradio.component_meta import ComponentMeta
from gradio.context import LocalContext

log = logging.getLogger("sd.gradio_compat")

UNKNOWN = "unknown"
idioms_used: dict[str, set[str]] = {}   # extension name -> idioms it used (see report())
_first_seen: dict[str, list[str]] = {}  # the same, in the order they were met (report order)
_roots: dict[str, str] = {}             # normalised folder + os.sep -> extension name
_owner_cache: dict[str, str | None] = {}
_before: list = []
_after: list = []
_warned: set = set()
_lock = threading.RLock()
_installed = False

SKETCH_TOOLS = ("sketch", "color-sketch")
_BUTTON_FLAGS = {"show_copy_button": "copy", "show_download_button": "download", "show_share_button": "share",
                 "show_fullscreen_button": "fullscreen"}
_FILE_TYPES = {"file": "filepath", "bytes": "binary"}

# Gradio 3's gr.inputs.* / gr.outputs.* took these positional arguments, in this order ("default" is now "value")
_OLD_INPUTS = {
    "Textbox": ("lines", "placeholder", "default", "numeric", "type", "label"),
    "Number": ("default", "label"),
    "Slider": ("minimum", "maximum", "step", "default", "label"),
    "Checkbox": ("default", "label"),
    "CheckboxGroup": ("choices", "default", "type", "label"),
    "Radio": ("choices", "type", "default", "label"),
    "Dropdown": ("choices", "type", "default", "label"),
    "Image": ("shape", "image_mode", "invert_colors", "source", "tool", "type", "label"),
    "Video": ("type", "source", "label"),
    "Audio": ("source", "type", "label"),
    "File": ("file_count", "type", "label", "keep_filename"),
    "Dataframe": ("headers", "row_count", "col_count", "datatype", "col_width", "default", "type", "label"),
    "ColorPicker": ("default", "label"),
    "State": ("default",),
}
_OLD_OUTPUTS = {
    "Textbox": ("type", "label"),
    "Image": ("type", "plot", "label"),
    "Video": ("type", "label"),
    "Audio": ("type", "label"),
    "File": ("label",),
    "Dataframe": ("headers", "max_rows", "max_cols", "overflow_row_behaviour", "type", "label"),
    "Label": ("num_top_classes", "type", "label"),
    "HTML": ("label",),
    "JSON": ("label",),
    "Chatbot": ("label",),
    "HighlightedText": ("color_map", "label"),
    "State": ("default",),
}
_OLD_QUIET = ("optional", "numeric", "plot", "keep_filename")  # Gradio 3 legacy knobs with no meaning left


# --- which extension is calling -------------------------------------------------------------------------------------

def register_extension_root(name: str, path) -> None:
    """Code in files under `path` is attributed to extension `name` in idioms_used."""
    folder = os.path.normcase(os.path.realpath(os.fspath(path))).rstrip(os.sep) + os.sep
    with _lock:
        _roots[folder] = name
        _owner_cache.clear()


def _owner(filename: str) -> str | None:
    try:
        return _owner_cache[filename]
    except KeyError:
        pass
    name = None
    if _roots and not filename.startswith("<"):
        path = os.path.normcase(os.path.realpath(filename))
        matches = [(len(root), ext) for root, ext in _roots.items() if path.startswith(root)]
        name = max(matches)[1] if matches else None
    _owner_cache[filename] = name
    return name


def calling_extension() -> str:
    """The extension whose file is the nearest caller on the stack, else "unknown"."""
    frame = sys._getframe(1)
    while frame is not None:
        name = _owner(frame.f_code.co_filename)
        if name:
            return name
        frame = frame.f_back
    return UNKNOWN


def _record(idiom: str) -> str:
    ext = calling_extension()
    with _lock:
        used = idioms_used.setdefault(ext, set())
        if idiom not in used:
            used.add(idiom)
            _first_seen.setdefault(ext, []).append(idiom)
    return ext


def _warn_once(ext: str, message: str) -> None:
    key = (ext, message)
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("extension %s: %s", ext, message)


def report() -> list[str]:
    """Logs (and returns) one line per extension that needed a shim."""
    lines = []
    with _lock:
        for ext, used in idioms_used.items():
            if not used:
                continue
            order = [i for i in _first_seen.get(ext, []) if i in used]
            order += sorted(used.difference(order))
            lines.append(f"extension {ext} uses Gradio 3 idioms: {', '.join(order)} (shimmed; see docs)")
    for line in lines:
        log.info(line)
    return lines


# --- component hooks (A1111's before_component / after_component) ------------------------------------------------

def add_component_listener(before=None, after=None) -> None:
    """`before(component, **ctor_kwargs)` runs before the real constructor, `after(component, **ctor_kwargs)` after
    it (and after the gradio-* classes are added). Adding the same function twice keeps one."""
    with _lock:
        if before is not None and before not in _before:
            _before.append(before)
        if after is not None and after not in _after:
            _after.append(after)


def remove_component_listener(before=None, after=None) -> None:
    with _lock:
        if before in _before:
            _before.remove(before)
        if after in _after:
            _after.remove(after)


def _fire(listeners: list, when: str, component, kwargs: dict) -> None:
    for fn in tuple(listeners):
        try:
            fn(component, **kwargs)
        except Exception:  # noqa: BLE001 - a third-party listener never breaks the component
            log.exception("%s-component listener %s failed on %s (elem_id=%r); the component is built anyway", when,
                          getattr(fn, "__qualname__", fn), type(component).__name__, kwargs.get("elem_id"))


_rebuilding = contextvars.ContextVar("gradio_compat_rebuilding", default=False)
_GRADIO_BLOCKS_PY = os.path.join("gradio", "blocks.py")


def _building_update() -> bool:
    """Components made inside an event function are updates, and to apply one Gradio rebuilds the component from
    its constructor args (Blocks.postprocess_data): neither is a new component of the page."""
    return _rebuilding.get() or (bool(LocalContext.in_event_listener.get(False))
                                 and LocalContext.renderable.get(None) is None)


@functools.lru_cache(maxsize=None)
def _signature(cls) -> inspect.Signature:
    return inspect.signature(cls.__init__)


@functools.lru_cache(maxsize=None)
def _config_class(cls) -> type:
    """Gradio's own class behind a subclass defined elsewhere: its signature says which props the frontend gets."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass.__module__.split(".")[0].startswith("gradio"):
            return klass
    return cls


def _hook_kwargs(cls, args: tuple, kwargs: dict) -> dict:
    """The constructor's arguments by name, with the defaults of Gradio's base class (A1111's hooks saw those too,
    so `kwargs["elem_id"]` works even when the caller did not pass it)."""
    sig = _signature(cls)
    try:
        bound = sig.bind_partial(None, *args, **kwargs)
    except TypeError:
        out = dict(kwargs)
    else:
        out = {}
        first = next(iter(sig.parameters))
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL and name != first:
                out[name] = value
    base = _signature(_config_class(cls))
    for name, param in list(base.parameters.items())[1:]:
        if param.default is not inspect.Parameter.empty:
            out.setdefault(name, param.default)
    return out


def _add_classes(component) -> None:
    if not hasattr(component, "elem_classes"):
        return
    try:
        name = component.get_block_name()
    except Exception:  # noqa: BLE001 - a broken subclass keeps its own classes
        return
    classes = component.elem_classes
    classes = [classes] if isinstance(classes, str) else list(classes or [])
    wanted = f"gradio-{name}"
    if wanted not in classes:
        classes.insert(0, wanted)
    if getattr(component, "multiselect", False) and "multiselect" not in classes:
        classes.append("multiselect")
    component.elem_classes = classes


def _construct(cls, *args, **kwargs):
    """ComponentMeta.__call__: every component and layout block is built here (type.__call__ plus A1111's hooks)."""
    if cls is gr.Image and (kwargs.get("tool") in SKETCH_TOOLS or kwargs.get("source") == "canvas"):
        cls = _sketch_class()
        if not _building_update():
            _record("Image(tool=)" if "tool" in kwargs else "Image(source=)")
    tooltip = kwargs.pop("tooltip", None)  # A1111's own keyword (shown by its hints.js), not Gradio's
    if kwargs.get("visible") is False and not _building_update() and calling_extension() != UNKNOWN:
        # Gradio 3 kept a hidden block in the page (display: none); Gradio 6 leaves it out, unless "hidden". An
        # extension's page script often talks to its Python through hidden textboxes and buttons it looks up by id.
        kwargs["visible"] = "hidden"
    caller = sys._getframe(1).f_code
    if caller.co_name == "postprocess_data" and caller.co_filename.endswith(_GRADIO_BLOCKS_PY):
        token = _rebuilding.set(True)
        try:
            component = type.__call__(cls, *args, **kwargs)
        finally:
            _rebuilding.reset(token)
        _add_classes(component)  # the rebuilt block replaces the page's one: same classes
    elif _building_update():  # made in an event function: an update carrier, not a block of the page
        component = type.__call__(cls, *args, **kwargs)
    elif not (_before or _after):
        component = type.__call__(cls, *args, **kwargs)
        _add_classes(component)
    else:
        hook_kwargs = _hook_kwargs(cls, args, kwargs)
        component = cls.__new__(cls, *args, **kwargs)
        _fire(_before, "before", component, hook_kwargs)
        type(component).__init__(component, *args, **kwargs)
        _add_classes(component)
        _fire(_after, "after", component, hook_kwargs)
    if tooltip is not None:
        component.webui_tooltip = tooltip
    return component


# --- constructor keywords ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _params(fn) -> frozenset | None:
    """Keyword names `fn` accepts; None when it takes **kwargs (anything goes, filtering happens further down)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def _translate(cls, kwargs: dict, accepted: frozenset):
    """Gradio 3 keywords → Gradio 6 for one constructor; returns (kwargs, fix-up to run on the built component)."""
    kwargs = dict(kwargs)
    name = cls.__name__
    quiet = _building_update()  # a rebuild repeats what the first construction already reported
    ext = UNKNOWN if quiet else calling_extension()

    def note(idiom):
        if not quiet:
            _record(idiom)

    if "source" in kwargs and "source" not in accepted and "sources" in accepted:
        source = kwargs.pop("source")
        note(f"{name}(source=)")
        if "sources" not in kwargs and source not in (None, "canvas"):
            kwargs["sources"] = [source]
    if "tool" in kwargs and "tool" not in accepted:
        kwargs.pop("tool")
        note(f"{name}(tool=)")
    if "mirror_webcam" in kwargs and "mirror_webcam" not in accepted and "webcam_options" in accepted:
        mirror = kwargs.pop("mirror_webcam")
        note(f"{name}(mirror_webcam=)")
        kwargs.setdefault("webcam_options", gr.WebcamOptions(mirror=bool(mirror)))
    buttons = {}
    for flag, button in _BUTTON_FLAGS.items():
        if flag in kwargs and flag not in accepted and "buttons" in accepted:
            buttons[button] = bool(kwargs.pop(flag))
            note(f"{flag}=")
    if "buttons" in kwargs:
        buttons = {}  # an explicit Gradio 6 list wins
    if kwargs.get("type") in _FILE_TYPES and "type" in accepted and issubclass(cls, (gr.File, gr.UploadButton)):
        kwargs["type"] = _FILE_TYPES[kwargs["type"]]
        note(f"{name}(type=)")
    unknown = [key for key in kwargs if key not in accepted]
    for key in unknown:
        kwargs.pop(key)
        note(f"{name}({key}=) dropped")
    if unknown and not quiet:
        _warn_once(ext, f"gr.{name}: dropped keyword(s) {', '.join(unknown)} (not in Gradio 6; see docs)")

    def fix_buttons(component):
        current = list(getattr(component, "buttons", None) or [])
        for button, shown in buttons.items():
            if shown and button not in current:
                current.append(button)
            if not shown and button in current:
                current.remove(button)
        component.buttons = current
        if getattr(component, "_constructor_args", None):  # an update rebuilds from these: keep the same buttons
            component._constructor_args[0]["buttons"] = list(current)

    return kwargs, (fix_buttons if buttons else None)


def _wrap_init(cls) -> None:
    """Filter/rename keywords at the class that declares them (subclasses passing **kwargs down end up here)."""
    init = vars(cls).get("__init__")
    if init is None or getattr(init, "_gradio_compat", False):
        return
    accepted = _params(init)
    if accepted is None:
        return
    file_types = "type" in accepted and issubclass(cls, (gr.File, gr.UploadButton))

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if accepted.issuperset(kwargs) and not (file_types and kwargs.get("type") in _FILE_TYPES):
            return init(self, *args, **kwargs)
        kwargs, fix = _translate(cls, kwargs, accepted)
        init(self, *args, **kwargs)
        if fix is not None:
            fix(self)

    __init__._gradio_compat = True
    cls.__init__ = __init__


def _updateable(fn):
    """Gradio's `updateable` wrapper, except that positional arguments beyond the named ones reach `fn` (Gradio
    drops them, so `class ToolButton(gr.Button): def __init__(self, *args, **kwargs)` lost its label)."""
    names = inspect.getfullargspec(fn).args[1:]

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        initialized_before = hasattr(self, "_constructor_args")
        if not initialized_before:
            self._constructor_args = []
        record = dict(kwargs)
        record.update(zip(names, args))
        self._constructor_args.append(record)
        in_event_listener, is_render = component_meta.get_local_contexts()
        if in_event_listener and initialized_before and not is_render:
            return None
        return fn(self, *args, **kwargs)

    return wrapper


# --- event listeners -----------------------------------------------------------------------------------------------

def _translate_event(event: str, kwargs: dict, accepted: frozenset):
    kwargs = dict(kwargs)
    if "_js" in kwargs:
        js = kwargs.pop("_js")
        _record("_js=")
        if kwargs.get("js") is None:
            kwargs["js"] = js
    every = None
    if "every" in kwargs and "every" not in accepted:
        every = kwargs.pop("every")
        _record("every=")
    if "show_api" in kwargs and "show_api" not in accepted:
        if not kwargs.pop("show_api") and "api_visibility" in accepted:
            kwargs.setdefault("api_visibility", "undocumented")
        _record("show_api=")
    unknown = [key for key in kwargs if key not in accepted]
    for key in unknown:
        kwargs.pop(key)
        _record(f".{event}({key}=) dropped")
    if unknown:
        _warn_once(calling_extension(), f".{event}(): dropped keyword(s) {', '.join(unknown)} (not in Gradio 6)")
    return kwargs, every


def _wrap_listener(fn):
    """An event method (`.click`, `.change`, `.then`, `Blocks.load`, `gr.on`, ...) that also takes Gradio 3 keywords."""
    if getattr(fn, "_gradio_compat", False):
        return fn
    sig = inspect.signature(fn)
    accepted = frozenset(sig.parameters)
    event = getattr(fn, "event_name", fn.__name__)

    @functools.wraps(fn)
    def listener(*args, **kwargs):
        if accepted.issuperset(kwargs):
            return fn(*args, **kwargs)
        kwargs, every = _translate_event(event, kwargs, accepted)
        dependency = fn(*args, **kwargs)
        if every:  # Gradio 3's periodic event: a Timer now
            call = sig.bind_partial(*args, **kwargs).arguments
            if call.get("fn") not in (None, "decorator"):
                gr.Timer(every).tick(call["fn"], call.get("inputs"), call.get("outputs"), js=kwargs.get("js"))
        return dependency

    listener._gradio_compat = True
    return listener


# --- small class-level shims ---------------------------------------------------------------------------------------

def _update(cls, *args, **kwargs):
    """Gradio 3's `gr.Dropdown.update(choices=...)`: the generic update dict of Gradio 6."""
    _record(".update()")
    if args:
        if len(args) > 1 or "value" in kwargs:
            raise TypeError(f"{cls.__name__}.update() takes the new value as its only positional argument")
        kwargs["value"] = args[0]
    return gr.update(**kwargs)


def _style(self, *args, **kwargs):
    """Gradio 3's `.style(...)` (grid, height, full_width, ...): a no-op; Gradio 6 takes these in the constructor."""
    _record(".style()")
    return self


def _no_pyi(*args, **kwargs) -> None:
    """Gradio writes a .pyi beside the file of every new component class (and crashes when the module is not in
    sys.modules, as for extension scripts loaded A1111's way). Stub generation is a development aid: off."""


def _component_class_id(cls) -> str:
    if cls is not _config_class(cls):  # a subclass defined outside Gradio is served as Gradio's base component
        return _config_class(cls).get_component_class_id()
    try:
        return _original_class_id(cls)
    except TypeError:  # inspect.getfile on a module that is not in sys.modules
        return hashlib.sha256(f"{cls.__name__}_{cls.__module__}".encode()).hexdigest()


def _get_config(self, cls=None):
    """Gradio builds a component's props from the signature of its class's __init__; a subclass with
    `__init__(self, **kwargs)` would send none. Use Gradio's own base class for those."""
    if cls is None:
        cls = _config_class(type(self))
    return _original_get_config(self, cls)


def _components_getattr(name: str):
    if name == "IOComponent":
        _record("IOComponent")
        return gr.components.Component
    raise AttributeError(f"module 'gradio.components' has no attribute {name!r}")


def _legacy_module(kind: str, table: dict) -> types.ModuleType:
    module = types.ModuleType(f"gradio.{kind}", f"Gradio 3's gr.{kind}: factories for the Gradio 6 components.")
    for name, positional in table.items():
        target = getattr(gr, name, None)
        if target is not None:
            setattr(module, name, _legacy_factory(kind, name, target, positional))
    return module


def _legacy_factory(kind: str, name: str, target, positional: tuple):
    def make(*args, **kwargs):
        _record(f"gr.{kind}")
        if len(args) > len(positional):
            raise TypeError(f"gr.{kind}.{name} takes at most {len(positional)} positional arguments "
                            f"({', '.join(positional)})")
        for key, value in zip(positional, args):
            kwargs.setdefault(key, value)
        if "default" in kwargs:
            default = kwargs.pop("default")
            kwargs.setdefault("value", default)
        for key in _OLD_QUIET:
            kwargs.pop(key, None)
        if name == "Textbox" and kwargs.get("type") in ("str", "number"):
            kwargs.pop("type")
        if kind == "outputs" and name == "Image" and kwargs.get("type") == "auto":
            kwargs.pop("type")
        return target(**kwargs)

    make.__name__ = name
    make.__qualname__ = f"{kind}.{name}"
    make.__doc__ = f"Gradio 3's gr.{kind}.{name}: builds gr.{name} (positional order {', '.join(positional)})."
    return make


def _make_box():
    class Box(gr.Group):
        """Gradio 3's gr.Box: a Group (rendered as one), also carrying the `gradio-box` class A1111 CSS targets."""

        def __init__(self, *args, **kwargs):
            if not _building_update():
                _record("Box")
            super().__init__(*args, **kwargs)
            if "gradio-box" not in self.elem_classes:
                self.elem_classes.append("gradio-box")

        def get_block_name(self):
            return "group"

    return Box


_sketch_cls = None


def _sketch_class():
    """gr.Image(tool="sketch" | "color-sketch") of Gradio 3 (inpaint masks, ControlNet scribbles) as an ImageEditor
    whose value keeps Gradio 3's shape: {"image": picture, "mask": white where painted, black elsewhere}."""
    global _sketch_cls
    if _sketch_cls is not None:
        return _sketch_cls
    from PIL import Image, ImageChops

    from gradio import image_utils

    class SketchImage(gr.ImageEditor):
        def __init__(self, value=None, *, tool="sketch", source=None, sources=None, type="numpy", image_mode="RGB",
                     brush_radius=None, brush_color=None, mask_opacity=None, **kwargs):
            self.sketch_tool = tool if tool in SKETCH_TOOLS else "sketch"
            self.sketch_type, self.sketch_mode = type, image_mode
            if sources is None and source is not None:
                sources = [] if source == "canvas" else [source]
            if sources is not None:
                kwargs["sources"] = sources
            size = int(brush_radius) if brush_radius else "auto"
            if self.sketch_tool == "sketch":  # a mask: one colour
                brush = gr.Brush(default_size=size, colors=[brush_color or "#ffffff"], color_mode="fixed")
            else:
                brush = gr.Brush(default_size=size, default_color=brush_color)
            kwargs.setdefault("brush", brush)
            # layers keep their alpha (the mask) only in RGBA; the requested type and mode are applied in preprocess
            super().__init__(value, type="pil", image_mode="RGBA", **kwargs)

        def get_block_name(self):
            return "imageeditor"

        def preprocess(self, payload):
            value = super().preprocess(payload)
            if value is None:
                return None
            base = value["background"] if self.sketch_tool == "sketch" else None
            base = value["composite"] if base is None else base
            if base is None:
                return None
            mask = Image.new("L", base.size, 0)
            for layer in value["layers"]:
                alpha = layer.convert("RGBA").getchannel("A")
                mask = ImageChops.lighter(mask, alpha if alpha.size == base.size else alpha.resize(base.size))
            if "A" in base.getbands():
                base = Image.alpha_composite(Image.new("RGBA", base.size, "white"), base.convert("RGBA"))
            image = base.convert(self.sketch_mode)
            mask = Image.merge("RGB", (mask, mask, mask))
            return {"image": self._typed(image, "image"), "mask": self._typed(mask, "mask")}

        def _typed(self, im, name):
            return image_utils.format_image(im, self.sketch_type, self.GRADIO_CACHE, name=name, format="png")

        def postprocess(self, value):
            if isinstance(value, dict) and "image" in value and "background" not in value:
                image = value["image"]
                value = None if image is None else {"background": image, "layers": [], "composite": image}
            return super().postprocess(value)

    _sketch_cls = SketchImage
    return _sketch_cls


# --- install -----------------------------------------------------------------------------------------------------

_original_get_config = Block.get_config
_original_class_id = Block.get_component_class_id.__func__


def _all_block_classes():
    seen, stack = [], [Block]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def install() -> None:
    """Patch Gradio once (later calls do nothing). Call before any extension code builds UI or defines components."""
    global _installed
    with _lock:
        if _installed:
            return
        # class creation: no .pyi files, *args reach subclass constructors, filtering for new classes too
        component_meta.create_or_modify_pyi = _no_pyi
        blocks_events.create_or_modify_pyi = _no_pyi
        component_meta.updateable = _updateable
        original_new = ComponentMeta.__new__

        def __new__(mcs, name, bases, attrs):
            cls = original_new(mcs, name, bases, attrs)
            _wrap_init(cls)
            return cls

        ComponentMeta.__new__ = staticmethod(__new__)
        ComponentMeta.__call__ = _construct
        Block.get_config = _get_config
        Block.get_component_class_id = classmethod(_component_class_id)

        # event listeners: the ones made from now on, the ones on existing classes, gr.on
        original_setup = events.EventListener._setup
        events.EventListener._setup = staticmethod(lambda *a, **k: _wrap_listener(original_setup(*a, **k)))
        for cls in _all_block_classes():
            _wrap_init(cls)
            for attr, value in list(vars(cls).items()):
                if inspect.isfunction(value) and hasattr(value, "event_name"):
                    setattr(cls, attr, _wrap_listener(value))
        gr.on = events.on = _wrap_listener(events.on)

        Block.update = classmethod(_update)
        Block.style = _style
        box = _make_box()
        gr.Box = gr.layouts.Box = box
        if not hasattr(gr.components, "__getattr__"):
            gr.components.__getattr__ = _components_getattr
        for kind, table in (("inputs", _OLD_INPUTS), ("outputs", _OLD_OUTPUTS)):
            module = _legacy_module(kind, table)
            setattr(gr, kind, module)
            sys.modules[f"gradio.{kind}"] = module
        _installed = True
