"""X/Y/Z plot, A1111's built-in selectable script: one image per combination of up to three axes' values (steps,
CFG, sampler, checkpoint, prompt S/R, …), laid out as a labelled grid per Z value and those grids side by side.

Its public names are A1111's (`AxisOption`, `AxisOptionImg2Img`, `AxisOptionTxt2Img`, `axis_options`,
`apply_field`, `apply_override`, `apply_prompt`, `format_value…`), because extensions (sd-dynamic-prompts,
ControlNet, …) find this module by `__module__ == "xyz_grid.py"` in `scripts.scripts_data` and append their own
axes to `axis_options`; the Script reads the list when the UI is built and when it runs.

The whole plot is one queued job: `state.job_count` covers every cell, interrupt stops between cells (cells not
run stay blank) and every axis value is checked before the first cell runs. A checkpoint or VAE axis switches
the model per cell (costly axes are looped outermost, as in A1111) and the model the job started with is back
afterwards, errors and interrupts included.
"""
from __future__ import annotations

import copy
import logging
import random
import sys
from itertools import permutations
from typing import Any, Callable

import gradio as gr
from PIL import Image

from modules import images, processing, scripts, shared, xyz_values
from modules.engine.params import ParamError
from modules.ui_components import ToolButton

log = logging.getLogger("sd.xyz")
sys.modules.setdefault("scripts.xyz_grid", sys.modules[__name__])   # `import scripts.xyz_grid` finds this copy

FILL_SYMBOL = "\U0001f4d2"   # 📒 fills an axis with all its choices


# --- apply functions (A1111 names): each sets one axis value on a copy of p ---------------------------------------
def apply_field(field: str) -> Callable:
    def fun(p, x, xs):
        setattr(p, field, x)
    return fun


def apply_override(field: str, boolean: bool = False) -> Callable:
    """Puts the value into p.override_settings (a setting for this cell only)."""
    def fun(p, x, xs):
        if boolean:
            x = str(x).lower() == "true"
        p.override_settings[field] = x
    return fun


def apply_prompt(p, x, xs):
    """Prompt S/R: the first value is searched for and replaced by each value, in the prompt and the negative."""
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise ParamError("Prompt S/R", f"did not find {xs[0]!r} in the prompt or the negative prompt")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_order(p, x, xs):
    """Prompt order: the listed words put into the prompt in this permutation's order, in the places where the
    words stood."""
    found = sorted((p.prompt.find(token), token) for token in x)
    parts, rest = [], p.prompt
    for _, token in found:
        n = rest.find(token)
        parts.append(rest[:n])
        rest = rest[n + len(token):]
    p.prompt = "".join(part + x[i] for i, part in enumerate(parts)) + rest


def apply_checkpoint(p, x, xs):
    info = _find_checkpoint(x)
    if info is None:
        raise ParamError("Checkpoint name", f"unknown checkpoint {x!r}; available: {_checkpoint_choices()}")
    p.override_settings["sd_model_checkpoint"] = info.name


def apply_vae(p, x, xs):
    p.override_settings["sd_vae"] = _vae_name(x)


def apply_styles(p, x, _):
    p.styles.extend(s.strip() for s in x.split(",") if s.strip())


def apply_face_restore(p, opt, x):
    opt = str(opt).lower()
    if opt == "codeformer":
        p.restore_faces, p.face_restoration_model = True, "CodeFormer"
    elif opt == "gfpgan":
        p.restore_faces, p.face_restoration_model = True, "GFPGAN"
    else:
        p.restore_faces = opt in ("true", "yes", "y", "1")


def apply_size(p, x: str, xs) -> None:
    width, height = _parse_size(x)
    p.width, p.height = width, height


def apply_uni_pc_order(p, x, xs):
    p.override_settings["uni_pc_order"] = min(x, p.steps - 1)


def apply_clip_skip(p, x, xs):
    p.override_settings["CLIP_stop_at_last_layers"] = x
    p.clip_skip = x   # a p's own clip skip wins over the setting in our engine


def do_nothing(p, x, xs):
    pass


# --- labels ------------------------------------------------------------------------------------------------------
def format_value_add_label(p, opt, x):
    if isinstance(x, float):
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if isinstance(x, float):
        x = round(x, 8)
    return x


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def format_remove_path(p, opt, x):
    return str(x).replace("\\", "/").rsplit("/", 1)[-1]


