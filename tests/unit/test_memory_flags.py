"""A1111's memory, precision and attention flags on real tiny checkpoints loaded the way users' files are.

--medvram / --lowvram move weights between RAM and the accelerator; this machine has no accelerator, so a recording
Placement stands in for the device moves (memory_offload.Placement is the seam for it): the hooks, the units and the
order in which they are brought in are the real ones, and each phase of a real generation (text encoding, every UNet
call, VAE decode and encode) records which units are "on the accelerator" while it runs.
"""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from PIL import Image

from modules import cmd_args, devices
from modules.devices import DeviceConfig
from modules.engine import vae_codec
from modules.models import model_options
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.memory_offload import Placement
from modules.models.model_options import ModelOptions
from modules.models.registry import ModelRegistry
from tests.support.engine_helpers import run
from tests.support.model_factory import write_tiny_checkpoint

CPU32 = DeviceConfig(torch.device("cpu"), torch.float32, torch.float32)


class RecordingPlacement(Placement):
    """Stands in for the accelerator: remembers which modules were moved to it instead of moving their tensors."""

    def __init__(self):
        super().__init__(torch.device("cpu"))
        self.resident: set[int] = set()
        self.moves = 0

    def move(self, module, to_accelerator):
        self.moves += 1
        (self.resident.add if to_accelerator else self.resident.discard)(id(module))

    def on_accelerator(self, module):
        return id(module) in self.resident


def manager(tmp_path, argv=(), device=CPU32, placement=None, archs=("sd1",), **kw) -> ModelManager:
    folder = tmp_path / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    for i, arch in enumerate(archs):
        write_tiny_checkpoint(folder / f"{i}_{arch}.safetensors", arch, seed=i + 1)
    options = dataclasses.replace(ModelOptions.from_args(cmd_args.parse(list(argv), env={})), placement=placement)
    reg = ModelRegistry([folder], tmp_path / "VAE", HashCache(tmp_path / "hashes.json"))
    return ModelManager(reg, device, tmp_path / "tok", options=options, **kw)


