"""A1111's built-in selectable scripts (scripts/: Prompt matrix, Prompts from file or textbox, SD upscale,
Outpainting mk2, Poor man's outpainting, Loopback) run as the Script dropdown and the API run them: a real runtime
with a tiny model, the root scripts loaded into both runners whose controls were built in a gr.Blocks, the argument
vector made by scripts.api_script_args in A1111's order, and the job run on the runtime's queue."""
from __future__ import annotations

import threading

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import a1111_defaults, cmd_args, extensions, scripts, shared
from modules.engine.params import GenerationParams, ParamError
from modules.runtime import Runtime

TXT = {"prompt": "a red circle", "steps": 2, "width": 32, "height": 32, "seed": 5, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def rt(tmp_path_factory, tiny_sd1, tiny_sd1_b):
    data = tmp_path_factory.mktemp("builtin-scripts")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    for ckpt in (tiny_sd1, tiny_sd1_b):
        (data / "models" / "Stable-diffusion" / ckpt.name).write_bytes(ckpt.read_bytes())
    runtime = Runtime(cmd_args.parse(["--data-dir", str(data), "--no-half", "--ckpt",
                                      str(data / "models" / "Stable-diffusion" / tiny_sd1.name)], env={}))
    runtime.load_startup_model()
    saved = {name: getattr(shared, name) for name in ("_runtime", "_model_view", "_upscalers")}
    a1111_defaults.register(runtime.options)   # grid_save, grid_format, … as at start-up
    shared.bind(runtime)
    extensions.list_extensions(data / "no-extensions", data / "no-builtins")
    scripts.load_scripts()
    for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
        runner.initialize_scripts(is_img2img)
        with gr.Blocks():
            runner.setup_ui()
    yield runtime
    for name, value in saved.items():
        setattr(shared, name, value)


def generate(rt, script: str | None, args: list, **fields):
    params = GenerationParams(**{**TXT, **fields})
    runner = scripts.runner_for(bool(params.init_images))
    vector = scripts.api_script_args(runner, script, args, {})
    return rt.generate(params, script_args=vector, is_api=True)


def demo_image(w: int = 64, h: int = 64) -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8))


def test_scripts_in_their_dropdowns(rt):
    txt = [s.title() for s in scripts.scripts_txt2img.selectable_scripts]
    img = [s.title() for s in scripts.scripts_img2img.selectable_scripts]
    for title in ("Prompt matrix", "Prompts from file or textbox"):
        assert title in txt and title in img
    for title in ("SD upscale", "Outpainting mk2", "Poor man's outpainting", "Loopback"):
        assert title in img and title not in txt


# --- Prompt matrix -------------------------------------------------------------------------------------------
def test_prompt_matrix_grid_prompts_and_seeds(rt):
    res = generate(rt, "Prompt matrix", [False, False, "positive", "comma", 0], prompt="a cat|red|blue")
    assert res.all_prompts == ["a cat", "a cat, red", "a cat, blue", "a cat, red, blue"]
    assert len(res.images) == 5 and res.index_of_first_image == 1
    grid = res.images[0]
    assert grid.width > 2 * 32 and grid.height > 2 * 32          # 2×2 cells plus the label bands
    assert res.all_seeds == [5, 5, 5, 5]                          # the same seed for every picture
    assert [t.split("\n")[0] for t in res.infotexts] == ["a cat", "a cat", "a cat, red", "a cat, blue",
                                                         "a cat, red, blue"]
    # the grid is saved to the grids folder with the infotext (grid_save is on)
    saved = list((rt.paths.data / "outputs" / "txt2img-grids").rglob("*prompt_matrix*.png"))
    assert saved and Image.open(saved[-1]).info["parameters"].startswith("a cat")


