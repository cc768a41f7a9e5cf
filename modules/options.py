"""User settings (config.json), with A1111's option names, validated and written atomically.

One `Options` object holds them; A1111's extension surface (`shared.opts`, `opts.data`, `opts.data_labels`,
`shared.options_templates`, `OptionInfo` in both A1111's and our form) is this object, not a copy of it.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from modules import atomic_file


IMAGE_FORMATS = ["png", "jpg", "jpeg", "webp"]   # what samples_format / grid_format offer (images.encode writes them)


class OptionInfo:
    """One setting. Accepts A1111's form, `OptionInfo(default, label, component, component_args, onchange, section,
    refresh, comment_before, comment_after, infotext, restrict_api, category_id)` with `section` an `(id, label)` or
    `(id, label, category_id)` tuple, and ours, `OptionInfo(default, label, "Section label", choices=…, minimum=…,
    maximum=…)`: a string where A1111 has the component is our section. Limits and choices come from `minimum`,
    `maximum`, `choices` when given, else from `component_args` ({"minimum", "maximum", "choices"})."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None, *, choices=None, minimum=None, maximum=None):
        if isinstance(component, str):         # our form: the third argument is the section's label
            section, component = component, None
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = _section_tuple(section)
        self.category_id = category_id
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.do_not_save = False
        self._choices = choices
        self._minimum = minimum
        self._maximum = maximum

    def __repr__(self) -> str:
        return f"OptionInfo(default={self.default!r}, label={self.label!r}, section={self.section!r})"

    @property
    def kind(self) -> type:
        return type(self.default)

    @property
    def section_id(self) -> str:
        return self.section[0] if self.section else "other"

    @property
    def section_label(self) -> str:
        return self.section[1] if self.section else "Other"

    # --- limits and choices: ours, else from component_args ---------------------------------------------------
    def _args(self) -> dict:
        args = self.component_args
        if callable(args):
            args = args()
        return args if isinstance(args, dict) else {}

    @property
    def choices(self) -> Callable[[], list] | list | None:
        """A list, a callable returning one (read again when shown), or None (any value)."""
        if self._choices is not None:
            return self._choices
        args = self.component_args
        if callable(args):
            return lambda: _choice_values(self._args())
        if isinstance(args, dict):
            return _choice_values(args)
        return None

    @choices.setter
    def choices(self, value) -> None:
        self._choices = value

    @property
    def minimum(self) -> float | None:
        if self._minimum is not None:
            return self._minimum
        return self.component_args.get("minimum") if isinstance(self.component_args, dict) else None

    @minimum.setter
    def minimum(self, value) -> None:
        self._minimum = value

    @property
    def maximum(self) -> float | None:
        if self._maximum is not None:
            return self._maximum
        return self.component_args.get("maximum") if isinstance(self.component_args, dict) else None

    @maximum.setter
    def maximum(self, value) -> None:
        self._maximum = value

    # --- A1111's chainable decorations (HTML shown beside the label) ---------------------------------------------
    def link(self, label: str, url: str) -> "OptionInfo":
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> "OptionInfo":
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> "OptionInfo":
        self.comment_after += html
        return self

    def needs_restart(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


def _section_tuple(section) -> tuple | None:
    if section is None:
        return None
    if isinstance(section, str):  # our labels; the id is what the Settings page has always used in its elem_ids
        return section.lower().replace(" ", "_"), section
    section = tuple(section)
    if len(section) < 2:
        raise ValueError(f"OptionInfo section must be (id, label) or (id, label, category_id), got {section!r}")
    return section[:2]


def _choice_values(args: dict) -> list | None:
    """A Gradio component's choices as the values it stores: (label, value) pairs give their value."""
    if args.get("allow_custom_value"):
        return None
    choices = args.get("choices")
    if choices is None:
        return None
    return [c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c for c in choices]


class OptionHTML(OptionInfo):
    """A block of text on the Settings page (shown as HTML by modules/ui/settings_tab.py); not a setting (never
    saved)."""

    def __init__(self, text):
        super().__init__(str(text).strip(), label="")
        self.do_not_save = True


def options_section(section_identifier, options_dict: dict) -> dict:
    """A1111's helper: puts every option of `options_dict` in the section `(id, label)` or `(id, label, category)`."""
    for info in options_dict.values():
        info.section = _section_tuple(section_identifier[:2])
        if len(section_identifier) > 2:
            info.category_id = section_identifier[2]
    return options_dict


@dataclass
class OptionsCategory:
    id: str
    label: str


class OptionsCategories:
    """A1111's registry of settings categories (groups of sections)."""

    def __init__(self):
        self.mapping: dict[str, OptionsCategory] = {}

    def register_category(self, category_id: str, label: str) -> str:
        if category_id not in self.mapping:
            self.mapping[category_id] = OptionsCategory(category_id, label)
        return category_id


categories = OptionsCategories()
for _id, _label in (("saving", "Saving images"), ("sd", "Stable Diffusion"), ("ui", "User Interface"),
                    ("system", "System"), ("postprocessing", "Postprocessing"), ("training", "Training")):
    categories.register_category(_id, _label)


# The top bar by default: checkpoint, VAE and clip skip (A1111's own default is the checkpoint alone).
QUICKSETTINGS_DEFAULT = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")
# Settings that cannot be quicksettings: internal ones, the list itself, and the language (the top bar has its own
# Language switch).
NOT_QUICKSETTINGS = {"sd_checkpoint_hash", "quicksettings_list", "localization"}


def migrate(data: dict) -> dict:
    """Upgrades a loaded config.json in place. The list used to be hidden and fixed at ["sd_model_checkpoint"] while
    the top bar also showed VAE and clip skip; that saved value means "the old default", so it gives way to the new
    default instead of hiding those two."""
    if data.get("quicksettings_list") == ["sd_model_checkpoint"]:
        del data["quicksettings_list"]
    return data


class OptionError(ValueError):
    """A setting name or value that is not allowed; the message names the key and what is allowed."""


def _defaults() -> dict[str, OptionInfo]:
    return {
        # stable diffusion
        "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint", "Stable Diffusion"),
        "sd_vae": OptionInfo("Automatic", "SD VAE", "Stable Diffusion"),
        "tiled_vae": OptionInfo(False, "Tiled VAE: decode and encode large images in tiles", "Stable Diffusion").info(
            "less memory, colours may shift slightly; images too large for the free memory are tiled anyway"),
        "auto_vae_precision_bfloat16": OptionInfo(False, "Automatically convert VAE to bfloat16",
                                                  "Stable Diffusion").info(
            "when a half-precision VAE produces NaNs (a black image); wins over the setting below"),
        "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats", "Stable Diffusion").info(
            "when a half-precision VAE produces NaNs; turned off, such images fail with an error"),
        "sd_checkpoint_hash": OptionInfo("", "SHA256 of the current checkpoint", "Stable Diffusion"),
        "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", "Stable Diffusion", minimum=1, maximum=12,
                                               infotext="Clip skip"),
        "randn_source": OptionInfo("CPU", "Random number generator source", "Sampler parameters",
                                   choices=["CPU", "GPU", "NV"], infotext="RNG"),
        "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", "Sampler parameters", minimum=0,
                                           infotext="ENSD"),
        # A1111's default is the new timelines: [a:b:N] with a "." is a fraction, hires fix counts from 1 to 2
        "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines", "Sampler parameters",
                                         infotext="Old prompt editing timelines"),
        # saving
        "samples_save": OptionInfo(True, "Always save all generated images", "Saving images"),
        "samples_format": OptionInfo("png", "File format for images", "Saving images", choices=IMAGE_FORMATS),
        # grids (A1111's): a batch of several images is also saved, and shown first, as one grid
        "grid_save": OptionInfo(True, "Always save all generated image grids", "Saving images"),
        "grid_format": OptionInfo("png", "File format for grids", "Saving images", choices=IMAGE_FORMATS),
        "grid_extended_filename": OptionInfo(False, "Add extended info (seed, prompt) to filename when saving grid",
                                             "Saving images"),
        "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture", "Saving images"),
        "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size",
                             "Saving images", minimum=-1, maximum=16),
        "return_grid": OptionInfo(True, "Show grid in gallery (and first among the API's images)", "Saving images"),
        "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files",
                                     "Saving images"),
        "save_to_dirs": OptionInfo(True, "Save images to a subdirectory", "Saving images"),
        "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below",
                                     "Paths for saving"),
        "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images",
                                             "Paths for saving"),
        "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images",
                                             "Paths for saving"),
        # face restoration (A1111's section; modules/face_restoration): "Restore faces" for every generation whose
        # request leaves restore_faces unset, the restorer, CodeFormer's fidelity
        "face_restoration": OptionInfo(False, "Restore faces", "Face restoration", infotext="Face restoration"),
        "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model", "Face restoration",
                                             choices=["CodeFormer", "GFPGAN"]),
        "code_former_weight": OptionInfo(0.5, "CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                         "Face restoration", minimum=0, maximum=1),
        "face_restoration_unload": OptionInfo(False, "Move face restoration model from VRAM into RAM after "
                                              "processing", "Face restoration"),
        # user interface
        "localization": OptionInfo("None", "Localization", "User interface"),
        "quicksettings_list": OptionInfo(list(QUICKSETTINGS_DEFAULT), "Quicksettings list", "User interface"),
        # live previews
        "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "Live previews"),
        "show_progress_every_n_steps": OptionInfo(5, "Live preview display period (steps)", "Live previews",
                                                  minimum=-1, maximum=32),
    }


class _Labels(dict):
    """The dict of OptionInfo (A1111's `opts.data_labels`, also `shared.options_templates`). Extensions add settings
    with `options_templates.update(options_section(...))`, bypassing add_option; this dict tells its Options, so
    `opts.data` still gets the new keys' defaults."""

    def __init__(self, owner: "Options", items: dict):
        super().__init__(items)
        self._owner = owner

    def __setitem__(self, key, info) -> None:
        super().__setitem__(key, info)
        self._owner._known(key, info)

    def update(self, *args, **kwargs) -> None:
        for key, info in dict(*args, **kwargs).items():
            self[key] = info

    def setdefault(self, key, info=None):
        if key not in self:
            self[key] = info
        return self[key]


def _call_onchange(fn: Callable, value) -> None:
    """Our onchange functions take the new value; A1111's take nothing. Call each the way it is written."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        fn()
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if positional:
        fn(value)
    else:
        fn()


class Options:
    """The settings. `data` holds every known key's value, defaults included (extensions read `opts.data[key]`);
    config.json gets the keys it had when loaded plus every value that differs from its default, so a new default
    in a later version reaches users who never changed that setting."""

    _OWN = frozenset({"path", "frozen", "info", "data", "load_error"})

    def __init__(self, path: Path | None, frozen: bool = False):
        self.path = Path(path) if path else None
        self.frozen = frozen
        self.data: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._core = set()                  # our own settings: validated strictly (extension ones loosely)
        self._saved: set[str] = set()       # keys that were in config.json when it was loaded
        self.info = _Labels(self, {})
        self.info.update(_defaults())
        self._core = set(self.info)
        self.info["quicksettings_list"].choices = self.quicksettings_candidates
        self.load_error: str | None = None
        if self.path and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                if not isinstance(loaded, dict):
                    raise ValueError("not a JSON object")
                loaded = migrate(loaded)
                self.data.update(loaded)  # unknown keys are kept: extensions' settings live here too
                self._saved = set(loaded)
            except (OSError, ValueError) as exc:
                # Keep the broken file for the user instead of overwriting it on the next save.
                backup = self.path.with_suffix(self.path.suffix + ".broken")
                os.replace(self.path, backup)
                self.load_error = f"{self.path}: {exc}; it was moved to {backup.name} and defaults are used"

    def __setattr__(self, key: str, value: Any) -> None:
        """`opts.key = value` sets the value as A1111 does (no validation, no onchange); other names are attributes."""
        if key in self._OWN or key.startswith("_") or "info" not in self.__dict__:
            object.__setattr__(self, key, value)
            return
        info = self.info.get(key)
        if key in self.data or info is not None:
            if info is not None and info.do_not_save:
                return
            if self.frozen:
                raise OptionError(f"settings are frozen (--freeze-settings); {key!r} was not changed")
            with self._lock:
                self.data[key] = value
            return
        object.__setattr__(self, key, value)

    def _known(self, key: str, info: OptionInfo) -> None:
        if not info.do_not_save:
            with self._lock:
                if key not in self.data:
                    self.data[key] = copy.deepcopy(info.default)

    @property
    def data_labels(self) -> dict[str, OptionInfo]:
        return self.info

    def add(self, key: str, info: OptionInfo) -> None:
        self.info[key] = info

    def add_option(self, key: str, info: OptionInfo) -> None:
        self.info[key] = info

    def quicksettings_candidates(self) -> list[str]:
        """The settings that may be put in the top bar (Settings → User interface → Quicksettings list). Hidden ones
        (section id None, e.g. the A1111 compatibility keys) are not: the top bar builds a control for each candidate,
        and two hundred more load events kept Gradio's page from finishing its first render."""
        return [k for k, i in self.info.items()
                if k not in NOT_QUICKSETTINGS and not i.do_not_save and not (i.section and i.section[0] is None)]

    def quicksettings(self) -> list[str]:
        """The top bar's settings now: the saved list without unknown names or repeats, and always the checkpoint."""
        wanted = self.get("quicksettings_list")
        wanted = wanted if isinstance(wanted, list) else list(QUICKSETTINGS_DEFAULT)
        candidates = set(self.quicksettings_candidates())
        out = ["sd_model_checkpoint"]
        for key in wanted:
            if key in candidates and key not in out:
                out.append(key)
        return out

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self.data:
                return self.data[key]
            if key in self.info:
                return self.info[key].default
        raise OptionError(f"unknown setting {key!r}")

    def __getattr__(self, key: str) -> Any:  # opts.samples_save, like A1111's shared.opts
        if key.startswith("_") or key in self._OWN:
            raise AttributeError(key)
        try:
            return self.get(key)
        except OptionError:
            raise AttributeError(f"no setting or attribute {key!r} in the settings") from None

    def get_default(self, key: str) -> Any:
        info = self.info.get(key)
        return None if info is None else info.default

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {**{k: i.default for k, i in self.info.items() if not i.do_not_save}, **self.data}

    def validate(self, key: str, value: Any) -> Any:
        info = self.info.get(key)
        if info is None:
            raise OptionError(f"unknown setting {key!r}")
        value = self._check_type(key, info, value, strict=key in self._core)
        try:
            choices = info.choices() if callable(info.choices) else info.choices
        except Exception as exc:  # an extension's choice list that fails to build: say so, naming the setting
            raise OptionError(f"setting {key!r}: its list of choices could not be read ({exc})") from exc
        if isinstance(value, list) and choices is not None:
            unknown = [v for v in value if v not in choices]
            if unknown:
                raise OptionError(f"setting {key!r}: unknown {unknown}; allowed: {choices}")
        elif choices is not None and value not in choices:
            raise OptionError(f"setting {key!r} must be one of {choices}, got {value!r}")
        return value

    @staticmethod
    def _check_type(key: str, info: OptionInfo, value: Any, strict: bool) -> Any:
        """Our settings strictly; an extension's loosely as A1111 (an int setting may hold a float, a tuple is a
        list), always of the default's kind. A setting whose default is None takes anything."""
        kind = info.kind
        if info.default is None:
            return value
        if kind is bool:
            if not isinstance(value, bool):
                raise OptionError(f"setting {key!r} must be true or false, got {value!r}")
        elif kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(f"setting {key!r} must be a number, got {value!r}")
            if kind is int and isinstance(value, float) and not value.is_integer():
                if strict:
                    raise OptionError(f"setting {key!r} must be a whole number, got {value!r}")
            else:
                value = kind(value)
            if info.minimum is not None and value < info.minimum or info.maximum is not None and value > info.maximum:
                raise OptionError(f"setting {key!r} must be between {info.minimum} and {info.maximum}, got {value}")
        elif kind is str:
            if not isinstance(value, str):
                raise OptionError(f"setting {key!r} must be a string, got {value!r}")
        elif kind in (list, tuple):
            if not isinstance(value, (list, tuple)) or (strict and not isinstance(value, list)):
                raise OptionError(f"setting {key!r} must be a list, got {value!r}")
            value = list(value)
        elif not isinstance(value, kind):
            raise OptionError(f"setting {key!r} must be a {kind.__name__}, got {value!r}")
        return value

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True, *,
            save: bool = True) -> bool:
        """Validates, stores, runs the option's onchange and saves. Returns False when the value did not change (or,
        as in A1111, when the setting is not one that can be set: page text, or restricted from the API)."""
        info = self.info.get(key)
        if info is None:
            raise OptionError(f"unknown setting {key!r}")
        if info.do_not_save or (is_api and info.restrict_api):
            return False
        value = self.validate(key, value)
        with self._lock:
            old = self.get(key)
            if old == value:
                return False
            if self.frozen:
                raise OptionError(f"settings are frozen (--freeze-settings); {key!r} was not changed")
            self.data[key] = value
        if run_callbacks and info.onchange is not None:
            try:
                _call_onchange(info.onchange, value)
            except Exception as exc:
                with self._lock:
                    self.data[key] = old
                if isinstance(exc, (OptionError, KeyError, ValueError)):
                    raise
                raise OptionError(f"setting {key!r}: applying {value!r} failed: {exc}") from exc
        if save:
            self.save()
        return True

    def onchange(self, key: str, func: Callable, call: bool = True) -> None:
        """A1111: make `func` the setting's onchange (called with no arguments, or with the value if it takes one)."""
        info = self.info.get(key)
        if info is None:
            raise OptionError(f"unknown setting {key!r}")
        info.onchange = func
        if call:
            _call_onchange(func, self.get(key))

    def cast_value(self, key: str, value: Any) -> Any:
        """A value (often text from an infotext) converted to the setting's type: cast_value('eta_noise_seed_delta',
        '12') == 12."""
        if value is None:
            return None
        default = self.get_default(key)
        if default is None:
            default = self.data.get(key)
        if default is None:
            return None
        kind = type(default)
        if kind is bool and isinstance(value, str):
            return value.strip().lower() not in ("false", "0", "", "no", "off")
        return kind(value)

    def dumpjson(self) -> str:
        """The settings and the labels' HTML comments as JSON (A1111's shape: `_comments_before`, `_comments_after`,
        `_categories`)."""
        with self._lock:
            out: dict[str, Any] = {k: self.data.get(k, i.default) for k, i in self.info.items()}
        out["_comments_before"] = {k: i.comment_before for k, i in self.info.items() if i.comment_before}
        out["_comments_after"] = {k: i.comment_after for k, i in self.info.items() if i.comment_after}
        sections: dict[str, str] = {}
        for info in self.info.values():
            category = categories.mapping.get(info.category_id)
            sections.setdefault(category.label if category else "Uncategorized", info.section_label)
        out["_categories"] = [[section, cat] for cat, section in sections.items()] + [["Defaults", "Other"]]
        return json.dumps(out, default=str)

    def reorder(self) -> None:
        """A1111: settings grouped by category, then section label. In place: data_labels stays the same object."""
        order = {c: n for n, c in enumerate(categories.mapping)}
        items = sorted(self.info.items(), key=lambda kv: (order.get(kv[1].category_id, len(order)),
                                                           kv[1].section_label))
        dict.clear(self.info)
        dict.update(self.info, items)

    def to_save(self) -> dict[str, Any]:
        """What config.json gets: the keys it had, and every value that differs from its default."""
        with self._lock:
            out = {}
            for key, value in self.data.items():
                info = self.info.get(key)
                if info is not None and info.do_not_save:
                    continue
                if key in self._saved or info is None or value != info.default:
                    out[key] = value
            return out

    def save(self, filename: str | os.PathLike | None = None) -> None:
        target = Path(filename) if filename else self.path
        if target is None or self.frozen:
            return
        text = json.dumps(self.to_save(), indent=4, ensure_ascii=False, default=str)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file.replacing(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