def probe(model, offloader, lowvram: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(phase, units on the accelerator while it runs), one entry per call, in order."""
    seen = []

    def watch(module, label):
        module.register_forward_pre_hook(lambda _m, _a: seen.append((label, tuple(offloader.unit_names_on_accelerator()))))

    for i, encoder in enumerate(model.text_encoders):
        watch(encoder, f"text_encoder_{i + 1}" if i else "text_encoder")
    if lowvram:
        for i, block in enumerate(model.unet.down_blocks):
            watch(block, f"unet.down_blocks.{i}")
        watch(model.unet.mid_block, "unet.mid_block")
        for i, block in enumerate(model.unet.up_blocks):
            watch(block, f"unet.up_blocks.{i}")
    else:
        watch(model.unet, "unet")
    watch(model.vae.decoder, "vae.decoder")
    watch(model.vae.encoder, "vae.encoder")
    return seen


def generate_and_encode(model):
    run(model, steps=2, width=32, height=32)
    vae_codec.images_to_latents(model, [Image.new("RGB", (32, 32), (200, 30, 30))])


def test_medvram_keeps_one_component_on_the_accelerator_at_each_phase(tmp_path):
    placement = RecordingPlacement()
    model = manager(tmp_path, ["--medvram"], placement=placement).require()
    off = model.extra["offloader"]
    assert [name for name, _ in off.units] == ["text_encoder", "unet", "vae"]
    assert off.unit_names_on_accelerator() == []           # after loading everything waits in RAM
    seen = probe(model, off, lowvram=False)
    generate_and_encode(model)
    phases = [label for label, _ in seen]
    assert phases[0] == "text_encoder" and phases.count("unet") >= 2 and phases[-2:] == ["vae.decoder", "vae.encoder"]
    expected = {"text_encoder": ("text_encoder",), "unet": ("unet",), "vae.decoder": ("vae",), "vae.encoder": ("vae",)}
    assert all(units == expected[label] for label, units in seen), seen
    # moved in once per phase change, not on every call: text encoder, UNet, VAE (and each out again)
    assert placement.moves <= 3 + 2 * 3 + 3


@pytest.mark.parametrize("flag", ["--medvram", "--lowvram"])
def test_controlnet_models_wait_in_ram_under_the_memory_flags(tmp_path, flag):
    """A ControlNet unit's model is loaded into RAM and is on the accelerator only for its own forward, beside the
    resident UNet unit; it is back in RAM after the job."""
    import numpy as np

    from modules.controlnet.service import ControlNetService, Folders
    from modules.controlnet.units import parse_units
    from tests.support import controlnet_factory as cf
    placement = RecordingPlacement()
    model = manager(tmp_path, [flag], placement=placement).require()
    off = model.extra["offloader"]
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    cf.write_pth(folder / "control_v11p_tiny_canny.pth", cf.tiny_controlnet(model.unet, seed=5))
    service = ControlNetService(lambda: Folders([folder], tmp_path / "annotators"))
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:16, 16:28] = 255
    units = [{"enabled": True, "module": "none", "model": "control_v11p_tiny_canny", "image": image}]
    seen, loaded = [], {}

    def setup(p):
        def prepare(p_):
            active = service.prepare(p_, parse_units(units, 10))
            loaded["model"] = cn = active[0].model
            assert not placement.on_accelerator(cn.module)      # loaded into RAM
            cn.module.register_forward_pre_hook(lambda _m, _a: seen.append(
                (placement.on_accelerator(cn.module), tuple(off.unit_names_on_accelerator()))))
            service.attach(p_, active)
        p.hooks.add("process", prepare)
    run(model, setup=setup, steps=2, width=32, height=32, cfg_scale=5)
    assert len(seen) == 2 and all(on for on, _ in seen), seen
    # the UNet (or its last block) stays resident: the ControlNet does not evict it and is not a unit itself
    assert all(units and all(u.startswith("unet") or u == "text_encoder" for u in units) for _, units in seen), seen
    assert not placement.on_accelerator(loaded["model"].module)   # back in RAM after the forward


def test_lowvram_brings_the_unet_in_block_by_block(tmp_path):
    placement = RecordingPlacement()
    model = manager(tmp_path, ["--lowvram"], placement=placement).require()
    off = model.extra["offloader"]
    unet = model.unet
    names = [name for name, _ in off.units]
    assert names == ["text_encoder", "unet.down_blocks.0", "unet.down_blocks.1", "unet.mid_block",
                     "unet.up_blocks.0", "unet.up_blocks.1", "vae.encoder", "vae.decoder"]
    seen = probe(model, off, lowvram=True)
    generate_and_encode(model)
    labels = [label for label, _ in seen]
    assert {"text_encoder", "unet.mid_block", "vae.decoder", "vae.encoder"} <= set(labels)
    assert labels.count("unet.down_blocks.0") >= 2
    # exactly the running block on the accelerator; the VAE's halves separately
    assert all(units == (label,) for label, units in seen), [s for s in seen if s[1] != (s[0],)][:3]
    # the UNet's small remainder (conv_in, time embedding, conv_out) stays on the accelerator throughout
    assert all(placement.on_accelerator(m) for m in (unet.conv_in, unet.time_embedding, unet.conv_out))


def test_medvram_sdxl_offloads_sdxl_models_only(tmp_path):
    placement = RecordingPlacement()
    mgr = manager(tmp_path, ["--medvram-sdxl"], placement=placement, archs=("sd1", "sdxl"))
    sd1 = mgr.load(mgr.select("0_sd1"))
    assert sd1.extra.get("offloader") is None and placement.moves == 0
    assert next(sd1.unet.parameters()).device == mgr.device.device

    sdxl = mgr.load(mgr.select("1_sdxl"))
    off = sdxl.extra["offloader"]
    assert [name for name, _ in off.units] == ["text_encoder", "text_encoder_2", "unet", "vae"]
    seen = probe(sdxl, off, lowvram=False)
    run(sdxl, steps=2, width=32, height=32)
    expected = {"text_encoder": ("text_encoder",), "text_encoder_2": ("text_encoder_2",), "unet": ("unet",),
                "vae.decoder": ("vae",)}
    assert {label for label, _ in seen} == set(expected)
    assert all(units == expected[label] for label, units in seen), seen


def test_offload_flags_on_the_cpu_leave_the_model_in_place(tmp_path, caplog):
    caplog.set_level(logging.INFO, "sd.models")
    model = manager(tmp_path, ["--medvram"]).require()   # no placement stand-in: the real CPU case
    assert model.extra.get("offloader") is None
    assert "--medvram: the model runs on the CPU, in RAM already; nothing to move" in caplog.text
    assert model_options.ModelOptions.from_args(cmd_args.parse(["--lowvram", "--medvram"], env={})) \
        .memory.mode_for(False) == "lowvram"                   # A1111: --lowvram wins


# --- attention --------------------------------------------------------------------------------------------------
ATTENTION = [([], "CpuAttnProcessor"), (["--opt-sdp-attention"], "AttnProcessor2_0"),
             (["--opt-sdp-no-mem-attention"], "_SDPANoMemEfficient"),
             (["--opt-split-attention"], "SlicedAttnProcessor"), (["--opt-sub-quad-attention"], "SlicedAttnProcessor"),
             (["--opt-split-attention-invokeai"], "SlicedAttnProcessor"),
             (["--disable-opt-split-attention"], "AttnProcessor"), (["--xformers"], "AttnProcessor2_0"),
             (["--disable-opt-split-attention", "--xformers"], "AttnProcessor")]


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return manager(tmp_path_factory.mktemp("sd1")).require()


def unet_out(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 16, 16, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return model.unet(x, torch.tensor([500]), encoder_hidden_states=ctx).sample


@pytest.mark.parametrize("argv,processor", ATTENTION, ids=[" ".join(a) or "default" for a, _ in ATTENTION])
def test_each_attention_flag_installs_its_processor(sd1, argv, processor):
    model_options.apply(sd1, ModelOptions.from_args(cmd_args.parse(argv, env={})), CPU32)
    reference = None
    for net in (sd1.unet, sd1.vae):
        kinds = {type(p).__name__ for p in net.attn_processors.values()}
        assert kinds == {processor}, (net.__class__.__name__, kinds)
    out = unet_out(sd1)
    model_options.apply(sd1, ModelOptions(), CPU32)
    reference = unet_out(sd1)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)   # the same attention, computed differently


def test_xformers_without_cuda_says_so_once_and_uses_sdpa(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(model_options, "_said", set())
    caplog.set_level(logging.WARNING, "sd.models")
    mgr = manager(tmp_path, ["--xformers"], archs=("sd1", "sd1"))
    first = mgr.load(mgr.select("0_sd1"))
    second = mgr.load(mgr.select("1_sd1"))                 # a checkpoint switch applies the flag again ...
    for model in (first, second):
        assert model.extra["attention"] == "sdp"
        assert {type(p).__name__ for p in model.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    note = "--xformers: xformers runs on CUDA only and this model runs on cpu; using PyTorch's scaled-dot-product"
    assert caplog.text.count(note) == 1                    # ... but says so once
    # on CUDA without the package it says that instead
    kind, text = model_options.resolve_attention("xformers", torch.device("cuda"), xformers_available=False)
    assert kind == "sdp" and "xformers package is not installed" in text
    assert model_options.resolve_attention("xformers", torch.device("cuda"), xformers_available=True) == ("xformers", "")


# --- torch.compile, channels-last -----------------------------------------------------------------------------
def test_compile_wraps_the_unet(tmp_path, monkeypatch):
    calls = []

    def fake_compile(fn, **kwargs):   # a real compile takes minutes on this CPU: record it, run uncompiled
        calls.append((fn, kwargs))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = manager(tmp_path, ["--compile"]).require()
    assert model.extra["compiled"] and len(calls) == 1
    fn, kwargs = calls[0]
    assert kwargs == {"dynamic": False} and fn.__self__ is model.unet    # nn.Module.compile: the UNet's own call
    assert model.unet._compiled_call_impl is fn
    assert run(model, steps=1, width=32, height=32).images


def test_compile_is_left_out_with_offloading(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("compiled despite --medvram"))
    model = manager(tmp_path, ["--compile", "--medvram"], placement=RecordingPlacement()).require()
    assert not model.extra.get("compiled")
    assert "--compile is not used with --medvram" in caplog.text


def test_channels_last_flag(tmp_path):
    model = manager(tmp_path, ["--opt-channelslast"]).require()
    assert model.extra["channels_last"]
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not manager(tmp_path / "b").require().extra.get("channels_last")   # CPU default: off


# --- precision flags -------------------------------------------------------------------------------------------
@pytest.fixture
def restore_devices(monkeypatch):
    for name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer", "dtype",
                 "dtype_unet", "dtype_inference", "dtype_vae", "nan_check", "unet_needs_upcast"):
        monkeypatch.setattr(devices, name, getattr(devices, name))


@pytest.mark.parametrize("argv,unet,vae", [([], torch.float16, torch.float16), (["--no-half"], torch.float32,
                         torch.float32), (["--no-half-vae"], torch.float16, torch.float32),
                         (["--precision", "full"], torch.float32, torch.float32)])
def test_precision_flags_on_cuda(monkeypatch, argv, unet, vae):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # from_args only builds a torch.device
    config = devices.from_args(cmd_args.parse(argv, env={}))
    assert (config.device.type, config.dtype, config.vae_dtype) == ("cuda", unet, vae)


def test_upcast_sampling(monkeypatch, restore_devices):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = devices.from_args(cmd_args.parse(["--upcast-sampling"], env={}))
    assert config.upcast_sampling and config.dtype == torch.float16
    devices.use(config)
    assert devices.unet_needs_upcast and devices.dtype_inference == torch.float32 and devices.dtype_unet == torch.float16
    # with fp32 weights there is nothing to upcast
    assert not devices.from_args(cmd_args.parse(["--upcast-sampling", "--no-half"], env={})).upcast_sampling


def test_precision_flags_reach_the_loaded_weights_on_cpu(tmp_path):
    args = cmd_args.parse(["--precision", "half", "--no-half-vae"], env={})
    config = devices.from_args(args)
    assert (config.dtype, config.vae_dtype) == (torch.bfloat16, torch.float32)
    model = manager(tmp_path, device=config).require()
    assert model.unet.dtype == torch.bfloat16 and model.text_encoders[0].dtype == torch.bfloat16
    assert model.vae.dtype == torch.float32
    model = manager(tmp_path / "full", device=devices.from_args(cmd_args.parse(["--no-half"], env={}))).require()
    assert model.unet.dtype == model.vae.dtype == torch.float32
