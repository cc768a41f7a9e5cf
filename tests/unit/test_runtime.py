"""The runtime both faces use: --ckpt/--vae-path at start, overrides, styles, img2img batch from a folder."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args
from modules.engine.params import GenerationParams, ParamError
from modules.runtime import Runtime
from tests.support.model_factory import write_tiny_checkpoint


@pytest.fixture
def runtime(tmp_path, tiny_sd1):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "given.safetensors"
    target.write_bytes(tiny_sd1.read_bytes())
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "other.safetensors", "sd1", seed=8)
    args = cmd_args.parse(["--data-dir", str(tmp_path), "--ckpt", str(target), "--no-half"], env={})
    rt = Runtime(args)
    rt.load_startup_model()
    return rt


def test_ckpt_flag_loads_the_given_file(runtime, tmp_path):
    assert runtime.models.model.info.filename == tmp_path / "elsewhere" / "given.safetensors"
    assert "given.safetensors" in runtime.options.sd_model_checkpoint


def test_override_settings_apply_to_one_request_only(runtime):
    p = GenerationParams(prompt="x", steps=2, width=32, height=32, seed=1,
                         override_settings={"CLIP_stop_at_last_layers": 2, "samples_save": False})
    result = runtime.generate(p)
    assert "Clip skip: 2" in result.infotexts[0] and not result.saved_paths
    assert runtime.options.CLIP_stop_at_last_layers == 1 and runtime.options.samples_save is True
    with pytest.raises(Exception, match="unknown setting 'nope'"):
        runtime.generate(GenerationParams(prompt="x", steps=1, width=32, height=32,
                                          override_settings={"nope": 1}))


def test_styles_expand_the_prompt(runtime, tmp_path):
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nNeon,neon {prompt} glow,dull\n")
    runtime.styles.reload()
    result = runtime.generate(GenerationParams(prompt="cat", styles=["Neon"], steps=1, width=32, height=32))
    assert result.infotexts[0].startswith("neon cat glow\nNegative prompt: dull\n")
    with pytest.raises(ParamError, match="styles"):
        runtime.generate(GenerationParams(prompt="cat", styles=["Missing"], steps=1, width=32, height=32))


def test_img2img_batch_from_a_folder(runtime, tmp_path):
    src, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    src.mkdir()
    masks.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(src / f"img{i}.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(masks / "img1.png")
    p = GenerationParams(prompt="x", steps=2, width=32, height=32, seed=4, denoising_strength=0.8, mask_blur=0)
    written = runtime.img2img_folder(p, src, out, mask_dir=masks)
    assert [w.name for w in written] == ["img0.png", "img1.png", "img2.png"]
    with Image.open(out / "img1.png") as im:
        arr = np.asarray(im.convert("RGB"))
        assert "Denoising strength: 0.8" in im.info["parameters"] and "Masked content" in im.info["parameters"]
    assert (arr[:8] == 40).all()  # outside img1's mask nothing changed
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ParamError, match="no images"):
        runtime.img2img_folder(p, empty, out)
