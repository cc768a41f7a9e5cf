"""X/Y/Z plot (scripts/xyz_grid.py) on a real runtime with tiny checkpoints: the value syntax, grid sizes and label
bands, per-cell infotexts for each kind of axis, checkpoint and VAE switched per cell and restored, bad values
refused before any cell runs, interrupt between cells, and the grid saved with its infotext."""
from __future__ import annotations

import sys

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, extensions, images, scripts, shared, xyz_values
from modules.engine.hooks import Hooks
from modules.engine.params import GenerationParams, ParamError
from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
from modules.runtime import Runtime
from tests.support.model_factory import make_tiny_components, write_tiny_checkpoint


# --- the value syntax ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, expected", [
    ("1-5", int, [1, 2, 3, 4, 5]),
    ("1-10 (+3)", int, [1, 4, 7, 10]),
    ("10-1 (-3)", int, [10, 7, 4, 1]),
    ("1-10 [4]", int, [1, 4, 7, 10]),
    ("1-10 [5]", int, [1, 3, 5, 7, 10]),
    ("1, 2, 3-4", int, [1, 2, 3, 4]),
    (" -1 , 5", int, [-1, 5]),
    ("0.5-1.0 [3]", float, [0.5, 0.75, 1.0]),
    ("0.5-1 (+0.25)", float, [0.5, 0.75, 1.0]),
    ("1-2 (+0.3)", float, [1.0, 1.3, 1.6, 1.9]),
    ("7, 7.5, 8", float, [7.0, 7.5, 8.0]),
    ('a, "b, c", d', str, ["a", "b, c", "d"]),
    ("", str, []),
])
def test_range_syntax_table(text, kind, expected):
    items = xyz_values.split_csv(text)
    if kind is int:
        items = [int(v) for v in xyz_values.expand_ints(items)]
    elif kind is float:
        items = [float(v) for v in xyz_values.expand_floats(items)]
    assert items == expected


def test_annotation_bands_have_a1111_sizes_and_text_pixels():
    w, h = 200, 150
    cells = [Image.new("RGB", (w, h), (0, 90, 0)) for _ in range(6)]
    grid = images.image_grid(cells, rows=2)
    assert grid.size == (3 * w, 2 * h)
    hor = [[images.GridAnnotation(f"Steps: {i}")] for i in range(3)]
    ver = [[images.GridAnnotation("CFG Scale: 7")], [images.GridAnnotation("CFG Scale: 9")]]
    out = images.draw_grid_annotations(grid, w, h, hor, ver, margin=4)
    fontsize = (w + h) // 25
    pad_left = w * 3 // 4
    pad_top = out.height - 2 * h - 4
    assert out.width == 3 * w + pad_left + 2 * 4
    assert fontsize < pad_top < 4 * fontsize          # one line of text and a font size of spacing
    band = np.asarray(out.crop((pad_left, 0, out.width, pad_top)).convert("L"))
    assert (band < 128).sum() > 50                     # dark text pixels in the top band
    left = np.asarray(out.crop((0, pad_top, pad_left, out.height)).convert("L"))
    assert (left < 128).sum() > 50
    assert np.asarray(out.crop((pad_left + w, pad_top, pad_left + w + 4, pad_top + h)))[..., 1].max() == 255
    # no text: no band
    bare = images.draw_grid_annotations(grid, w, h, [[images.GridAnnotation()] for _ in range(3)],
                                        [[images.GridAnnotation()] for _ in range(2)])
    assert bare.size == grid.size
    # a prompt matrix: the left-out part struck through in the inactive colour
    matrix = images.draw_prompt_matrix(images.image_grid(cells[:4], rows=2), w, h, ["cat", "red", "hat"])
    assert matrix.size[0] == 2 * w + pad_left
    assert (np.asarray(matrix.convert("RGB")) == (153, 153, 153)).all(axis=-1).sum() > 20