def test_prompt_matrix_options(rt):
    res = generate(rt, "Prompt matrix", [True, True, "negative", "space", 10], prompt="ok",
                   negative_prompt="blurry|dark|noisy|grainy", batch_size=2)
    assert res.all_negative_prompts[:3] == ["blurry", "dark blurry", "noisy blurry"]
    assert len(res.all_negative_prompts) == 8 and res.all_seeds == list(range(5, 13))
    assert all(t.startswith("ok\nNegative prompt: ") for t in res.infotexts)
    assert len(res.images) == 9
    with pytest.raises(ParamError, match="prompt type must be one of"):
        generate(rt, "Prompt matrix", [False, False, "sideways", "comma", 0], prompt="a|b")


# --- Prompts from file or textbox ----------------------------------------------------------------------------
def test_prompts_from_file_lines_and_options(rt, tiny_sd1_b):
    text = ("a plain line\n\n"
            '--prompt "a blue square" --negative_prompt dull grey --steps 3 --seed 42 --cfg_scale 4.5 '
            '--sampler_name "Euler a" --width 40 --height 24\n'
            f"--prompt other --sd_model {tiny_sd1_b.stem} --batch_size 2\n")
    res = generate(rt, "Prompts from file or textbox", [False, False, "start", text], prompt="")
    assert res.all_prompts == ["a plain line", "a blue square", "other", "other"]
    assert [im.size for im in res.images] == [(32, 32), (40, 24), (32, 32), (32, 32)]
    second = res.infotexts[1]
    assert second.startswith("a blue square\nNegative prompt: dull grey\n")
    for part in ("Steps: 3", "Sampler: Euler a", "CFG scale: 4.5", "Seed: 42", "Size: 40x24"):
        assert part in second
    assert f"Model: {tiny_sd1_b.stem}" in res.infotexts[2] and f"Model: {tiny_sd1_b.stem}" not in second
    assert res.all_seeds[2:] == [5, 6]
    assert rt.models.model.info.stem != tiny_sd1_b.stem              # the job's checkpoint is back afterwards


def test_prompts_from_file_seed_options_and_position(rt):
    lines = "one\ntwo\nthree"
    iterated = generate(rt, "Prompts from file or textbox", [True, False, "end", lines], prompt="base")
    assert iterated.all_prompts == ["base one", "base two", "base three"]
    assert iterated.all_seeds == [5, 6, 7]
    same = generate(rt, "Prompts from file or textbox", [False, True, "start", lines], prompt="base", seed=-1)
    assert same.all_prompts == ["one base", "two base", "three base"]
    assert len(set(same.all_seeds)) == 1 and same.all_seeds[0] != -1