def format_nothing(p, opt, x):
    return ""


def str_permutations(x):
    """A type that marks Prompt order: its values are permutations of the listed words."""
    return x


def boolean_choice(reverse: bool = False) -> Callable[[], list[str]]:
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]
    return choice


# --- checks run before any cell (confirm functions: fun(p, xs)) --------------------------------------------------
def _allowed(axis: str, values, choices: list[str], fold: bool = True) -> None:
    known = {c.lower() if fold else c for c in choices}
    bad = [v for v in values if (str(v).lower() if fold else str(v)) not in known]
    if bad:
        raise ParamError(axis, f"unknown value(s) {bad}; allowed: {choices}")


def _sampler_names() -> list[str]:
    from modules.engine import samplers   # read at run time: other code may add samplers
    return samplers.sampler_names()


def _confirm_sampler_names(label: str) -> Callable:
    def fun(p, xs):
        from modules.engine import samplers
        for x in xs:
            try:
                samplers.resolve(x, "Automatic")
            except samplers.SamplerError:
                raise ParamError(label, f"unknown sampler {x!r}; allowed: {_sampler_names()}") from None
    return fun


confirm_samplers = _confirm_sampler_names("Sampler")


def _schedule_names() -> list[str]:
    from modules.engine import samplers
    return list(samplers.SCHEDULES)


def confirm_schedules(p, xs):
    from modules.engine import samplers
    for x in xs:
        if samplers.canonical_schedule(x) is None:
            raise ParamError("Schedule type", f"unknown schedule type {x!r}; allowed: {_schedule_names()}")


def _find_checkpoint(name: str):
    from modules import sd_models
    return sd_models.get_closet_checkpoint_match(str(name))


def _checkpoint_choices() -> list[str]:
    from modules import sd_models
    return sorted(sd_models.checkpoints_list, key=str.casefold)


def confirm_checkpoints(p, xs):
    for x in xs:
        if _find_checkpoint(x) is None:
            raise ParamError("Checkpoint name", f"unknown checkpoint {x!r}; available: {_checkpoint_choices()}")


def confirm_checkpoints_or_none(p, xs):
    for x in xs:
        if x not in (None, "", "None", "none") and _find_checkpoint(x) is None:
            raise ParamError("Refiner checkpoint", f"unknown checkpoint {x!r}; available: "
                                                   f"{['None'] + _checkpoint_choices()}")


def _vae_choices() -> list[str]:
    return ["Automatic", "None"] + [v.name for v in shared.runtime().registry.vaes]


def _vae_name(x) -> str:
    text = str(x).strip()
    for choice in _vae_choices():
        if choice.lower() == text.lower():
            return choice
    rt = shared.runtime()
    found = rt.registry.find_vae(text)
    if found is None:
        raise ParamError("VAE", f"unknown VAE {text!r}; allowed: {_vae_choices()}")
    return found.name


def confirm_vae(p, xs):
    for x in xs:
        _vae_name(x)


def _style_choices() -> list[str]:
    return list(shared.prompt_styles.styles)


def confirm_styles(p, xs):
    names = [s.strip() for x in xs for s in str(x).split(",") if s.strip()]
    _allowed("Styles", names, _style_choices(), fold=False)


def _hires_upscaler_choices() -> list[str]:
    return list(dict.fromkeys([*shared.latent_upscale_modes, *[u.name for u in shared.sd_upscalers]]))


def confirm_hires_upscalers(p, xs):
    _allowed("Hires upscaler", xs, _hires_upscaler_choices(), fold=False)


def confirm_prompt_sr(p, xs):
    if xs and xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise ParamError("Prompt S/R", f"did not find {xs[0]!r} in the prompt or the negative prompt (the first "
                                       "value is what is searched for)")


def _parse_size(x) -> tuple[int, int]:
    w, sep, h = str(x).lower().partition("x")
    try:
        return int(w.strip()), int(h.strip())
    except ValueError:
        raise ParamError("Size", f"{x!r} is not a size; write WIDTHxHEIGHT, e.g. 512x768") from None