# --- on a runtime ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    root = tmp_path_factory.mktemp("xyz")
    ckdir, vaedir = root / "models" / "Stable-diffusion", root / "models" / "VAE"
    ckdir.mkdir(parents=True)
    vaedir.mkdir(parents=True)
    own = write_tiny_checkpoint(ckdir / "alpha.safetensors", "sd1", seed=1)
    write_tiny_checkpoint(ckdir / "beta.safetensors", "sd1", seed=2)
    other = make_tiny_components("sd1", seed=9)["vae"]
    vae_sd = {k.removeprefix("first_stage_model."): v for k, v in
              to_ldm_state_dict(own["unet"], other, own["text_encoder"], arch="sd1").items()
              if k.startswith("first_stage_model.")}
    save_checkpoint(vae_sd, vaedir / "other.safetensors")
    (root / "styles.csv").write_text("name,prompt,negative_prompt\nNeon,neon {prompt},\nDark,,bright\n")
    args = cmd_args.parse(["--data-dir", str(root), "--no-half", "--no-demo-model",
                           "--ckpt", str(ckdir / "alpha.safetensors")], env={})
    runtime = Runtime(args)
    shared.bind(runtime)
    runtime.load_startup_model()
    extensions.list_extensions(root / "extensions", root / "no-builtins")
    scripts.load_scripts()
    for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
        runner.initialize_scripts(is_img2img)
        with gr.Blocks():
            runner.setup_ui()
    runtime.root = root
    return runtime


def module():
    return sys.modules["xyz_grid.py"]


def xyz_args(x_type, x_values, y_type="Nothing", y_values="", z_type="Nothing", z_values="", **flags):
    """A1111's script_args order; types by label (our addition) are turned into the tab's index here."""
    labels = [o.label for o in module().axes_for(False)]
    order = dict(draw_legend=True, include_lone_images=True, include_sub_grids=False, no_fixed_seeds=False,
                 vary_seeds_x=False, vary_seeds_y=False, vary_seeds_z=False, margin_size=0, csv_mode=True)
    order.update(flags)
    values = [labels.index(x_type), x_values, [], labels.index(y_type), y_values, [], labels.index(z_type),
              z_values, [], *order.values()]
    return scripts.api_script_args(scripts.scripts_txt2img, "X/Y/Z plot", values, None)


def params(**kw):
    base = dict(prompt="a red circle", steps=2, width=32, height=32, seed=11, sampler_name="Euler")
    base.update(kw)
    return GenerationParams(**base)


def info(text: str) -> dict:
    from modules.engine.infotext import parse
    return {k: str(v) for k, v in parse(text).items()}


def test_steps_by_cfg_grid_cells_and_infotexts(rt):
    result = rt.generate(params(), script_args=xyz_args("Steps", "1-3", "CFG Scale", "5, 9"))
    grid, cells = result.images[0], result.images[1:]
    assert len(cells) == 6 and all(c.size == (32, 32) for c in cells)
    fontsize = (32 + 32) // 25
    assert grid.width == 3 * 32 + 32 * 3 // 4 and grid.height > 2 * 32 + fontsize   # label bands on top and left
    steps = [int(info(t)["Steps"]) for t in result.infotexts[1:]]
    cfgs = [float(info(t)["CFG scale"]) for t in result.infotexts[1:]]
    assert steps == [1, 2, 3, 1, 2, 3] and cfgs == [5, 5, 5, 9, 9, 9]
    grid_info = info(result.infotexts[0])
    assert grid_info["Script"] == "X/Y/Z plot" and grid_info["X Type"] == "Steps"
    assert grid_info["X Values"] == "1-3" and grid_info["Y Type"] == "CFG Scale"
    assert result.index_of_first_image == 1
    saved = list((rt.root / "outputs" / "txt2img-grids").rglob("xyz_grid-*.png"))
    assert saved, "the grid is saved to outputs/txt2img-grids"
    with Image.open(saved[-1]) as im:
        assert "X Type: Steps" in im.info["parameters"] and im.size == grid.size


