"""ControlNet during generation on the tiny models (CONTROLNET-REFERENCE §4): each file layout changes the image,
guidance start/end act on A1111's steps, control modes scale and place the residuals, weight 0 is no control,
several units add up, Hires. fix uses both map sizes and hr_option, img2img takes its own image, and the maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.controlnet.service import ControlNetService, Folders
from tests.support import controlnet_factory as cf
from tests.support.engine_helpers import load_tiny, pixels, run


def control_image(size: int = 32) -> np.ndarray:
    a = np.zeros((size, size, 3), np.uint8)
    a[size // 4: size // 2, size // 2: size - 4] = 255
    return a


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {arch: load_tiny(tmp_path_factory.mktemp(f"m_{arch}"), arch) for arch in ("sd1", "sdxl")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, models):
    """Control files for the tiny checkpoints, one per layout family."""
    d = tmp_path_factory.mktemp("ControlNet")
    sd1, xl = models["sd1"].unet, models["sdxl"].unet
    cf.write_pth(d / "control_v11p_tiny_canny.pth", cf.tiny_controlnet(sd1, seed=5))
    cf.write_pruned(d / "control_tiny-fp16.safetensors", cf.tiny_controlnet(sd1, seed=6))
    cf.write_diffusers_folder(d / "controlnet-tiny-diffusers", cf.tiny_controlnet(sd1, seed=7))
    cf.write_difference(d / "diff_control_tiny.safetensors", cf.tiny_controlnet(sd1, seed=8), sd1)
    cf.write_control_lora(d / "control-lora-tiny-rank2.safetensors", sd1, seed=9)
    cf.write_pth(d / "control_v11e_tiny_shuffle.pth", cf.tiny_controlnet(sd1, seed=10))
    cf.write_adapter(d / "t2iadapter_tiny_sd14v1.pth", cf.tiny_adapter("sd1", seed=3))
    cf.write_pth(d / "controlnet-tiny-sdxl.safetensors", cf.tiny_controlnet(xl, seed=11))
    cf.write_adapter(d / "t2i-adapter-tiny-sdxl.safetensors", cf.tiny_adapter("sdxl", seed=4), layout="diffusers")
    cf.write_style_adapter(d / "t2iadapter_style_tiny.pth", context_dim=32)
    return d


@pytest.fixture(scope="module")
def service(folder, tmp_path_factory):
    return ControlNetService(lambda: Folders([folder], tmp_path_factory.mktemp("annotators")))


def generate(model, service, units, **fields):
    """A generation with `units` (dicts as the API sends them), through the service as the built-in script does."""
    seen = {}

    def setup(p):
        def prepare(p_):
            from modules.controlnet.units import parse_units
            seen["active"] = service.prepare(p_, parse_units(units, 10))
            service.attach(p_, seen["active"])
        p.hooks.add("process", prepare)
    processed = run(model, setup=setup, **{"steps": 4, "cfg_scale": 5, **fields})
    return processed, seen.get("active", [])


def unit(model_name, **kw):
    return {"enabled": True, "module": "none", "model": model_name, "image": control_image(), **kw}


LAYOUTS = [("sd1", "control_v11p_tiny_canny"), ("sd1", "control_tiny-fp16"), ("sd1", "controlnet-tiny-diffusers"),
           ("sd1", "diff_control_tiny"), ("sd1", "control-lora-tiny-rank2"), ("sd1", "control_v11e_tiny_shuffle"),
           ("sd1", "t2iadapter_tiny_sd14v1"), ("sdxl", "controlnet-tiny-sdxl"), ("sdxl", "t2i-adapter-tiny-sdxl")]


@pytest.mark.parametrize("arch, name", LAYOUTS, ids=[n for _, n in LAYOUTS])
def test_every_layout_changes_the_image(models, service, arch, name):
    free, _ = generate(models[arch], service, [])
    ctrl, active = generate(models[arch], service, [unit(name)])
    assert len(active) == 1 and active[0].model.title.startswith(name)
    assert np.abs(pixels(ctrl.images[0]) - pixels(free.images[0])).max() > 2
    assert ctrl.infotexts[0].count("ControlNet 0: ") == 1 and "ControlNet 0" not in free.infotexts[0]


def test_a_controlnet_attends_with_the_checkpoints_attention_kernel(models, service):
    _, active = generate(models["sd1"], service, [unit("control_v11p_tiny_canny")], steps=1)
    unet_kinds = {type(p).__name__ for p in models["sd1"].unet.attn_processors.values()}
    assert unet_kinds == {"CpuAttnProcessor"}                   # no attention flag, on the CPU
    assert {type(p).__name__ for p in active[0].model.module.attn_processors.values()} == unet_kinds


def test_a_model_of_another_family_is_refused(models, service):
    from modules.engine.params import ParamError
    with pytest.raises(ParamError, match=r"args\[0\]\.model.*sdxl|args\[0\]\.model.*SDXL"):
        generate(models["sd1"], service, [unit("controlnet-tiny-sdxl")])


def test_a_style_adapter_is_refused_not_silently_ignored(models, service):
    from modules.engine.params import ParamError
    with pytest.raises(ParamError, match=r"args\[0\]\.model.*style adapter.*clip_vision"):
        generate(models["sd1"], service, [unit("t2iadapter_style_tiny")])


def steps_with_control(models, service, unit_kw: dict, **fields):
    """(pass, step index) of the model calls in which the unit's ControlNet ran (Euler: one call per step)."""
    from modules.controlnet.apply import ControlNetHook
    ran = []
    orig = ControlNetHook.active

    def active(self, au, step):
        ok = orig(self, au, step)
        if ok:
            ran.append((step.pass_name, step.index))
        return ok
    ControlNetHook.active = active
    try:
        generate(models["sd1"], service, [unit("control_v11p_tiny_canny", **unit_kw)], **fields)
    finally:
        ControlNetHook.active = orig
    return ran


