"""ControlNet effects outside the residuals (CONTROLNET-REFERENCE §4.7, §4.9) on the tiny SD1 model: inpaint_only's
x0 replacement and pixel blend, tile_colorfix(+sharp), recolor. The units carry no ControlNet model here, so what
changes is the effect alone."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from modules.controlnet import effects, preprocessors
from modules.controlnet.apply import ActiveUnit
from modules.controlnet.hints import UnitControl
from modules.controlnet.units import ControlNetUnit
from modules.engine.hooks import Hooks
from tests.support.engine_helpers import load_tiny, pixels, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("cn_effects"))


def picture() -> np.ndarray:
    """A smooth colour image (32×32): the tiny VAE's latent of it is smooth too."""
    rng = np.random.RandomState(0)
    return cv2.GaussianBlur((rng.rand(32, 32, 3) * 255).astype(np.uint8), (0, 0), 3)


def left_half_mask() -> np.ndarray:
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    return mask


def unit(module: str, image: np.ndarray, number: int = 0, **fields) -> ActiveUnit:
    pre = preprocessors.get(module)
    u = ControlNetUnit(enabled=True, module=module, **fields)
    return ActiveUnit(number, number, u, pre, None, UnitControl(image, u.resize_mode))


def generate(model, units, blur_sigma: int = 7, **fields):
    """(image pixels, final latents) with the units' effects attached."""
    seen = {}

    def setup(p):
        effects.attach(p, units, False, blur_sigma)
        p.hooks.add("post_sample", lambda p, args: seen.setdefault("latents", args.samples.clone()))
    result = run(model, setup=setup, **fields)
    return pixels(result.images[0]), seen["latents"]


# --- the prediction algebra ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sigma", [0.03, 1.0, 14.6])
def test_x0_round_trip(prediction, sigma):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    a, b = effects.noise_levels(sigma)
    assert a * a + b * b == pytest.approx(1.0)
    x = a * x0 + b * eps
    out = eps if prediction == "epsilon" else a * eps - b * x0
    got_x0, got_eps = effects.split_prediction(x, out, sigma, prediction)
    assert torch.allclose(got_x0, x0, atol=1e-4) and torch.allclose(got_eps, eps, atol=1e-4)
    assert torch.allclose(effects.join_prediction(x, x0, sigma, prediction), out, atol=1e-4)


def test_undefined_sigmas():
    assert not effects.defined(0.0, "epsilon")
    assert not effects.defined(float("inf"), "epsilon")     # zero terminal SNR: x_t is pure noise
    assert effects.defined(float("inf"), "v_prediction")
    assert effects.noise_levels(float("inf")) == (0.0, 1.0)


def test_blend_mask_dilates_then_blurs():
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 255
    m = effects.blend_mask(mask, 7)
    # dilated by 3 (σ 7), then blurred ±3: the whole mask stays fully generated (a blur alone would start
    # fading at column 17), a ramp over columns 20–25, the original from column 26
    assert m[:, :20].min() == 1.0
    ramp = m[0, 20:26]
    assert np.all(ramp > 0) and np.all(ramp < 1) and np.all(np.diff(ramp) < 0)
    assert m[:, 26:].max() == 0.0
    assert np.array_equal(effects.blend_mask(mask, 0), (mask > 127).astype(np.float32))


# --- inpaint_only -------------------------------------------------------------------------------------------------
def test_inpaint_only_keeps_the_unmasked_area_and_repaints_the_mask(model):
    image = picture()
    rgba = np.dstack([image, left_half_mask()])
    control_latent = effects.encode_map(model, image)
    plain_pixels, plain = generate(model, [])
    got_pixels, got = generate(model, [unit("inpaint_only", rgba)])
    # latent grid (factor 2): columns ≥ 9 lie outside the max-pooled mask; the final x0 there is the control's
    assert torch.allclose(got[..., 9:], control_latent[..., 9:], atol=1e-4)
    assert not torch.allclose(plain[..., 9:], control_latent[..., 9:], atol=1e-1)
    assert (got[..., :7] - control_latent[..., :7]).abs().mean() > 1.0      # the masked area is generated
    # pixels: beyond the blend's ramp the control image exactly, inside the mask not the control image
    assert np.array_equal(got_pixels[:, 24:], image[:, 24:].astype(np.int16))
    assert np.abs(got_pixels[:, :12] - image[:, :12]).mean() > 20
    assert np.abs(plain_pixels[:, 24:] - image[:, 24:]).mean() > 20