@pytest.mark.parametrize("axis, values, key, expected", [
    ("Seed", "3, 4", "Seed", ["3", "4"]),
    ("Var. seed", "5, 6", "Variation seed", ["5", "6"]),
    ("Sampler", "Euler, DDIM", "Sampler", ["Euler", "DDIM"]),
    ("Schedule type", "Karras, Uniform", "Schedule type", ["Karras", "Uniform"]),
    ("Prompt S/R", "red, blue", None, ["a red circle", "a blue circle"]),
    ("Prompt order", "red, circle", None, ["a red circle", "a circle red"]),
    ("Clip skip", "1, 2", "Clip skip", [None, "2"]),
    ("Size", "32x32, 48x32", "Size", ["32x32", "48x32"]),
    ("Styles", "Neon, Dark", None, ["neon a red circle", "a red circle"]),
    ("Eta", "0.5, 1", None, None),
    ("RNG source", "CPU, GPU", "RNG", [None, "GPU"]),
])
def test_each_axis_kind_reaches_the_cells(rt, axis, values, key, expected):
    extra = {"subseed_strength": 0.3} if axis == "Var. seed" else {}
    result = rt.generate(params(**extra), script_args=xyz_args(axis, values))
    texts = result.infotexts[1:]
    assert len(texts) == len(xyz_values.split_csv(values))
    if expected is None:
        return
    if key is None:
        assert [t.split("\n")[0] for t in texts] == expected
    else:
        assert [info(t).get(key) for t in texts] == expected


def test_vary_seeds_and_keep_minus_one(rt):
    result = rt.generate(params(seed=100), script_args=xyz_args("Steps", "1, 2", vary_seeds_x=True))
    assert [info(t)["Seed"] for t in result.infotexts[1:]] == ["100", "101"]
    result = rt.generate(params(seed=-1), script_args=xyz_args("Seed", "-1, -1", no_fixed_seeds=True))
    seeds = [info(t)["Seed"] for t in result.infotexts[1:]]
    assert len(set(seeds)) == 2
    result = rt.generate(params(seed=-1), script_args=xyz_args("Seed", "-1, 7"))
    assert "Fixed X Values" in info(result.infotexts[0])


def test_z_axis_makes_one_grid_per_value_side_by_side(rt):
    result = rt.generate(params(), script_args=xyz_args("Steps", "1, 2", "CFG Scale", "5, 7", "Seed", "1, 2",
                                                       include_sub_grids=True, margin_size=4))
    z_grid, sub1, sub2 = result.images[:3]
    assert sub1.size == sub2.size and z_grid.width >= 2 * sub1.width
    assert sub1.width == 2 * 32 + 4 + 32 * 3 // 4          # two cells, one margin, the row labels
    assert len(result.images) == 3 + 8 and result.index_of_first_image == 3
    assert info(result.infotexts[0])["Z Type"] == "Seed"
    assert [info(t)["Seed"] for t in result.infotexts[3:]] == ["1"] * 4 + ["2"] * 4


def test_without_lone_images_only_the_grid_comes_back(rt):
    result = rt.generate(params(), script_args=xyz_args("Steps", "1, 2", include_lone_images=False))
    assert len(result.images) == 1 and result.images[0].width == 2 * 32


def test_checkpoint_and_vae_switch_per_cell_and_are_restored(rt):
    before = rt.models.model.info.filename
    result = rt.generate(params(), script_args=xyz_args("Checkpoint name", "beta, alpha", "VAE",
                                                       "None, other.safetensors"))
    models = [info(t)["Model"] for t in result.infotexts[1:]]
    vaes = [info(t).get("VAE") for t in result.infotexts[1:]]
    assert models == ["beta", "alpha", "beta", "alpha"] and vaes == [None, None, "other", "other"]
    cells = [np.asarray(im, dtype=np.int16) for im in result.images[1:]]
    assert np.abs(cells[0] - cells[1]).max() > 0 and np.abs(cells[0] - cells[2]).max() > 0
    assert rt.models.model.info.filename == before and rt.models.model.vae_file is None
    assert "alpha" in rt.options.sd_model_checkpoint