def test_guidance_start_and_end_follow_a1111_step_fraction(models, service):
    """§4.3: the model call of step k sees max(k − 1, 0)/N; N = 20, end 0.5 → steps 0–11; start 0.5 → 11–19."""
    assert [i for _, i in steps_with_control(models, service, {"guidance_end": 0.5}, steps=20)] == list(range(12))
    assert [i for _, i in steps_with_control(models, service, {"guidance_start": 0.5}, steps=20)] == \
        list(range(11, 20))


def test_weight_zero_and_an_empty_window_are_no_control(models, service):
    free, _ = generate(models["sd1"], service, [])
    for kw in ({"weight": 0.0}, {"guidance_start": 1.0, "guidance_end": 1.0}):
        img, _ = generate(models["sd1"], service, [unit("control_v11p_tiny_canny", **kw)], steps=3)
        free3, _ = generate(models["sd1"], service, [], steps=3)
        assert np.abs(pixels(img.images[0]) - pixels(free3.images[0])).max() <= 1, kw


def test_two_units_add_up(models, service):
    """Residuals are linear in the weight and units are summed: two units at 0.4 = one unit at 0.8."""
    one, _ = generate(models["sd1"], service, [unit("control_v11p_tiny_canny", weight=0.8)])
    two, _ = generate(models["sd1"], service, [unit("control_v11p_tiny_canny", weight=0.4)] * 2)
    base, _ = generate(models["sd1"], service, [unit("control_v11p_tiny_canny", weight=0.4)])
    assert np.abs(pixels(one.images[0]) - pixels(two.images[0])).max() <= 2
    assert np.abs(pixels(one.images[0]) - pixels(base.images[0])).max() > 2


def test_control_modes_scale_and_place_the_residuals(models, service, monkeypatch):
    """Balanced: all rows at w; "My prompt": soft scales on all rows; "ControlNet is more important": soft scales on
    the prompt rows only (the ControlNet runs on those rows alone)."""
    from modules.engine import hooks as engine_hooks
    seen = []
    orig = engine_hooks.UNetCall.add_residuals

    def spy(self, down=None, mid=None, rows=None, intrablock=None):
        orig(self, down=down, mid=mid, rows=rows, intrablock=intrablock)
        seen.append([r.clone() for r in self.down_block_additional_residuals] +
                    [self.mid_block_additional_residual.clone()])
    monkeypatch.setattr(engine_hooks.UNetCall, "add_residuals", spy)
    out = {}
    for mode in ("Balanced", "My prompt is more important", "ControlNet is more important"):
        seen.clear()
        generate(models["sd1"], service, [unit("control_v11p_tiny_canny", control_mode=mode)], steps=1)
        out[mode] = seen[0]
    bal, prompt, control = out["Balanced"], out["My prompt is more important"], out["ControlNet is more important"]
    n = len(bal)
    for i in range(n):
        want = 0.825 ** (n - 1 - i)
        assert torch.allclose(prompt[i], bal[i] * want, atol=1e-5)
        assert torch.allclose(control[i][0], prompt[i][0], atol=1e-5)       # prompt row: soft scales
        assert control[i][1].abs().max() == 0 and bal[i][1].abs().max() > 0    # negative row: nothing


