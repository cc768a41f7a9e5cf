"""The txt2img engine on every model family the loader knows (tiny models, real key layouts)."""
from __future__ import annotations

import numpy as np
import pytest

from modules import processing
from modules.engine.params import GenerationParams, ParamError
from tests.support.model_factory import manager_for, write_tiny_checkpoint


@pytest.mark.parametrize("arch,in_ch,kw", [("sd1", 4, {}), ("sd1", 9, {}), ("sd2", 4, {"extra_last_layer": True}),
                                          ("sdxl", 4, {})], ids=["sd1", "sd1-inpainting", "sd2", "sdxl"])
def test_generates_finite_images_deterministically(tmp_path, arch, in_ch, kw):
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    path.parent.mkdir(parents=True)
    write_tiny_checkpoint(path, arch, seed=2, in_channels=in_ch, **kw)
    model = manager_for(tmp_path).require()
    p = GenerationParams(prompt="a red circle " * 30, negative_prompt="blue", steps=3, width=48, height=32,
                         seed=9, sampler_name="DPM++ 2M", batch_size=2)
    first = processing.process(model, p)
    again = processing.process(model, GenerationParams(**{**p.to_dict(), "batch_size": 2}))
    assert [im.size for im in first.images] == [(48, 32)] * 2
    a = np.asarray(first.images[0])
    assert np.array_equal(a, np.asarray(again.images[0]))
    assert a.std() > 0  # not a blank/NaN image
    assert first.seeds == [9, 10] and "Seed: 10" in first.infotexts[1]


def test_size_must_fit_the_latent_grid(tmp_path):
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    path.parent.mkdir(parents=True)
    write_tiny_checkpoint(path, "sd1")
    model = manager_for(tmp_path).require()
    with pytest.raises(ParamError, match="width: must be a multiple of 8"):
        processing.process(model, GenerationParams(width=60, height=64, steps=1))
    with pytest.raises(ParamError, match="sampler_name: unknown sampler 'k_nope'"):
        processing.process(model, GenerationParams(width=64, height=64, steps=1, sampler_name="k_nope"))