def test_restored_after_a_failing_cell(rt):
    before = rt.models.model.info.filename
    with pytest.raises(ParamError, match="width"):   # 33 is no multiple of the VAE factor: the second cell fails
        rt.generate(params(), script_args=xyz_args("Checkpoint name", "beta", "Size", "32x32, 33x32"))
    assert rt.models.model.info.filename == before


@pytest.mark.parametrize("axis, values, message", [
    ("Sampler", "Euler, Nope", "Sampler: unknown sampler 'Nope'; allowed: .*Euler"),
    ("Checkpoint name", "missing", "Checkpoint name: unknown checkpoint 'missing'; available: .*alpha"),
    ("VAE", "nothing.pt", "VAE: unknown VAE 'nothing.pt'; allowed: .*Automatic"),
    ("Steps", "1, x", "Steps: .*range such as 1-5"),
    ("Styles", "Neon, Gone", "Styles: unknown value.*Gone"),
    ("Prompt S/R", "green, blue", "Prompt S/R: did not find 'green'"),
    ("Size", "big", "Size: 'big' is not a size"),
    ("Hires upscaler", "Magic", "Hires upscaler: unknown value.*Latent"),
])
def test_bad_values_are_refused_before_any_cell_runs(rt, axis, values, message):
    ran = []
    rt.hooks.add("before_process", lambda p: ran.append(p))
    try:
        with pytest.raises(ParamError, match=message):
            rt.generate(params(), script_args=xyz_args(axis, values))
    finally:
        rt.hooks.remove("before_process", rt.hooks.get("before_process")[-1])
    assert ran == []


def test_interrupt_stops_between_cells_and_returns_what_is_done(rt):
    seen = []

    def after_step(args):
        seen.append(args.step.index)
        if len(seen) == 3:   # the second cell's first step (2 steps a cell)
            args.p.state.interrupt()
    rt.hooks.add("after_step", after_step)
    try:
        result = rt.generate(params(), script_args=xyz_args("Seed", "1, 2, 3, 4"))
    finally:
        rt.hooks.remove("after_step", after_step)
    cells = result.images[1:]
    assert len(cells) == 4 and result.images[0].width >= 4 * 32
    blank = [not np.asarray(c).any() for c in cells]
    assert blank == [False, False, True, True]    # the interrupted cell keeps its partial image, later ones are blank
    assert len(seen) == 3


def test_progress_covers_every_cell(rt):
    counts = []
    rt.hooks.add("before_process", lambda p: counts.append((p.state.job_count, p.state.job_no)))
    try:
        rt.generate(params(n_iter=2), script_args=xyz_args("Steps", "1, 2", "CFG Scale", "5, 6"))
    finally:
        rt.hooks.remove("before_process", rt.hooks.get("before_process")[-1])
    assert [c for c, _ in counts] == [8] * 4 and [n for _, n in counts] == [0, 2, 4, 6]


def test_an_axis_an_extension_registers(rt):
    """As sd-webui-controlnet and sd-dynamic-prompts do: find the module by `__module__ == "xyz_grid.py"` in
    scripts.scripts_data and append an AxisOption to `axis_options`; the plot offers it and applies it per cell."""
    xyz = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")

    def apply(p, x, xs):
        p.extra_generation_params["Ext strength"] = x

    def rebuild():   # extensions register at load time, before the UI is built (or Reload UI builds it again)
        scripts.scripts_txt2img.initialize_scripts(False)
        with gr.Blocks():
            scripts.scripts_txt2img.setup_ui()

    option = xyz.AxisOption("[Ext] Strength", float, apply)
    xyz.axis_options.append(option)
    rebuild()
    try:
        assert "[Ext] Strength" in [o.label for o in xyz.axes_for(False)]
        result = rt.generate(params(), script_args=xyz_args("[Ext] Strength", "0.25, 0.75"))
        assert [info(t).get("Ext strength") for t in result.infotexts[1:]] == ["0.25", "0.75"]
        assert info(result.infotexts[0])["X Type"] == "[Ext] Strength"
    finally:
        xyz.axis_options.remove(option)
        rebuild()