def test_hires_fix_uses_both_sizes_and_hr_option(models, service):
    kw = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.6, steps=3,
              hr_second_pass_steps=2)
    for option, passes in (("Both", {"base", "hires"}), ("Low res only", {"base"}), ("High res only", {"hires"})):
        assert {p for p, _ in steps_with_control(models, service, {"hr_option": option}, **kw)} == passes, option
    processed, active = generate(models["sd1"], service, [unit("control_v11p_tiny_canny")], **kw)
    maps = service.detected_maps(type("P", (), {"enable_hr": True, "is_img2img": False, "width": 32, "height": 32,
                                                "hr_scale": 1.5, "hr_resize_x": 0, "hr_resize_y": 0})(), active)
    assert [m.size for m in maps] == [(48, 48), (32, 32)]       # the hires-size map first (§1.7)
    assert processed.images[0].size == (48, 48)


def test_img2img_unit_without_image_takes_the_init_image(models, service):
    from PIL import Image
    init = Image.fromarray(control_image())
    u = unit("control_v11p_tiny_canny")
    del u["image"]
    processed, active = generate(models["sd1"], service, [u], init_images=[init], denoising_strength=0.7)
    assert np.array_equal(active[0].control.map_at(32, 32), control_image())
    from modules.engine.params import ParamError
    with pytest.raises(ParamError, match=r"args\[0\]\.image.*no input image"):
        generate(models["sd1"], service, [u])


def test_inpaint_module_gets_img2img_mask_as_the_inpaint_protocol(models, service):
    """§4.7: an inpaint module in img2img takes A1111's mask; the control tensor is the image where kept and −1 in
    all three channels where repainted."""
    from PIL import Image
    init = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    u = {"enabled": True, "module": "inpaint", "model": "control_v11p_tiny_canny"}
    _, active = generate(models["sd1"], service, [u], init_images=[init], mask=Image.fromarray(mask),
                         denoising_strength=0.7, mask_blur=0)
    t = active[0].control.tensor_at(32, 32, 3, "cpu", torch.float32)
    assert torch.all(t[0, :, :, 20:] == -1.0)
    assert torch.allclose(t[0, :, :, :12], torch.full_like(t[0, :, :, :12], 200 / 255))


def test_preprocessor_results_are_reused_for_the_same_input():
    """§3.1's cache: the same image and settings run the preprocessor once; another image, other thresholds, or a
    new seed for shuffle run it again; the oldest result leaves first."""
    from modules.controlnet import preprocessors
    from modules.controlnet.preprocessor_cache import PreprocessorCache

    cache = PreprocessorCache(2)
    canny, shuffle = preprocessors.get("canny"), preprocessors.get("shuffle")
    img, other = control_image(), control_image()[::-1].copy()
    first = cache.run(canny, img, 32, 100, 200, seed=1, store=None)
    assert cache.run(canny, img.copy(), 32, 100, 200, seed=2, store=None) is first       # seed does not matter
    assert cache.run(canny, img, 32, 50, 200, seed=1, store=None) is not first
    assert cache.run(canny, other, 32, 100, 200, seed=1, store=None) is not first
    assert cache.run(canny, img, 32, 100, 200, seed=1, store=None) is not first           # evicted (size 2)
    s1 = cache.run(shuffle, img, 32, 0.5, 0.5, seed=1, store=None)
    assert cache.run(shuffle, img, 32, 0.5, 0.5, seed=2, store=None) is not s1
