"""Grids of batches (A1111's rules) through the runtime both faces use: a batch of several images is returned with its
grid first (return_grid) and the grid saved to outputs/txt2img-grids with the infotext (grid_save, grid_format,
grid_extended_filename), n_rows, grid_only_if_multiple, do_not_save_grid, samples_format; the API saves and returns
the grid only when it saves images."""
from __future__ import annotations

import pytest
from PIL import Image

from modules import cmd_args, images
from modules.engine.params import GenerationParams
from modules.runtime import Runtime
from tests.support.model_factory import write_tiny_checkpoint


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    root = tmp_path_factory.mktemp("grids")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    write_tiny_checkpoint(root / "models" / "Stable-diffusion" / "m.safetensors", "sd1", seed=1)
    runtime = Runtime(cmd_args.parse(["--data-dir", str(root), "--no-half", "--no-demo-model"], env={}))
    runtime.load_startup_model()
    runtime.root = root
    return runtime


def params(**kw):
    base = dict(prompt="a grid", steps=1, width=32, height=32, seed=3, sampler_name="Euler", batch_size=2, n_iter=2)
    base.update(kw)
    return GenerationParams(**base)


def files(rt, folder: str, pattern: str = "*") -> set:
    return {p for p in (rt.root / "outputs" / folder).rglob(pattern) if p.is_file()}


def test_a_batch_comes_back_with_its_grid_first_and_both_are_saved(rt):
    grids_before, samples_before = files(rt, "txt2img-grids"), files(rt, "txt2img-images")
    result = rt.generate(params())
    assert len(result.images) == 5 and result.index_of_first_image == 1
    assert result.images[0].size == (64, 64)        # 4 images: 2 rows (about square)
    assert result.infotexts[0] == result.infotexts[1] and result.seeds == [3, 3, 4, 5, 6]
    new_grids = files(rt, "txt2img-grids") - grids_before
    assert len(new_grids) == 1 and next(iter(new_grids)).name.startswith("grid-")
    assert len(files(rt, "txt2img-images") - samples_before) == 4
    with Image.open(next(iter(new_grids))) as im:
        assert im.size == (64, 64) and im.info["parameters"] == result.infotexts[0]
    assert result.saved_paths[0] == str(next(iter(new_grids)))   # the paths line up with the images


def test_grid_settings_act(rt):
    before = files(rt, "txt2img-grids")
    result = rt.generate(params(override_settings={"return_grid": False}))
    assert len(result.images) == 4 and result.index_of_first_image == 0   # saved, not returned
    assert len(files(rt, "txt2img-grids") - before) == 1
    before = files(rt, "txt2img-grids")
    result = rt.generate(params(override_settings={"grid_save": False, "n_rows": 1}))
    assert result.images[0].size == (128, 32) and files(rt, "txt2img-grids") == before
    result = rt.generate(params(override_settings={"n_rows": 0}))   # rows = batch size
    assert result.images[0].size == (64, 64)
    result = rt.generate(params(batch_size=1, n_iter=1))
    assert len(result.images) == 1                                     # grid_only_if_multiple
    result = rt.generate(params(batch_size=1, n_iter=1, override_settings={"grid_only_if_multiple": False}))
    assert len(result.images) == 2
    before = files(rt, "txt2img-grids")
    result = rt.generate(params(do_not_save_grid=True))
    assert len(result.images) == 4 and files(rt, "txt2img-grids") == before


def test_formats_and_extended_grid_names(rt):
    grids, samples = files(rt, "txt2img-grids"), files(rt, "txt2img-images")
    result = rt.generate(params(override_settings={"grid_format": "jpg", "samples_format": "webp",
                                                   "grid_extended_filename": True}))
    new_grid = files(rt, "txt2img-grids") - grids
    new_samples = files(rt, "txt2img-images") - samples
    assert len(new_grid) == 1 and next(iter(new_grid)).suffix == ".jpg"
    assert next(iter(new_grid)).stem != "grid-" and "-3" in next(iter(new_grid)).stem   # the seed in the name
    assert {p.suffix for p in new_samples} == {".webp"} and len(new_samples) == 4
    with Image.open(sorted(new_samples)[0]) as im:
        assert images.read_info(im)[0] in result.infotexts


def test_the_api_returns_and_saves_a_grid_only_when_it_saves_images(rt):
    before = files(rt, "txt2img-grids")
    result = rt.generate(params(), save=False, is_api=True)
    assert len(result.images) == 4 and files(rt, "txt2img-grids") == before
    result = rt.generate(params(), save=True, is_api=True)
    assert len(result.images) == 5 and len(files(rt, "txt2img-grids") - before) == 1
