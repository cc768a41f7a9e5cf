"""Infotext written into images parses back into the same parameters: generating again gives identical pixels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules import processing
from modules.engine import infotext
from modules.engine.params import GenerationParams
from tests.support.engine_helpers import load_tiny, pixels


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("roundtrip"))


def opts_from(overrides: dict, clip_skip: int | None) -> processing.RunOptions:
    return processing.RunOptions(clip_skip=clip_skip or 1, ensd=overrides.get("eta_noise_seed_delta", 0),
                                 randn_source=overrides.get("randn_source", "CPU"))


INIT = Image.fromarray((np.indices((32, 32)).sum(0)[..., None] * [3, 5, 7] % 255).astype(np.uint8))

CASES = [
    dict(prompt="a red (circle:1.2)", negative_prompt="blurry", sampler_name="DPM++ 2M", scheduler="Karras"),
    dict(prompt="[cat:dog:2], grass", sampler_name="Euler a", seed=77, ensd=31337),
    dict(prompt="a cat AND a dog:0.4", sampler_name="DDIM", cfg_scale=4.5, clip_skip=2),
    dict(prompt="x", subseed=123, subseed_strength=0.3, seed_resize_from_w=24, seed_resize_from_h=40),
    dict(prompt="hires", enable_hr=True, hr_scale=1.5, hr_upscaler="Latent (nearest-exact)", denoising_strength=0.55,
         hr_second_pass_steps=2, sampler_name="UniPC", scheduler="Exponential"),
    dict(prompt="img2img", init=True, denoising_strength=0.6, sampler_name="Heun"),
    dict(prompt="tiles", tiling=True, sampler_name="Euler", scheduler="Polyexponential"),
]


@pytest.mark.parametrize("case", CASES, ids=[c["prompt"] for c in CASES])
def test_generate_read_generate_gives_identical_pixels(model, case):
    case = dict(case)
    ensd = case.pop("ensd", 0)
    use_init = case.pop("init", False)
    p = GenerationParams(**{"steps": 3, "width": 32, "height": 32, "seed": 5, **case},
                         init_images=[INIT] if use_init else [])
    first = processing.process(model, p, opts=processing.RunOptions(clip_skip=p.clip_skip or 1, ensd=ensd))
    text = first.infotexts[0]
    kwargs, overrides = infotext.to_params(text)
    assert overrides.get("sd_model_checkpoint") == model.info.shorthash
    again = processing.process(model, GenerationParams(**kwargs, init_images=[INIT] if use_init else []),
                               opts=opts_from(overrides, kwargs.get("clip_skip")))
    assert again.infotexts[0] == text
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))


A1111_TEXT = """masterpiece, (best quality:1.2), 1girl, [blue|red] hair
Negative prompt: lowres, bad anatomy
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3920183340, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.ckpt, Variation seed: 42, Variation seed strength: 0.25, Seed resize from: 512x512, Denoising strength: 0.45, Clip skip: 2, ENSD: 31337, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03", Version: v1.10.1"""


def test_a1111_infotext_parses_into_the_same_fields():
    params, overrides = infotext.to_params(A1111_TEXT)
    assert params["prompt"] == "masterpiece, (best quality:1.2), 1girl, [blue|red] hair"
    assert params["negative_prompt"] == "lowres, bad anatomy"
    assert (params["steps"], params["sampler_name"], params["scheduler"], params["cfg_scale"]) == \
        (28, "DPM++ 2M", "Karras", 6.5)
    assert (params["seed"], params["width"], params["height"]) == (3920183340, 512, 768)
    assert (params["subseed"], params["subseed_strength"]) == (42, 0.25)
    assert (params["seed_resize_from_w"], params["seed_resize_from_h"]) == (512, 512)
    assert (params["denoising_strength"], params["clip_skip"]) == (0.45, 2)
    assert (params["enable_hr"], params["hr_scale"], params["hr_second_pass_steps"], params["hr_upscaler"]) == \
        (True, 2.0, 10, "Latent")
    assert overrides == {"eta_noise_seed_delta": 31337, "sd_model_checkpoint": "6ce0161689"}
    GenerationParams(**params).validate()
    old_style = "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    p, _ = infotext.to_params(old_style)
    assert p["sampler_name"] == "DPM++ 2M Karras" and p["scheduler"] == "Automatic"
