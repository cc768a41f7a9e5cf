"""img2img (resize modes, strength), inpainting (mask, fill modes, only masked, 9-channel models), hires. fix and
tiling, on tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules.engine import image_ops, rng
from modules.engine.params import ParamError
from tests.support.engine_helpers import load_tiny, pixels, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("i2i"))


def gradient(w=32, h=32, seed=0) -> Image.Image:
    r = np.random.default_rng(seed)
    arr = (np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3)) * r.uniform(0.3, 1, 3)).astype(np.uint8)
    return Image.fromarray(arr)


def test_strength_zero_returns_the_input(model):
    init = gradient()
    out = run(model, init_images=[init], denoising_strength=0.0)
    assert np.array_equal(pixels(out.images[0]), pixels(init))


def test_strength_one_ignores_the_input(model):
    a = run(model, init_images=[gradient(seed=1)], denoising_strength=1.0, steps=4)
    b = run(model, init_images=[Image.new("RGB", (32, 32), (255, 0, 255))], denoising_strength=1.0, steps=4)
    mid_a = run(model, init_images=[gradient(seed=1)], denoising_strength=0.3, steps=4)
    mid_b = run(model, init_images=[Image.new("RGB", (32, 32), (255, 0, 255))], denoising_strength=0.3, steps=4)
    far = np.abs(pixels(a.images[0]) - pixels(b.images[0])).mean()
    near = np.abs(pixels(mid_a.images[0]) - pixels(mid_b.images[0])).mean()
    assert far < near / 3, (far, near)
    assert "Denoising strength: 1" in a.infotexts[0]


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_resize_modes_give_the_requested_size(model, mode):
    wide = gradient(64, 32)
    out = run(model, init_images=[wide], denoising_strength=0.5, resize_mode=mode, width=32, height=48)
    assert out.images[0].size == (32, 48)


def test_resize_mode_pixels():
    img = Image.new("RGB", (40, 20), (10, 200, 30))
    ImageDraw.Draw(img).rectangle((0, 0, 9, 19), fill=(250, 0, 0))
    crop = image_ops.resize_image(1, img, 20, 20)      # crop and resize: the red left edge is cut off
    assert crop.getpixel((0, 10))[0] < 100
    fill = image_ops.resize_image(2, img, 40, 40)      # resize and fill: bars take the edge colours
    assert fill.size == (40, 40) and fill.getpixel((20, 0))[1] > 150
    just = image_ops.resize_image(0, img, 20, 20)
    assert just.getpixel((0, 10))[0] > 200


def _mask(w=32, h=32) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    return mask


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpainting_keeps_pixels_outside_the_mask(model, fill):
    init = gradient(seed=3)
    out = run(model, init_images=[init], mask=_mask(), denoising_strength=0.9, mask_blur=2, inpainting_fill=fill)
    blurred = np.asarray(image_ops.prepare_mask(_mask(), False, 2))
    outside = blurred == 0
    assert np.array_equal(pixels(out.images[0])[outside], pixels(init)[outside])
    assert np.abs(pixels(out.images[0])[blurred == 255] - pixels(init)[blurred == 255]).mean() > 1
    assert "Masked content" in out.infotexts[0] and "Mask blur: 2" in out.infotexts[0]


def test_inpainting_mask_invert_and_only_masked(model):
    init = gradient(64, 64, seed=4)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((40, 40, 55, 55), fill=255)
    out = run(model, init_images=[init], mask=mask, denoising_strength=0.9, mask_blur=0, inpaint_full_res=True,
              inpaint_full_res_padding=4, width=32, height=32)
    assert out.images[0].size == (64, 64)  # only-masked keeps the original size
    inside = np.asarray(mask) > 0
    assert np.array_equal(pixels(out.images[0])[~inside], pixels(init)[~inside])
    assert "Inpaint area: Only masked" in out.infotexts[0]
    inverted = run(model, init_images=[init.resize((32, 32))], mask=mask.resize((32, 32)), mask_blur=0,
                   inpainting_mask_invert=1, denoising_strength=0.9)
    keep = np.asarray(mask.resize((32, 32))) == 255  # inverted: these are the pixels left alone
    assert np.array_equal(pixels(inverted.images[0])[keep], pixels(init.resize((32, 32)))[keep])


def test_nine_channel_model_gets_mask_and_masked_image(tmp_path):
    model = load_tiny(tmp_path, in_channels=9)
    seen = []
    handle = model.unet.conv_in.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    try:
        init = gradient(seed=5)
        out = run(model, init_images=[init], mask=_mask(), denoising_strength=1.0, mask_blur=0)
    finally:
        handle.remove()
    x = seen[0]
    assert x.shape[1] == 9
    mask_channel = x[0, 4]
    assert mask_channel[8, 8] == 1 and mask_channel[0, 0] == 0  # latent 16x16: masked square at 4..11
    assert out.to_dict()["is_using_inpainting_conditioning"] is True
    outside = np.asarray(_mask()) == 0
    assert np.array_equal(pixels(out.images[0])[outside], pixels(init)[outside])


def test_outpaint_canvas():
    img = gradient(16, 16)
    canvas, mask = image_ops.outpaint_canvas(img, left=8, top=4)
    assert canvas.size == (24, 20) and mask.getpixel((0, 0)) == 255 and mask.getpixel((10, 6)) == 0
    assert canvas.crop((8, 4, 24, 20)).tobytes() == img.tobytes()


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest-exact)", "Lanczos", "Nearest"])
def test_hires_fix_upscales_and_records_it(model, upscaler):
    out = run(model, enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler, denoising_strength=0.6,
              hr_second_pass_steps=2)
    assert out.images[0].size == (48, 48)
    text = out.infotexts[0]
    assert "Size: 32x32" in text and "Hires upscale: 1.5" in text and f"Hires upscaler: {upscaler}" in text
    assert "Hires steps: 2" in text and "Denoising strength: 0.6" in text


def test_hires_resize_to_and_bad_upscaler(model):
    out = run(model, enable_hr=True, hr_resize_x=64, hr_upscaler="Latent", hr_sampler_name="DDIM")
    assert out.images[0].size == (64, 64) and "Hires resize: 64x64" in out.infotexts[0]
    assert "Hires sampler: DDIM" in out.infotexts[0]
    with pytest.raises(ParamError, match="hr_upscaler"):
        run(model, enable_hr=True, hr_upscaler="ESRGAN_9000")


def test_tiling_makes_the_image_wrap_around(model, monkeypatch):
    """With circular padding the whole network is shift-equivariant with wrap-around: rolling the starting noise
    rolls the image by the same amount."""
    original = rng.batch_noise
    shift = {"on": False}

    def rolled(*args, **kw):
        noise, gens = original(*args, **kw)
        return (torch.roll(noise, shifts=4, dims=3) if shift["on"] else noise), gens
    monkeypatch.setattr(rng, "batch_noise", rolled)
    base = run(model, tiling=True, steps=2, seed=12)
    shift["on"] = True
    moved = run(model, tiling=True, steps=2, seed=12)
    expected = np.roll(pixels(base.images[0]), 8, axis=1)  # 4 latent pixels = 8 image pixels (factor 2)
    assert np.abs(pixels(moved.images[0]) - expected).max() <= 2
    assert "Tiling: True" in base.infotexts[0]
    shift["on"] = False
    plain = run(model, tiling=False, steps=2, seed=12)
    shift["on"] = True
    plain_moved = run(model, tiling=False, steps=2, seed=12)
    assert np.abs(pixels(plain_moved.images[0]) - np.roll(pixels(plain.images[0]), 8, axis=1)).max() > 2


def test_outpainting_extends_the_canvas_and_keeps_the_original(model):
    img = gradient(32, 32, seed=6)
    canvas, mask = image_ops.outpaint_canvas(img, right=16, bottom=8)
    out = run(model, init_images=[canvas], mask=mask, width=48, height=40, denoising_strength=1.0, mask_blur=0,
              inpainting_fill=0)
    result = out.images[0]
    assert result.size == (48, 40)
    assert np.array_equal(pixels(result)[:32, :32], pixels(img))
    assert np.abs(pixels(result)[32:, 32:] - pixels(canvas)[32:, 32:]).mean() > 1  # the new area was painted
