"""reference_only / reference_adain / reference_adain+attn (CONTROLNET-REFERENCE §4.8): the layers chosen on real SD1
and SDXL layouts, the attention and AdaIN banks, and whole generations on the tiny models."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from modules.controlnet import preprocessors, reference
from modules.controlnet.apply import ActiveUnit
from modules.controlnet.hints import UnitControl
from modules.controlnet.units import ControlNetUnit
from modules.engine.hooks import StepInfo
from tests.support.engine_helpers import load_tiny, pixels, run

SD1 = dict(cross_attention_dim=768)     # diffusers' defaults are SD1's UNet
SDXL = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
            attention_head_dim=(5, 10, 20), addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)


def real_unet(config: dict) -> UNet2DConditionModel:
    with torch.device("meta"):      # the real layout without its weights
        return UNet2DConditionModel(**config)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("cn_reference"))


@pytest.fixture(scope="module")
def plain(model) -> np.ndarray:
    return generate(model, [])


def picture() -> np.ndarray:
    rng = np.random.RandomState(3)
    return cv2.GaussianBlur((rng.rand(32, 32, 3) * 255).astype(np.uint8), (0, 0), 2)


def unit(module: str, number: int = 0, image: np.ndarray | None = None, **fields) -> ActiveUnit:
    u = ControlNetUnit(enabled=True, module=module, **fields)
    image = picture() if image is None else image
    return ActiveUnit(number, number, u, preprocessors.get(module), None, UnitControl(image, u.resize_mode))


def generate(model, units, **fields) -> np.ndarray:
    def setup(p):
        reference.attach(p, units, False)
    return pixels(run(model, setup=setup, **fields).images[0])


# --- which layers ---------------------------------------------------------------------------------------------------
def test_adain_blocks_are_the_extensions_on_sd1_and_sdxl():
    sd1 = reference.adain_layers(real_unet(SD1))
    # LDM input blocks 4, 5, 7, 8, 10, 11 and output blocks 0–7 (2 and 5 end in their upsampler)
    assert [name for name, _ in sd1] == [
        "mid_block",
        "down_blocks.1.attentions.0", "down_blocks.1.attentions.1", "down_blocks.2.attentions.0",
        "down_blocks.2.attentions.1", "down_blocks.3.resnets.0", "down_blocks.3.resnets.1",
        "up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.0.upsamplers.0",
        "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.upsamplers.0",
        "up_blocks.2.attentions.0", "up_blocks.2.attentions.1"]
    thresholds = [t for _, t in sd1]
    assert thresholds[0] == 0.0
    assert thresholds[1:7] == pytest.approx([2 * (1 - k / 6) for k in range(6)])
    assert thresholds[7:] == pytest.approx([2 * k / 8 for k in range(8)])
    sdxl = reference.adain_layers(real_unet(SDXL))
    assert [name for name, _ in sdxl] == [
        "mid_block",
        "down_blocks.1.attentions.0", "down_blocks.1.attentions.1", "down_blocks.2.attentions.0",
        "down_blocks.2.attentions.1",
        "up_blocks.0.attentions.0", "up_blocks.0.attentions.1", "up_blocks.0.upsamplers.0",
        "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.upsamplers.0"]
    assert [t for _, t in sdxl][1:5] == pytest.approx([2 * (1 - k / 4) for k in range(4)])


def test_attention_layers_widest_first_in_ldm_order():
    unet = real_unet(SD1)
    names = [n.removesuffix(".transformer_blocks.0.attn1.processor") for n in reference.attention_layers(unet)]
    assert names == [
        "down_blocks.2.attentions.0", "down_blocks.2.attentions.1", "mid_block.attentions.0",
        "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
        "down_blocks.1.attentions.0", "down_blocks.1.attentions.1",
        "up_blocks.2.attentions.0", "up_blocks.2.attentions.1", "up_blocks.2.attentions.2",
        "down_blocks.0.attentions.0", "down_blocks.0.attentions.1",
        "up_blocks.3.attentions.0", "up_blocks.3.attentions.1", "up_blocks.3.attentions.2"]
    assert len(reference.attention_layers(real_unet(SDXL))) == 2 * 2 + 2 * 10 + 10 + 3 * 2 + 3 * 10


# --- the banks ------------------------------------------------------------------------------------------------------
def test_attention_reads_the_written_tokens_and_keeps_negative_rows_plain_by_fidelity():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    inner = AttnProcessor2_0()
    machine = reference.Machine()
    layer = reference.ReferenceAttention(inner, machine, threshold=0.5)
    ref, own = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    with torch.no_grad():
        machine.mode, machine.attention, machine.weight, machine.fidelity = "write", True, 0.4, 1.0
        layer(attn, ref)
        assert layer.items == []                                 # weight 0.4 does not reach threshold 0.5
        machine.weight = 0.6
        layer(attn, ref)
        machine.mode, machine.uncond_rows = "read", [1]
        got = layer(attn, own)
        referenced = inner(attn, own, torch.cat([own, ref], dim=1))
        plain = inner(attn, own)
        assert torch.allclose(got[0], referenced[0], atol=1e-6)   # prompt row: with the reference
        assert torch.allclose(got[1], plain[1], atol=1e-6)        # negative row, fidelity 1: plain
        assert layer.items == []                                  # the bank empties once read
        assert torch.allclose(layer(attn, own), plain, atol=1e-6)


def test_adain_renormalises_to_the_written_statistics():
    machine = reference.Machine()
    hook = reference.ReferenceAdain(machine, threshold=0.0)
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(2, 3, 5, 5, generator=g) * 4 + 7
    own = torch.randn(2, 3, 5, 5, generator=g)
    machine.mode, machine.adain, machine.weight, machine.fidelity = "write", True, 1.0, 0.0
    assert hook(None, (), ref) is None
    machine.mode, machine.uncond_rows = "read", [1]
    got = hook(None, (), (own, "rest"))
    assert got[1] == "rest"                                      # tuple outputs (Transformer2DModel) keep the rest
    var, mean = torch.var_mean(got[0], dim=(2, 3), correction=0)
    ref_var, ref_mean = torch.var_mean(ref, dim=(2, 3), correction=0)
    assert torch.allclose(mean, ref_mean, atol=1e-4) and torch.allclose(var, ref_var, atol=1e-3)
    assert hook(None, (), own) is None                           # read once, then plain


def test_fidelity_rules():
    hook = reference.ReferenceHook([], 8, True, reference.Machine(), [])

    class Call:
        def __init__(self, sdxl=False, pass_name="base"):
            self.model = type("M", (), {"is_sdxl": sdxl})()
            self.step = StepInfo(0, 10, 999, 14.6, pass_name)
    assert hook.fidelity(unit("reference_only", threshold_a=0.8), Call()) == pytest.approx(0.8)
    assert hook.fidelity(unit("reference_only"), Call()) == pytest.approx(0.5)            # -1 → the default
    assert hook.fidelity(unit("reference_only", threshold_a=0.5), Call(sdxl=True)) == pytest.approx(0.125)
    assert hook.fidelity(unit("reference_only", control_mode="ControlNet is more important"), Call(True)) == 1.0
    assert hook.fidelity(unit("reference_only", control_mode="My prompt is more important"), Call()) == 0.0
    assert hook.fidelity(unit("reference_only", threshold_a=0.8), Call(pass_name="hires")) == 0.0


# --- whole generations ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", list(reference.MODULES))
def test_reference_changes_the_image_and_is_reproducible(model, plain, module):
    first = generate(model, [unit(module)])
    assert np.abs(first - plain).mean() > 0.2
    assert np.array_equal(generate(model, [unit(module)]), first)


def test_weight_zero_or_outside_the_window_changes_nothing(model, plain):
    assert np.array_equal(generate(model, [unit("reference_adain+attn", weight=0.0)]), plain)
    # 3 steps: the model calls see fractions 0, 0, 1/3; a window from 0.5 contains none
    assert np.array_equal(generate(model, [unit("reference_adain+attn", guidance_start=0.5)]), plain)
    only_first = generate(model, [unit("reference_adain+attn", guidance_end=0.0)])
    assert not np.array_equal(only_first, plain)


def test_fidelity_and_several_units_change_the_result(model):
    low = generate(model, [unit("reference_only", threshold_a=0.0)])
    high = generate(model, [unit("reference_only", threshold_a=1.0)])
    assert not np.array_equal(low, high)
    other = np.ascontiguousarray(picture()[::-1])
    two = generate(model, [unit("reference_only"), unit("reference_adain", 1, image=other)])
    assert not np.array_equal(two, generate(model, [unit("reference_only")]))


def test_the_model_is_left_as_it_was(model):
    def hooks():   # the model's own hooks (the UNet NaN check) stay; the unit's are gone after the job
        return [(name, list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()))
                for name, m in model.unet.named_modules()]
    before = {name: type(proc) for name, proc in model.unet.attn_processors.items()}
    hooks_before = hooks()
    generate(model, [unit("reference_adain+attn")])
    assert {name: type(proc) for name, proc in model.unet.attn_processors.items()} == before
    assert hooks() == hooks_before


@pytest.mark.parametrize("arch, in_channels", [("sdxl", 4), ("sd1", 9)])
def test_other_unets(tmp_path, arch, in_channels):
    """SDXL (added conditioning in the write call) and a 9-channel inpainting UNet (the reference as the masked
    image, nothing masked)."""
    other = load_tiny(tmp_path, arch, in_channels=in_channels)
    plain = generate(other, [])
    assert np.abs(generate(other, [unit("reference_adain+attn")]) - plain).mean() > 0.2


def test_the_service_runs_reference_units_without_a_model(model, plain, tmp_path):
    pytest.importorskip("modules.controlnet.control_models")
    from modules.controlnet.service import ControlNetService, Folders
    from modules.controlnet.units import parse_units
    service = ControlNetService(lambda: Folders([tmp_path], tmp_path / "downloads"))
    units = parse_units([{"enabled": True, "module": "reference_only", "image": picture()}], 3)
    seen = {}

    def setup(p):
        def process(p):
            active = service.prepare(p, units)
            service.attach(p, active)
            seen["active"] = active
        p.hooks.add("process", process)
    image = pixels(run(model, setup=setup).images[0])
    assert seen["active"][0].model is None
    assert np.abs(image - plain).mean() > 0.2
