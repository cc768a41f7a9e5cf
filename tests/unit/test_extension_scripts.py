"""Extension scripts loaded A1111's way from sample extensions (tests/support/sample_extensions, our own code): every
Script method and the engine-fed callbacks fire at A1111's points with A1111's arguments; an always-on script edits
prompts, seeds and the infotext; a selectable script re-enters process_images per tile; broken scripts are isolated."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from modules import extensions, processing, script_callbacks, scripts
from modules.engine.params import GenerationParams
from tests.support.engine_helpers import load_tiny

SAMPLES = Path(__file__).resolve().parent.parent / "support" / "sample_extensions"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("exts")
    for name in ("sample-recorder", "sample-broken"):
        shutil.copytree(SAMPLES / name, root / "extensions" / name)
    extensions.list_extensions(root / "extensions", root / "no-builtins")
    from modules import gradio_compat
    gradio_compat.install()
    gradio_compat.add_component_listener(before=scripts.component_before, after=scripts.component_after)
    scripts.load_scripts()
    for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
        runner.initialize_scripts(is_img2img)
        with gr.Blocks(), scripts_current(runner):
            gr.Textbox(label="Prompt", elem_id=f"{'img2img' if is_img2img else 'txt2img'}_prompt")
            gr.Slider(label="Width", elem_id=f"{'img2img' if is_img2img else 'txt2img'}_width")
            runner.setup_ui()
    yield sys.modules["recorder.py"]
    gradio_compat.remove_component_listener(before=scripts.component_before, after=scripts.component_after)
    extensions.list_extensions(root / "none", root / "none")
    scripts.load_scripts()
    for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
        runner.initialize_scripts(is_img2img)


class scripts_current:
    def __init__(self, runner):
        self.runner = runner

    def __enter__(self):
        scripts.scripts_current = self.runner

    def __exit__(self, *exc):
        scripts.scripts_current = None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("model"))


def _args(runner, title, values):
    args = runner.default_args()
    script = runner.find_by_title(title)
    for i, v in enumerate(values):
        args[script.args_from + i] = v
    return args


def _run(model, runner, args, opts=None, **fields):
    base = {"prompt": "a red circle", "steps": 3, "width": 32, "height": 32, "seed": 5, "sampler_name": "Euler"}

    def setup(p):
        p.scripts = runner
        p.script_args = args
    return processing.process(model, GenerationParams(**{**base, **fields}), opts=opts, setup=setup)


def extension_titles(found) -> list[str]:
    root = str(scripts.SCRIPT_DIR / "scripts")
    return [s.title() for s in found if not s.filename.startswith(root)]


def names(events):
    return [name for name, _ in events]


def test_loading_registers_scripts_callbacks_and_reports_the_broken_file(loaded):
    titles = [d.script_class.__name__ for d in scripts.scripts_data]
    assert {"Recorder", "Tiler", "BrokenHook", "BrokenUi"} <= set(titles)
    assert any("broken_import.py" in path for path, _ in scripts.load_errors)
    broken = next(e for e in extensions.extensions if e.name == "sample-broken")
    assert "fails on purpose at import" in broken.errors["import"]
    assert loaded.Recorder.__module__ == "recorder.py"
    for category in script_callbacks.CATEGORIES:
        assert script_callbacks.callback_map[f"callbacks_{category}"], category
    cfg = [c.name for c in script_callbacks.callback_map["callbacks_cfg_denoiser"]]
    # load order: extensions sorted by folder name; names are <extension>/<file>/<category>[/<name>]
    assert cfg == ["sample-broken/broken_hook.py/cfg_denoiser", "sample-recorder/recorder.py/cfg_denoiser/recorder"]


def test_runners_sort_scripts_and_build_the_argument_vector(loaded):
    t2i, i2i = scripts.scripts_txt2img, scripts.scripts_img2img
    assert [s.title() for s in t2i.alwayson_scripts] == ["Broken hook", "Broken ui", "Recorder"]
    # the extensions' selectable scripts come after the program's own (root scripts/: Prompt matrix, X/Y/Z plot, …)
    assert extension_titles(t2i.selectable_scripts) == []
    assert extension_titles(i2i.selectable_scripts) == ["Sample tiler"]
    rec = t2i.find_by_title("recorder")
    assert rec.args_to - rec.args_from == 3 and rec.name == "recorder"
    assert t2i.default_args()[rec.args_from:rec.args_to] == [False, ", recorded", 0]
    assert rec.api_info.args[1].label == "Prompt suffix"
    # the broken script has no ui(): no arguments, no name, still runs (A1111)
    broken = t2i.find_by_title("broken hook")
    assert broken.args_from == broken.args_to and broken.name is None
    assert rec.elem_id("enabled") == "script_txt2img_recorder_enabled"
    # component hooks saw the tab's components while its runner was current
    seen = [d["elem_id"] for n, d in loaded.EVENTS if n in ("before_component", "after_component")]
    assert "txt2img_prompt" in seen and "img2img_width" in seen


def test_every_method_fires_in_a1111_order_and_the_script_edits_the_run(loaded, model):
    loaded.EVENTS.clear()
    runner = scripts.scripts_txt2img
    args = _args(runner, "Recorder", [True, ", with a square", 100])
    result = _run(model, runner, args, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5)
    order = [n for n in names(loaded.EVENTS) if not n.startswith("callback:")]
    expected = ["setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
                "process_batch", "process_before_every_sampling", "before_hr", "process_before_every_sampling",
                "post_sample", "postprocess_batch", "postprocess_batch_list", "postprocess_image", "postprocess"]
    assert [n for n in order if n in expected] == expected
    details = dict(loaded.EVENTS)
    assert details["setup"] == {"enabled": True, "is_api": False}
    assert details["process"]["all_prompts"] == ["a red circle"]
    assert details["before_process_batch"]["keys"] == ["batch_number", "prompts", "seeds", "subseeds"]
    assert details["before_process_batch"]["prompts"] == ["a red circle, with a square"]
    assert details["after_extra_networks_activate"]["keys"] == ["batch_number", "extra_network_data", "prompts",
                                                                 "seeds", "subseeds"]
    assert details["process_batch"]["seeds"] == [105]
    assert details["process_before_every_sampling"]["keys"] == ["c", "noise", "uc", "x"]
    assert details["postprocess_batch"]["keys"] == ["batch_number", "images"]
    assert details["postprocess_batch"]["shape"] == (1, 3, 48, 48)
    # the edits reach the result: prompt, seed, infotext, pixels
    assert result.all_prompts == ["a red circle, with a square"] and result.seed == 105
    assert "Recorder suffix: with a square" in result.infotexts[0]
    assert "Seed: 105" in result.infotexts[0]
    assert result.images[0].getpixel((0, 0)) == (255, 0, 255)
    assert details["postprocess"]["infotext"] == result.infotexts[0]
    # the CFG callbacks ran at every model call; the broken callback did not stop them
    calls = names(loaded.EVENTS)
    assert calls.count("callback:cfg_denoiser") >= 3 and calls.count("callback:cfg_after_cfg") >= 3
    assert "callback:cfg_denoised" in calls


def test_a_disabled_script_leaves_the_run_alone(loaded, model):
    runner = scripts.scripts_txt2img
    plain = _run(model, runner, runner.default_args())
    assert plain.all_prompts == ["a red circle"] and plain.seed == 5
    assert "Recorder" not in plain.infotexts[0]


def test_a_raising_hook_is_reported_and_the_job_goes_on(loaded, model):
    runner = scripts.scripts_txt2img
    result = _run(model, runner, runner.default_args())
    assert len(result.images) == 1
    broken = next(e for e in extensions.extensions if e.name == "sample-broken")
    assert "process hook fails on purpose" in broken.errors["script"]
    assert "cfg callback fails on purpose" in broken.errors["callback"]


def test_img2img_mask_hooks_and_extra_noise(loaded, model):
    loaded.EVENTS.clear()
    runner = scripts.scripts_img2img
    init = Image.new("RGB", (32, 32), (10, 200, 30))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    opts = processing.RunOptions(extra_noise=0.1)
    result = _run(model, runner, runner.default_args(), opts=opts, init_images=[init], mask=mask,
                  denoising_strength=0.6)
    calls = names(loaded.EVENTS)
    blends = [d["final"] for n, d in loaded.EVENTS if n == "on_mask_blend"]
    assert blends and blends[-1] is True and not any(blends[:-1])
    assert "postprocess_maskoverlay" in calls and "postprocess_image_after_composite" in calls
    assert "callback:extra_noise" in calls
    assert result.infotexts[0].count("Extra noise: 0.1") == 1


def test_a_selectable_script_reenters_process_images_per_tile(loaded, model):
    tiler = sys.modules["tiler.py"]
    tiler.CALLS.clear()
    runner = scripts.scripts_img2img
    args = runner.default_args()
    script = runner.find_by_title("Sample tiler")
    args[0] = runner.selectable_scripts.index(script) + 1
    args[script.args_from] = 2
    from modules.engine.hooks import Hooks
    ctx = processing.RunContext(model, None, processing.RunOptions(), Hooks())
    params = GenerationParams(prompt="tiles", steps=2, width=64, height=32, seed=7, sampler_name="Euler",
                              init_images=[Image.new("RGB", (64, 32), (200, 10, 10))], denoising_strength=0.5)
    params.mode = "img2img"
    with processing.current_run(ctx):
        p = processing.from_params(params)
        p.scripts, p.script_args = runner, args
        result = runner.run(p, *args)
    assert [c["size"] for c in tiler.CALLS] == [(32, 32), (32, 32)]
    assert tiler.CALLS[0]["seed"] == tiler.CALLS[1]["seed"] == 7
    assert result.images[0].size == (64, 32)


def test_api_arguments_by_position_by_label_and_errors(loaded):
    from modules.engine.params import ParamError
    runner = scripts.scripts_txt2img
    rec = runner.find_by_title("Recorder")
    args = scripts.api_script_args(runner, None, None, {"Recorder": {"args": [True]}})
    assert args[rec.args_from:rec.args_to] == [True, ", recorded", 0]
    args = scripts.api_script_args(runner, None, None, {"recorder": {"args": {"Prompt suffix": "!", "Seed offset": 3}}})
    assert args[rec.args_from:rec.args_to] == [False, "!", 3]
    with pytest.raises(ParamError, match="always on script 'Nope' not found"):
        scripts.api_script_args(runner, None, None, {"Nope": {"args": []}})
    with pytest.raises(ParamError, match="unknown argument"):
        scripts.api_script_args(runner, None, None, {"Recorder": {"args": {"Bogus": 1}}})
    with pytest.raises(ParamError, match="Script 'Nope' not found"):
        scripts.api_script_args(runner, "Nope", [], None)
    i2i = scripts.scripts_img2img
    args = scripts.api_script_args(i2i, "sample tiler", [3], None)
    tiler = i2i.find_by_title("Sample tiler")
    assert args[0] == i2i.selectable_scripts.index(tiler) + 1 and args[tiler.args_from] == 3