@pytest.mark.parametrize("line, message", [
    ("--prompt x --stepz 3", "line 1: unknown option --stepz"),
    ("--prompt x --steps many", "line 1: option --steps 'many': expected an integer"),
    ("--prompt x --sampler_name Nope", "option --sampler_name 'Nope': unknown sampler"),
    ("--prompt x --tiling maybe", "option --tiling 'maybe': expected true or false"),
    ("--prompt x --steps 0", "option --steps 0: must be between 1 and"),
    ("--prompt x --seed", "option --seed has no value"),
])
def test_prompts_from_file_bad_option_is_named(rt, line, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(")) as err:
        generate(rt, "Prompts from file or textbox", [False, False, "start", line])
    assert err.value.field == "script_args"


# --- SD upscale ------------------------------------------------------------------------------------------------
def test_sd_upscale_doubles_through_tiles(rt):
    init = demo_image(64, 64)
    res = generate(rt, "SD upscale", [None, 16, "Lanczos", 2.0], init_images=[init], denoising_strength=0.3,
                   width=32, height=32, prompt="tiles")
    assert [im.size for im in res.images] == [(128, 128)]
    text = res.infotexts[0]
    assert "SD upscale overlap: 16" in text and "SD upscale upscaler: Lanczos" in text
    # by index (A1111's Radio is type="index") and two upscales with n_iter
    by_index = generate(rt, "SD upscale", ["", 0, 2, 1.5], init_images=[init], denoising_strength=0.0,
                        width=32, height=32, n_iter=2)
    assert [im.size for im in by_index.images] == [(96, 96), (96, 96)]
    # strength 0 leaves every tile as it was: the Nearest-upscaled image comes back
    expected = init.resize((96, 96), Image.Resampling.NEAREST)
    assert np.abs(np.asarray(by_index.images[0], int) - np.asarray(expected, int)).max() <= 1


def test_sd_upscale_bad_arguments(rt):
    init = demo_image(64, 64)
    with pytest.raises(ParamError, match="unknown upscaler 'Magic'"):
        generate(rt, "SD upscale", [None, 16, "Magic", 2.0], init_images=[init], width=32, height=32)
    with pytest.raises(ParamError, match="tile overlap 32 must be"):
        generate(rt, "SD upscale", [None, 32, "Lanczos", 2.0], init_images=[init], width=32, height=32)


# --- Outpainting mk2 and Poor man's outpainting --------------------------------------------------------------------
def test_outpainting_mk2_grows_each_chosen_side(rt):
    init = demo_image(64, 64)
    res = generate(rt, "Outpainting mk2", [None, 32, 4, ["left", "right"], 1.0, 0.05], init_images=[init],
                   denoising_strength=0.8, width=64, height=64)
    assert [im.size for im in res.images] == [(128, 64)]               # 64 + 2×32, a multiple of 64
    out = np.asarray(res.images[0], int)
    # the middle is the original (inpainting fill "original", mask blur kept away from it)
    assert np.abs(out[:, 48:80] - np.asarray(init, int)[:, 16:48]).mean() < 12
    assert out[:, :16].std() > 0 and out[:, -16:].std() > 0          # the new borders hold something
    down = generate(rt, "Outpainting mk2", ["", 64, 0, "down", 1.0, 0.5], init_images=[init],
                    denoising_strength=0.5, width=64, height=64, n_iter=2)
    assert [im.size for im in down.images] == [(128, 128), (64, 128), (64, 128)]   # the grid of both, then each
    with pytest.raises(ParamError, match="direction"):
        generate(rt, "Outpainting mk2", [None, 32, 4, ["north"], 1.0, 0.05], init_images=[init])


def test_matched_noise_follows_the_kept_colours():
    from modules.outpainting import matched_noise
    image = np.zeros((64, 64, 3))
    image[:, :32] = np.asarray(demo_image(32, 64), float) / 255 * [1, 0.2, 0.2]   # reddish kept half
    mask = np.zeros((64, 64, 3))
    mask[:, 32:] = 1
    out = matched_noise(image, mask, 1.0, 0.05)
    assert np.array_equal(out[:, :32], image[:, :32])
    new = out[:, 32:]
    assert new.std() > 0.01 and new[..., 0].mean() > new[..., 1].mean() + 0.1   # red dominates there too
    assert np.array_equal(out, matched_noise(image, mask, 1.0, 0.05))           # deterministic


def test_poor_mans_outpainting_inpaints_the_border_tiles(rt):
    init = demo_image(64, 64)
    res = generate(rt, "Poor man's outpainting", [32, 4, "original", ["left", "right", "up", "down"]],
                   init_images=[init], denoising_strength=0.6, width=64, height=64)
    assert [im.size for im in res.images] == [(128, 128)]
    out = np.asarray(res.images[0], int)
    assert np.abs(out[40:88, 40:88] - np.asarray(init, int)[8:56, 8:56]).mean() < 12   # the kept centre
    with pytest.raises(ParamError, match="masked content must be one of"):
        generate(rt, "Poor man's outpainting", [32, 4, 7, ["left"]], init_images=[init], width=64, height=64)
    with pytest.raises(ParamError, match="must be smaller than the tile size"):
        generate(rt, "Poor man's outpainting", [64, 4, 1, ["left"]], init_images=[init], width=64, height=64)


# --- Loopback ------------------------------------------------------------------------------------------------------
def test_loopback_feeds_each_result_into_the_next(rt):
    init = demo_image(32, 32)
    res = generate(rt, "Loopback", [3, 0.2, "Linear", "None"], init_images=[init], denoising_strength=0.6)
    assert len(res.images) == 4 and res.images[0].size == (96, 32)     # grid of the 3 loops in one row, then each
    strengths = [float(t.split("Denoising strength: ")[1].split(",")[0]) for t in res.infotexts[1:]]
    assert strengths == pytest.approx([0.6, 0.4, 0.2])
    assert res.all_seeds == [5, 6, 7]
    assert all("Final denoising strength: 0.2" in t and "Denoising curve: Linear" in t for t in res.infotexts)
    batches = generate(rt, "Loopback", [2, 0.3, "Aggressive", "None"], init_images=[init], denoising_strength=0.5,
                       n_iter=2)
    assert len(batches.images) == 3                                   # grid + the last image of each batch
    with pytest.raises(ParamError, match="curve must be one of"):
        generate(rt, "Loopback", [2, 0.3, "Steep", "None"], init_images=[init])


def test_loopback_appends_the_interrogated_prompt(rt):
    """"Append interrogated prompt at each iteration" through A1111's names (modules.deepbooru.model.tag,
    shared.interrogator), which run the queued interrogate job inline from inside the loopback job."""
    from tests.support import interrogate_factory
    tags = ["outline_shape", "red_theme"]
    interrogate_factory.write_deepdanbooru(rt.paths.models / "torch_deepdanbooru" / "model-resnet_custom_v3.pt", tags)
    rt.options.set("interrogate_deepbooru_score_threshold", 0.0)
    res = generate(rt, "Loopback", [2, 0.3, "Linear", "DeepBooru"], init_images=[demo_image(32, 32)],
                   denoising_strength=0.5)
    prompts = [t.split("\n")[0] for t in res.infotexts[1:]]
    assert len(prompts) == 2
    for prompt in prompts:   # A1111 interrogates the init image of every pass, the first one included
        assert prompt.startswith("a red circle, ")
        appended = {tag.strip() for tag in prompt[len("a red circle, "):].split(",")}
        assert appended and appended <= {"outline shape", "red theme"}    # deepbooru_use_spaces (on by default)
    assert callable(shared.interrogator.interrogate)


def test_loopback_curves():
    import importlib.util
    spec = importlib.util.spec_from_file_location("loopback_for_test", scripts.SCRIPT_DIR / "scripts" / "loopback.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    curve = module.denoising_strength
    assert [curve(i, 3, 0.6, 0.2, "Linear") for i in range(3)] == pytest.approx([0.6, 0.4, 0.2])
    assert curve(1, 3, 0.0, 1.0, "Aggressive") == pytest.approx(np.sin(np.pi / 4))
    assert curve(1, 3, 0.0, 1.0, "Lazy") == pytest.approx(1 - np.cos(np.pi / 4))
    assert curve(0, 1, 0.7, 0.1, "Lazy") == 0.7


# --- progress and interrupt ---------------------------------------------------------------------------------------
def test_progress_spans_the_whole_job_and_interrupt_stops_it(rt):
    """Loopback of 6 loops: the job's progress counts all of them (job_count 6, job_no climbing), and an interrupt
    after the second loop ends the job with what was done."""
    seen = []
    stop_after = 2

    def watch(p, *args, **kwargs):
        st = p.state
        seen.append((st.job_no, st.job_count))
        if len(seen) == stop_after:
            st.interrupt()
    rt.hooks.add("before_process_batch", watch)
    try:
        res = generate(rt, "Loopback", [6, 0.2, "Linear", "None"], init_images=[demo_image(32, 32)],
                       denoising_strength=0.5)
    finally:
        rt.hooks.remove("before_process_batch", watch)
    assert seen == [(0, 6), (1, 6)]
    assert 1 <= len([im for im in res.images if im.size == (32, 32)]) <= 2
