"""The bundled demo model (issue 3) as users get it: one fp16 single file + yaml in models/Stable-diffusion/demo,
loaded with the web UI's own loader; held-out captions drawn through the engine and checked by pixel analysis
(CI floor); CFG matters; the Canny ControlNet steers the shape through a plain diffusers ControlNet pipeline. The first
run in a browser on the demo model: tests/browser/test_demo_model_browser.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modules.paths import DEMO_CHECKPOINT, DEMO_CONTROLNET
from tools.demo_model import data
from tools.demo_model import controlnet as demo_cn
from tools.demo_model.evaluate import CI_FLOOR, EVAL_CFG, evaluate, load_model

CI_CAPTIONS = 24


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(2)
    model, _ = load_model(DEMO_CHECKPOINT, torch.device("cpu"))
    return model


def test_the_shipped_file_is_one_fp16_ldm_checkpoint_with_its_yaml():
    assert DEMO_CHECKPOINT.stat().st_size <= 30 * 1024 * 1024
    assert DEMO_CHECKPOINT.with_suffix(".yaml").is_file()
    with safe_open(str(DEMO_CHECKPOINT), framework="pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert dtypes == {"F16"}
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)


def test_the_training_command_defaults_to_the_shipped_steps():
    """`python -m tools.train_demo_model all` is the recipe of the shipped weights: its step counts are the ones the
    exported file records."""
    from tools.train_demo_model import build_parser

    args = build_parser().parse_args(["all"])
    with safe_open(str(DEMO_CHECKPOINT), framework="pt") as f:
        meta = f.metadata()
    assert args.unet_steps == int(meta["demo_model_unet_step"])
    assert args.vae_steps == int(meta["demo_model_vae_step"])


def test_loader_reads_it_as_a_64px_sd1_model(demo):
    assert demo.spec.family == "sd1"
    assert demo.spec.native_resolution == 64
    assert demo.vae_scale_factor == 4


def test_heldout_captions_meet_the_ci_floor_and_cfg_matters(demo):
    captions = data.heldout_captions(CI_CAPTIONS)
    assert len({tuple(data.parse_caption(c)[1][0][k] for k in ("color", "shape", "position"))
                for c in captions}) == len(data.HELDOUT)  # every held-out combination is in the CI subset
    acc = evaluate(demo, captions, steps=20, cfg=EVAL_CFG, sampler="DPM++ 2M", out=None)
    for k, floor in CI_FLOOR.items():
        assert acc[k] >= floor, f"{k}: {acc[k]:.0%} < {floor:.0%} ({acc})"
    # guidance is what makes the colour right: without it the object's colour is farther from the caption's
    # (these 24 at step 12,200: mean RGB distance 22.5 at CFG 5, 40.3 at CFG 1) and fewer images are right in all
    # three attributes (92 vs 67 %; on all 240: 87 vs 78 %); position hardly depends on it
    no_cfg = evaluate(demo, captions, steps=20, cfg=1.0, sampler="DPM++ 2M", out=None)
    assert no_cfg["color_error"] >= 1.4 * acc["color_error"], (acc, no_cfg)
    assert no_cfg["all3"] < acc["all3"], (acc, no_cfg)


def test_canny_controlnet_steers_the_shape_in_a_diffusers_pipeline(demo):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionControlNetPipeline
    from PIL import Image

    from modules.models.controlnet import load_controlnet

    cn = load_controlnet(DEMO_CONTROLNET, demo.unet.config)
    pipe = StableDiffusionControlNetPipeline(
        vae=demo.vae, text_encoder=demo.text_encoders[0], tokenizer=demo.tokenizers[0], unet=demo.unet,
        controlnet=cn, scheduler=DPMSolverMultistepScheduler.from_config(demo.scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    cases = demo_cn.steering_cases(8)
    with_c, without = [], []
    for i, (caption, scene) in enumerate(cases):
        edges = demo_cn.canny(data.render(scene)[None])[0]
        control = Image.fromarray(np.stack([edges] * 3, axis=-1))
        target = data.shape_mask(scene.objects[0]) > 0.5
        common = dict(prompt=caption, num_inference_steps=20, guidance_scale=7.0, height=64, width=64,
                      output_type="np")
        img = pipe(image=control, generator=torch.Generator("cpu").manual_seed(i), **common).images[0]
        free = pipe(image=control, controlnet_conditioning_scale=0.0, generator=torch.Generator("cpu").manual_seed(i),
                    **common).images[0]
        with_c.append(demo_cn.iou(demo_cn.object_mask((img * 255).round().astype(np.uint8)), target))
        without.append(demo_cn.iou(demo_cn.object_mask((free * 255).round().astype(np.uint8)), target))
    assert np.mean(with_c) >= 0.6, with_c
    assert np.mean(without) <= 0.3, without