def confirm_sizes(p, xs):
    for x in xs:
        _parse_size(x)


def confirm_choices(label: str, choices: Callable[[], list[str]]) -> Callable:
    def fun(p, xs):
        _allowed(label, xs, choices())
    return fun


def confirm_range(label: str, minimum=None, maximum=None) -> Callable:
    def fun(p, xs):
        bad = [x for x in xs if (minimum is not None and x < minimum) or (maximum is not None and x > maximum)]
        if bad:
            raise ParamError(label, f"value(s) {bad} out of range; allowed: {minimum}..{maximum}")
    return fun


# --- the axes ----------------------------------------------------------------------------------------------------
class AxisOption:
    def __init__(self, label: str, type: Callable, apply: Callable, format_value: Callable = format_value_add_label,
                 confirm: Callable | None = None, cost: float = 0.0, choices: Callable | None = None,
                 prepare: Callable | None = None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


FACE_RESTORE_CHOICES = ["True", "False", "CodeFormer", "GFPGAN"]

axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength"), confirm=confirm_range("Var. strength", 0, 1)),
    AxisOption("Steps", int, apply_field("steps"), confirm=confirm_range("Steps", 1, 150)),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps"),
                      confirm=confirm_range("Hires steps", 0, 150)),
    AxisOption("CFG Scale", float, apply_field("cfg_scale"), confirm=confirm_range("CFG Scale", 0, 100)),
    AxisOptionImg2Img("Image CFG Scale", float, apply_field("image_cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value, confirm=confirm_prompt_sr),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list),
    AxisOptionTxt2Img("Sampler", str, apply_field("sampler_name"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_names),
    AxisOptionTxt2Img("Hires sampler", str, apply_field("hr_sampler_name"), confirm=_confirm_sampler_names(
                      "Hires sampler"),
                      choices=_sampler_names),
    AxisOptionImg2Img("Sampler", str, apply_field("sampler_name"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_names),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path, confirm=confirm_checkpoints,
               cost=1.0, choices=_checkpoint_choices),
    AxisOption("Negative Guidance minimum sigma", float, apply_field("s_min_uncond")),
    AxisOption("Sigma Churn", float, apply_field("s_churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin")),
    AxisOption("Sigma max", float, apply_field("s_tmax")),
    AxisOption("Sigma noise", float, apply_field("s_noise")),
    AxisOption("Schedule type", str, apply_field("scheduler"), confirm=confirm_schedules, choices=_schedule_names),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max")),
    AxisOption("Schedule rho", float, apply_override("rho")),
    AxisOption("Beta schedule alpha", float, apply_override("beta_dist_alpha")),
    AxisOption("Beta schedule beta", float, apply_override("beta_dist_beta")),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_clip_skip, confirm=confirm_range("Clip skip", 1, 12)),
    AxisOption("Denoising", float, apply_field("denoising_strength"), confirm=confirm_range("Denoising", 0, 1)),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    AxisOption("Extra noise", float, apply_override("img2img_extra_noise")),
    AxisOptionTxt2Img("Hires upscaler", str, apply_field("hr_upscaler"), confirm=confirm_hires_upscalers,
                      choices=_hires_upscaler_choices),
    AxisOptionImg2Img("Cond. Image Mask Weight", float, apply_field("inpainting_mask_weight")),
    AxisOption("VAE", str, apply_vae, cost=0.7, confirm=confirm_vae, choices=_vae_choices),
    AxisOption("Styles", str, apply_styles, confirm=confirm_styles, choices=_style_choices),
    AxisOption("UniPC Order", int, apply_uni_pc_order, cost=0.5),
    AxisOption("Face restore", str, apply_face_restore, format_value=format_value,
               confirm=confirm_choices("Face restore", lambda: FACE_RESTORE_CHOICES + ["yes", "no", "y", "n", "1",
                                                                                       "0"])),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption("Token merging ratio high-res", float, apply_override("token_merging_ratio_hr")),
    AxisOption("Always discard next-to-last sigma", str, apply_override("always_discard_next_to_last_sigma",
                                                                        boolean=True),
               confirm=confirm_choices("Always discard next-to-last sigma", boolean_choice(reverse=True)),
               choices=boolean_choice(reverse=True)),
    AxisOption("SGM noise multiplier", str, apply_override("sgm_noise_multiplier", boolean=True),
               confirm=confirm_choices("SGM noise multiplier", boolean_choice(reverse=True)),
               choices=boolean_choice(reverse=True)),
    AxisOption("Refiner checkpoint", str, apply_field("refiner_checkpoint"), format_value=format_remove_path,
               confirm=confirm_checkpoints_or_none, cost=1.0, choices=lambda: ["None"] + _checkpoint_choices()),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at")),
    AxisOption("RNG source", str, apply_override("randn_source"),
               confirm=confirm_choices("RNG source", lambda: ["GPU", "CPU", "NV"]),
               choices=lambda: ["GPU", "CPU", "NV"]),
    AxisOption("FP8 mode", str, apply_override("fp8_storage"), cost=0.9,
               choices=lambda: ["Disable", "Enable for SDXL", "Enable"]),
    AxisOption("Size", str, apply_size, confirm=confirm_sizes),
]

# Axes offered that our engine does not act on yet: their value reaches p / override_settings and the labels, the
# images do not change (A1111 offers them; extensions may read them).
NO_EFFECT_YET = {"Image CFG Scale", "Negative Guidance minimum sigma", "Schedule min sigma", "Schedule max sigma",
                 "Schedule rho", "Beta schedule alpha", "Beta schedule beta", "Cond. Image Mask Weight",
                 "UniPC Order", "Token merging ratio", "Token merging ratio high-res",
                 "Always discard next-to-last sigma", "SGM noise multiplier", "Refiner checkpoint",
                 "Refiner switch at", "FP8 mode"}


def axes_for(is_img2img: bool) -> list[AxisOption]:
    """The axes one tab offers, in the order of its type dropdowns (the API's x_type/y_type/z_type index this)."""
    return [x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img]


# --- values ------------------------------------------------------------------------------------------------------
def list_values(opt: AxisOption, text: str, dropdown, csv_mode: bool, p=None) -> list:
    """The values of one axis, ranges expanded and converted to its type; ParamError names the axis."""
    if opt.label == "Nothing":
        return [0]
    if opt.choices is not None and not csv_mode:
        items = [str(v) for v in (dropdown or [])]
        if not items and text:   # the API may send the values as text even for a choice axis
            items = xyz_values.split_csv(text)
    else:
        items = xyz_values.split_csv(text or "")
    if not items:
        raise ParamError(opt.label, "no values given")
    try:
        if opt.type is int:
            values = [int(v) for v in xyz_values.expand_ints(items)]
        elif opt.type is float:
            values = [float(v) for v in xyz_values.expand_floats(items)]
        elif opt.type is str_permutations:
            values = list(permutations(items))
        else:
            values = [opt.type(v) for v in items]
    except ValueError as exc:
        kind = {int: "whole numbers", float: "numbers"}.get(opt.type, "values")
        raise ParamError(opt.label, f"{exc}; write {kind}, comma separated, or a range such as 1-5, "
                                    "1-10 (+2), 1-10 [5]") from None
    if opt.confirm is not None:
        opt.confirm(p, values)
    return values


def fix_axis_seeds(opt: AxisOption, values: list) -> list:
    """-1 (or empty) seeds on a Seed / Var. seed axis become random ones, so the labels name the seed used."""
    if opt.label in ("Seed", "Var. seed"):
        return [int(random.randrange(4294967294)) if v in (None, "", -1) else v for v in values]
    return values


def _axis_type(options: list[AxisOption], value, axis: str) -> AxisOption:
    """A type dropdown's value: its index (the UI, A1111's API) or, our addition, the axis label."""
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        for opt in options:
            if opt.label.lower() == value.lower():
                return opt
        raise ParamError(f"{axis} type", f"unknown axis {value!r}; allowed: {[o.label for o in options]}")
    index = int(value or 0)
    if not 0 <= index < len(options):
        raise ParamError(f"{axis} type", f"index {index} out of range 0..{len(options) - 1}; axes: "
                                         f"{[o.label for o in options]}")
    return options[index]


# --- the grid ----------------------------------------------------------------------------------------------------
def _loop_order(x_opt, y_opt, z_opt) -> tuple[str, str]:
    """Which axes to loop outermost: the costliest (checkpoint, VAE), so the model switches as few times as
    possible; A1111's rule, ties keep Z outermost, then Y."""
    first, second = "z", "y"
    if x_opt.cost > y_opt.cost and x_opt.cost > z_opt.cost:
        first, second = "x", ("z" if z_opt.cost > y_opt.cost else "y")
    elif y_opt.cost > x_opt.cost and y_opt.cost > z_opt.cost:
        first, second = "y", ("z" if z_opt.cost > x_opt.cost else "x")
    elif z_opt.cost > x_opt.cost and z_opt.cost > y_opt.cost:
        first, second = "z", ("y" if y_opt.cost > x_opt.cost else "x")
    return first, second


def _cell_order(nx: int, ny: int, nz: int, first: str, second: str) -> list[tuple[int, int, int]]:
    third = ({"x", "y", "z"} - {first, second}).pop()
    sizes = {"x": nx, "y": ny, "z": nz}
    order = []
    for a in range(sizes[first]):
        for b in range(sizes[second]):
            for c in range(sizes[third]):
                idx = {first: a, second: b, third: c}
                order.append((idx["x"], idx["y"], idx["z"]))
    return order


def draw_xyz_grid(p, xs, ys, zs, x_labels, y_labels, z_labels, cell, draw_legend, include_lone_images,
                  include_sub_grids, first_axes_processed, second_axes_processed, margin_size):
    """Runs `cell(x, y, z, ix, iy, iz)` for every combination and lays the results out: returns a Processed whose
    images are the Z grid (the sub-grids side by side, Z labels on top), then one sub-grid per Z value, then the
    cells (X across, Y down); cells that did not run are blank. `include_lone_images`/`include_sub_grids` are
    applied by the caller."""
    per_grid = len(xs) * len(ys)
    total = per_grid * len(zs)
    cells: list[Image.Image | None] = [None] * total
    texts: list[str | None] = [None] * total
    prompts: list[str | None] = [None] * total
    negatives: list[str | None] = [None] * total
    seeds: list[int | None] = [None] * total
    subseeds: list[int | None] = [None] * total
    first_result = None
    state = p.state
    for ix, iy, iz in _cell_order(len(xs), len(ys), len(zs), first_axes_processed, second_axes_processed):
        if state is not None and (state.interrupted or state.stopping_generation):
            break
        index = ix + iy * len(xs) + iz * per_grid
        if state is not None:
            state.job = f"{index + 1} out of {total}"
        result = cell(xs[ix], ys[iy], zs[iz], ix, iy, iz)
        if result is None or not result.images:
            continue
        first_result = first_result or result
        cells[index] = result.images[0]
        texts[index] = result.infotexts[0] if result.infotexts else ""
        prompts[index] = result.all_prompts[0] if result.all_prompts else p.prompt
        negatives[index] = result.all_negative_prompts[0] if result.all_negative_prompts else p.negative_prompt
        seeds[index] = result.seed
        subseeds[index] = result.subseed
    if first_result is None:
        return processing.Processed(p, [], p.seed, "")
    size = next(c.size for c in cells if c is not None)
    mode = next(c.mode for c in cells if c is not None)
    cells = [c if c is not None else Image.new(mode, size) for c in cells]
    hor = [[images.GridAnnotation(str(x))] for x in x_labels]
    ver = [[images.GridAnnotation(str(y))] for y in y_labels]
    titles = [[images.GridAnnotation(str(z))] for z in z_labels]
    sub_grids = []
    for iz in range(len(zs)):
        part = cells[iz * per_grid:(iz + 1) * per_grid]
        grid = images.image_grid(part, rows=len(ys))
        if draw_legend:
            w, h = map(max, zip(*(im.size for im in part)))
            grid = images.draw_grid_annotations(grid, w, h, copy.deepcopy(hor), copy.deepcopy(ver), margin_size)
        sub_grids.append(grid)
    z_grid = images.image_grid(sub_grids, rows=1)
    if draw_legend:
        w, h = map(max, zip(*(im.size for im in sub_grids)))
        z_grid = images.draw_grid_annotations(z_grid, w, h, titles, [[images.GridAnnotation()]])
    fill = first_result
    out = processing.Processed(
        p, [z_grid] + sub_grids + cells, fill.seed, fill.info, fill.subseed,
        all_prompts=[x if x is not None else p.prompt for x in prompts],
        all_negative_prompts=[x if x is not None else p.negative_prompt for x in negatives],
        all_seeds=[x if x is not None else fill.seed for x in seeds],
        all_subseeds=[x if x is not None else fill.subseed for x in subseeds],
        index_of_first_image=1 + len(sub_grids),
        infotexts=[fill.info] * (1 + len(sub_grids)) + [t if t is not None else "" for t in texts])
    out.cells_done = sum(t is not None for t in texts)
    return out


# --- model switching per cell ------------------------------------------------------------------------------------
class _Models:
    """The checkpoint and VAE that cells ask for (p.override_settings sd_model_checkpoint / sd_vae, also from
    extensions' axes), loaded before the cell; `restore()` puts back what the job started with."""

    def __init__(self):
        self.rt = shared.runtime() if shared.bound() else None
        model = self.rt.models.model if self.rt is not None else None
        self.start_info = model.info if model is not None else None
        self.start_vae = model.vae_file if model is not None else None
        self.switched = False

    def prepare(self, pc) -> None:
        if self.rt is None:
            return
        overrides = pc.override_settings
        models = self.rt.models
        if "sd_model_checkpoint" in overrides:
            info = models.select(str(overrides["sd_model_checkpoint"]))
            if models.model is None or models.model.info.filename != info.filename:
                models.load(info)
                self.switched = True
        if "sd_vae" in overrides:
            models.apply_vae(str(overrides["sd_vae"]))
            self.switched = True
        model = models.require()
        if pc.sd_model is not model:
            pc.sd_model = model
            from modules.engine.patches import PatchSet
            embeddings = self.rt.embeddings.for_job(model)
            pc.patches = PatchSet()
            pc.patches.embeddings.update(embeddings.vectors)
            pc.patches.embedding_hash = embeddings.hash_of

    def restore(self) -> None:
        if self.rt is None or not self.switched or self.start_info is None:
            return
        models = self.rt.models
        try:
            models.load(self.start_info)
            if models.model.vae_file != self.start_vae:
                models.apply_vae_file(self.start_vae)
        except Exception:   # the job's own error (if any) is the one to report
            log.exception("X/Y/Z plot: could not restore %s", self.start_info.title)


_RUN_OPTION_KEYS = {"CLIP_stop_at_last_layers", "randn_source", "eta_noise_seed_delta", "img2img_extra_noise",
                    "use_old_scheduling"}


def _refresh_run_options(pc) -> None:
    """A cell's setting overrides that the engine reads through p.run_options (clip skip, RNG, ENSD, extra noise)."""
    if not shared.bound() or not _RUN_OPTION_KEYS & set(pc.override_settings):
        return
    rt = shared.runtime()
    pc.run_options = rt.run_options(pc, rt.options_view(pc.override_settings))


# --- the script --------------------------------------------------------------------------------------------------
class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = axes_for(is_img2img)
        labels = [x.label for x in self.current_axis_options]
        rows = []
        for axis, default in (("x", 1), ("y", 0), ("z", 0)):
            with gr.Row():
                with gr.Column(scale=19):
                    with gr.Row():
                        kind = gr.Dropdown(label=f"{axis.upper()} type", choices=labels, value=labels[default],
                                           type="index", elem_id=self.elem_id(f"{axis}_type"))
                        text = gr.Textbox(label=f"{axis.upper()} values", lines=1,
                                          elem_id=self.elem_id(f"{axis}_values"))
                        dropdown = gr.Dropdown(label=f"{axis.upper()} values", visible=False, multiselect=True,
                                               interactive=True, choices=[], value=[],
                                               elem_id=self.elem_id(f"{axis}_values_dropdown"))
                fill = ToolButton(value=FILL_SYMBOL, elem_id=self.elem_id(f"{axis}_fill"), visible=False)
            rows.append((kind, text, dropdown, fill))
        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False,
                                             elem_id=self.elem_id("no_fixed_seeds"))
                with gr.Row():
                    vary_x = gr.Checkbox(label="Vary seeds for X", value=False, elem_id=self.elem_id("vary_seeds_x"))
                    vary_y = gr.Checkbox(label="Vary seeds for Y", value=False, elem_id=self.elem_id("vary_seeds_y"))
                    vary_z = gr.Checkbox(label="Vary seeds for Z", value=False, elem_id=self.elem_id("vary_seeds_z"))
            with gr.Column():
                include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                                  elem_id=self.elem_id("include_lone_images"))
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                                elem_id=self.elem_id("include_sub_grids"))
                csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                       elem_id=self.elem_id("csv_mode"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))

        options = self.current_axis_options

        def show_values(index, csv, current_text, current_choice):
            opt = options[index] if index is not None and 0 <= index < len(options) else options[0]
            has_choices = opt.choices is not None and not csv
            choices = opt.choices() if opt.choices is not None else []
            if has_choices:   # the text's values that are choices move into the dropdown
                kept = [c for c in (current_choice or []) + xyz_values.split_csv(current_text or "")
                        if c in choices]
                return (gr.update(visible=False), gr.update(visible=True, choices=choices,
                                                            value=list(dict.fromkeys(kept))),
                        gr.update(visible=True))
            text = current_text or (xyz_values.join_csv(current_choice) if current_choice else "")
            return (gr.update(visible=opt.label != "Nothing", value=text), gr.update(visible=False),
                    gr.update(visible=opt.choices is not None))

        def fill_values(index, csv):
            opt = options[index]
            if opt.choices is None:
                return gr.update(), gr.update()
            choices = opt.choices()
            return (gr.update(value=xyz_values.join_csv(choices)) if csv else gr.update(),
                    gr.update(value=choices) if not csv else gr.update())

        for kind, text, dropdown, fill in rows:
            kind.change(show_values, [kind, csv_mode, text, dropdown], [text, dropdown, fill])
            csv_mode.change(show_values, [kind, csv_mode, text, dropdown], [text, dropdown, fill])
            fill.click(fill_values, [kind, csv_mode], [text, dropdown])

        (x_type, x_values, x_values_dropdown, _), (y_type, y_values, y_values_dropdown, _), \
            (z_type, z_values, z_values_dropdown, _) = rows
        self.infotext_fields = [
            (x_type, "X Type"), (x_values, "X Values"), (y_type, "Y Type"), (y_values, "Y Values"),
            (z_type, "Z Type"), (z_values, "Z Values"),
        ]
        return [x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
                z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_x,
                vary_y, vary_z, margin_size, csv_mode]

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
            vary_seeds_y, vary_seeds_z, margin_size, csv_mode):
        options = getattr(self, "current_axis_options", None) or axes_for(p.is_img2img)
        x_opt = _axis_type(options, x_type, "X")
        y_opt = _axis_type(options, y_type, "Y")
        z_opt = _axis_type(options, z_type, "Z")
        margin_size = int(margin_size or 0)
        if not no_fixed_seeds:
            processing.fix_seed(p)
        if not _opt("return_grid", True):
            p.batch_size = 1
        # every axis checked (values, ranges, names) before the first cell runs
        xs = list_values(x_opt, x_values, x_values_dropdown, csv_mode, p)
        ys = list_values(y_opt, y_values, y_values_dropdown, csv_mode, p)
        zs = list_values(z_opt, z_values, z_values_dropdown, csv_mode, p)
        if not no_fixed_seeds:
            xs, ys, zs = fix_axis_seeds(x_opt, xs), fix_axis_seeds(y_opt, ys), fix_axis_seeds(z_opt, zs)
        for opt, values in ((x_opt, xs), (y_opt, ys), (z_opt, zs)):
            if opt.prepare is not None:
                opt.prepare(p, values)
        total = len(xs) * len(ys) * len(zs)
        log.info("X/Y/Z plot will create %d images on %d %dx%d grid%s (%d per cell)", total * p.n_iter * p.batch_size,
                 len(zs), len(xs), len(ys), "s" if len(zs) > 1 else "", p.n_iter * p.batch_size)
        if p.state is not None:
            p.state.job_count = total * p.n_iter
            p.state.job_no = 0
        if p.scripts is not None:   # the always-on scripts' hooks, once for all the cells' copies of p
            scripts.attach(p)
        grid_infotext: list[str | None] = [None] * (1 + len(zs))
        models = _Models()

        def cell(x, y, z, ix, iy, iz):
            pc = copy.copy(p)
            pc.styles = list(p.styles)
            pc.override_settings = dict(p.override_settings)
            pc.extra_generation_params = dict(p.extra_generation_params)
            pc.comments = dict(p.comments)
            pc.run_options = copy.copy(p.run_options)
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            z_opt.apply(pc, z, zs)
            xdim = len(xs) if vary_seeds_x else 1
            ydim = len(ys) if vary_seeds_y else 1
            if vary_seeds_x:
                pc.seed += ix
            if vary_seeds_y:
                pc.seed += iy * xdim
            if vary_seeds_z:
                pc.seed += iz * xdim * ydim
            models.prepare(pc)
            _refresh_run_options(pc)
            res = processing.process_images(pc)   # an error fails the job (the model is restored)
            sub = 1 + iz
            if ix == 0 and iy == 0 and (grid_infotext[sub] is None or grid_infotext[0] is None):
                pc.extra_generation_params = dict(pc.extra_generation_params)
                pc.extra_generation_params["Script"] = self.title()
                for name, opt, values, shown in (("X", x_opt, xs, x_values), ("Y", y_opt, ys, y_values)):
                    if opt.label != "Nothing":
                        pc.extra_generation_params[f"{name} Type"] = opt.label
                        pc.extra_generation_params[f"{name} Values"] = _values_text(opt, shown, values, csv_mode)
                        if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                            pc.extra_generation_params[f"Fixed {name} Values"] = ", ".join(str(v) for v in values)
                if grid_infotext[sub] is None:
                    grid_infotext[sub] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds,
                                                                    pc.all_subseeds)
                if grid_infotext[0] is None and iz == 0:
                    if z_opt.label != "Nothing":
                        pc.extra_generation_params["Z Type"] = z_opt.label
                        pc.extra_generation_params["Z Values"] = _values_text(z_opt, z_values, zs, csv_mode)
                        if z_opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                            pc.extra_generation_params["Fixed Z Values"] = ", ".join(str(v) for v in zs)
                    grid_infotext[0] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds,
                                                                  pc.all_subseeds)
            return res

        first, second = _loop_order(x_opt, y_opt, z_opt)
        try:
            processed = draw_xyz_grid(
                p, xs, ys, zs, x_labels=[x_opt.format_value(p, x_opt, x) for x in xs],
                y_labels=[y_opt.format_value(p, y_opt, y) for y in ys],
                z_labels=[z_opt.format_value(p, z_opt, z) for z in zs], cell=cell, draw_legend=draw_legend,
                include_lone_images=include_lone_images, include_sub_grids=include_sub_grids,
                first_axes_processed=first, second_axes_processed=second, margin_size=margin_size)
        finally:
            models.restore()
        if not processed.images:
            return processed
        z_count = len(zs)
        for i in range(1 + z_count):
            if grid_infotext[i] is not None:
                processed.infotexts[i] = grid_infotext[i]
        if _opt("grid_save", True):
            for g in range(1 + z_count if z_count > 1 else 1):
                images.save_image(processed.images[g], p.outpath_grids, "xyz_grid", info=processed.infotexts[g],
                                  extension=_opt("grid_format", "png"), prompt=processed.all_prompts[0],
                                  seed=processed.all_seeds[0], grid=True, p=processed)
                if not include_sub_grids:
                    break
        if not include_sub_grids:   # the sub-grids go (with one Z value the Z grid is the only one)
            del processed.images[1:1 + z_count]
            del processed.infotexts[1:1 + z_count]
            processed.index_of_first_image = 1
        if not include_lone_images:
            first_cell = processed.index_of_first_image
            del processed.images[first_cell:]
            del processed.infotexts[first_cell:]
        return processed


def _values_text(opt: AxisOption, text, values, csv_mode) -> str:
    """What the infotext's "X Values" holds: the text as typed, or the chosen dropdown values as CSV."""
    if opt.choices is not None and not csv_mode:
        return xyz_values.join_csv([str(v) for v in values])
    return text or ""


def _opt(key: str, default: Any) -> Any:
    if not shared.bound():
        return default
    return shared.opts.data.get(key, default)