def test_inpaint_only_weight_mixes_the_prediction_and_ignores_the_window(model):
    rgba = np.dstack([picture(), left_half_mask()])
    control_latent = effects.encode_map(model, picture())
    _, plain = generate(model, [])
    _, none = generate(model, [unit("inpaint_only", rgba, weight=0.0)])
    assert torch.equal(none, plain)
    _, half = generate(model, [unit("inpaint_only", rgba, weight=0.5)])
    half_gap = (half[..., 9:] - control_latent[..., 9:]).abs().mean()
    assert 1e-3 < half_gap < (plain[..., 9:] - control_latent[..., 9:]).abs().mean()
    # the replacement is what makes the unit "only" inpaint: it runs whatever the ControlNet's window
    _, late = generate(model, [unit("inpaint_only", rgba, guidance_start=0.9)])
    assert torch.allclose(late[..., 9:], control_latent[..., 9:], atol=1e-4)


def test_inpaint_only_blur_sigma_zero_blends_with_the_bare_mask(model):
    image = picture()
    got, _ = generate(model, [unit("inpaint_only", np.dstack([image, left_half_mask()]))], blur_sigma=0)
    assert np.array_equal(got[:, 16:], image[:, 16:].astype(np.int16))
    assert np.abs(got[:, :16] - image[:, :16]).mean() > 20


def test_inpaint_only_with_an_a1111_mask_becomes_inpaint(model):
    au = unit("inpaint_only", np.dstack([picture(), left_half_mask()]))
    p = SimpleNamespace(is_img2img=True, image_mask=object(), sd_model=model, hooks=Hooks())
    effects.attach(p, [au], False, 7)
    assert au.unit.module == "inpaint" and au.pre.name == "inpaint"
    assert not p.hooks.has("cfg_denoised") and not p.hooks.has("postprocess_batch")
    txt2img = SimpleNamespace(is_img2img=False, image_mask=None, sd_model=model, hooks=Hooks())
    effects.attach(txt2img, [unit("inpaint_only", au.control.detected)], False, 7)
    assert txt2img.hooks.has("cfg_denoised") and txt2img.hooks.has("postprocess_batch")


# --- tile_colorfix ------------------------------------------------------------------------------------------------
def test_tile_colorfix_takes_the_colours_of_the_control(model):
    image = picture()
    control = effects.encode_map(model, image)
    _, plain = generate(model, [])
    _, fixed = generate(model, [unit("tile_colorfix", image, threshold_a=3)])

    def low_gap(latents):
        return (effects.box_blur(latents, 3) - effects.box_blur(control, 3)).abs().mean()
    assert low_gap(fixed) < 0.5 * low_gap(plain)
    _, none = generate(model, [unit("tile_colorfix", image, threshold_a=3, weight=0.0)])
    assert torch.equal(none, plain)


def test_tile_colorfix_sharp_blurs_only_the_negative_rows(model):
    image = picture()
    _, fixed = generate(model, [unit("tile_colorfix", image, threshold_a=3)])
    _, sharp0 = generate(model, [unit("tile_colorfix+sharp", image, threshold_a=3, threshold_b=0)])
    _, sharp2 = generate(model, [unit("tile_colorfix+sharp", image, threshold_a=3, threshold_b=2)])
    assert torch.allclose(sharp0, fixed, atol=1e-5)         # sharpness 0: plain colorfix
    assert not torch.allclose(sharp2, fixed, atol=1e-3)
    _, no_cfg = generate(model, [unit("tile_colorfix+sharp", image, threshold_a=3, threshold_b=2)], cfg_scale=1.0)
    _, no_cfg_plain = generate(model, [unit("tile_colorfix", image, threshold_a=3)], cfg_scale=1.0)
    assert torch.allclose(no_cfg, no_cfg_plain, atol=1e-5)  # no negative rows: nothing to sharpen


# --- recolor ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["recolor_luminance", "recolor_intensity"])
def test_recolor_gives_the_maps_brightness(model, module):
    grey = preprocessors.get(module).run(picture(), 512, 1.0, 0.5).image
    plain, _ = generate(model, [])
    got, _ = generate(model, [unit(module, grey)])

    def brightness(px):
        rgb = px.astype(np.uint8)
        if module == "recolor_luminance":
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0].astype(np.int16)
        return rgb.max(axis=2).astype(np.int16)
    target = grey[..., 0].astype(np.int16)
    assert np.abs(brightness(got) - target).mean() < 1.0      # Lab's 8-bit round trip loses a little
    assert np.abs(brightness(plain) - target).mean() > 10
    hue = cv2.cvtColor(got.astype(np.uint8), cv2.COLOR_RGB2HSV)[..., 0].astype(np.int16)
    plain_hue = cv2.cvtColor(plain.astype(np.uint8), cv2.COLOR_RGB2HSV)[..., 0].astype(np.int16)
    assert np.abs(hue - plain_hue).mean() < np.abs(brightness(got) - brightness(plain)).mean()
