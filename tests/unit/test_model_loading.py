"""Drop-in model files: tiny SD1/SD2/SDXL checkpoints in the LDM layout, loaded the way users' files are."""
from __future__ import annotations

import gc
import hashlib
import os
import pickle
import textwrap
from pathlib import Path

import psutil
import pytest
import torch

from modules import devices
from modules.models.hashing import HashCache, legacy_hash
from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
from modules.models.manager import ModelManager, NoModelError
from modules.models.registry import ModelRegistry
from modules.models.safe_load import ModelFileError
from tests.support.model_factory import make_tiny_components, manager_for, write_tiny_checkpoint


def assert_same_tensors(source: torch.nn.Module, loaded: torch.nn.Module, allow_missing: int = 0) -> int:
    src, dst = source.state_dict(), loaded.state_dict()
    missing = [k for k in src if k not in dst]
    assert len(missing) <= allow_missing, missing[:5]
    for key, value in dst.items():
        if key.endswith("position_ids"):
            continue
        assert key in src, f"unexpected tensor {key}"
        assert src[key].shape == value.shape, key
        assert torch.equal(src[key], value), f"tensor {key} differs"
    return len(dst)


CASES = [
    # arch, in_channels, file suffix, export kwargs, expected family label
    ("sd1", 4, ".safetensors", {}, "SD1.x"),
    ("sd1", 9, ".safetensors", {}, "SD1.x inpainting"),
    ("sd1", 4, ".ckpt", {}, "SD1.x"),
    ("sd2", 4, ".safetensors", {"extra_last_layer": True}, "SD2.x"),
    ("sd2", 9, ".safetensors", {"extra_last_layer": True}, "SD2.x inpainting"),
    ("sdxl", 4, ".safetensors", {}, "SDXL"),
]


@pytest.mark.parametrize("arch,in_ch,suffix,kw,label", CASES, ids=[f"{c[0]}-{c[1]}ch{c[2]}" for c in CASES])
def test_ldm_checkpoint_loads_with_every_tensor_equal(tmp_path, arch, in_ch, suffix, kw, label):
    path = tmp_path / "Stable-diffusion" / f"model_{arch}{suffix}"
    path.parent.mkdir(parents=True)
    comps = write_tiny_checkpoint(path, arch, seed=3, in_channels=in_ch, **kw)
    model = manager_for(tmp_path).require()
    assert model.spec.label == label
    assert assert_same_tensors(comps["unet"], model.unet) > 50
    assert_same_tensors(comps["vae"], model.vae)
    assert_same_tensors(comps["text_encoder"], model.text_encoders[0])
    if arch == "sdxl":
        assert_same_tensors(comps["text_encoder_2"], model.text_encoders[1])
    assert model.info.title == f"{path.name} [{hashlib.sha256(path.read_bytes()).hexdigest()[:10]}]"


def test_yaml_beside_checkpoint_overrides_detection(tmp_path):
    path = tmp_path / "Stable-diffusion" / "v_model.safetensors"
    path.parent.mkdir(parents=True)
    write_tiny_checkpoint(path, "sd2", seed=4, extra_last_layer=True)
    path.with_suffix(".yaml").write_text(textwrap.dedent("""
        model:
          target: ldm.models.diffusion.ddpm.LatentDiffusion
          params:
            parameterization: "v"
            scale_factor: 0.5
            unet_config:
              params: {image_size: 48, num_head_channels: 32}
            first_stage_config:
              params: {ddconfig: {ch_mult: [1, 2]}}
            cond_stage_config:
              target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
    """))
    mm = manager_for(tmp_path)
    mm.registry.refresh()
    model = mm.require()
    assert model.spec.prediction_type == "v_prediction"
    assert model.scheduler_config()["prediction_type"] == "v_prediction"
    assert model.spec.native_resolution == 96
    assert model.vae.config.scaling_factor == 0.5
    assert list(model.unet.config.attention_head_dim) == [2, 4]  # 64/32, 128/32 heads
    without_yaml = tmp_path / "other"
    (without_yaml / "Stable-diffusion").mkdir(parents=True)
    os.replace(path, without_yaml / "Stable-diffusion" / path.name)
    plain = manager_for(without_yaml).require()
    assert plain.spec.prediction_type == "epsilon" and plain.spec.native_resolution == 512


def test_registry_scans_recursively_and_skips_vae_files(tmp_path, tiny_sd1):
    ckdir = tmp_path / "Stable-diffusion"
    (ckdir / "sub").mkdir(parents=True)
    data = tiny_sd1.read_bytes()
    (ckdir / "sub" / "deep.safetensors").write_bytes(data)
    (ckdir / "top.ckpt").write_bytes(b"x" * 10)
    (ckdir / "top.vae.safetensors").write_bytes(b"y" * 10)
    (ckdir / "notes.txt").write_text("hello")
    reg = manager_for(tmp_path).registry
    assert [c.name for c in reg.checkpoints] == ["sub/deep.safetensors", "top.ckpt"]
    deep = reg.checkpoints[0]
    full = hashlib.sha256(data).hexdigest()
    assert deep.sha256 == full and deep.title == f"sub/deep.safetensors [{full[:10]}]"
    assert deep.model_name == "sub_deep"
    assert [v.name for v in reg.vaes] == ["top.vae.safetensors"]
    for query in (deep.title, "sub/deep.safetensors", "deep", full[:10], full, deep.legacy):
        assert reg.find_checkpoint(query) is deep, query


def test_hashes_legacy_and_cache(tmp_path):
    f = tmp_path / "blob.bin"
    payload = os.urandom(0x100000 + 0x10000 + 77)
    f.write_bytes(payload)
    assert legacy_hash(f) == hashlib.sha256(payload[0x100000:0x110000]).hexdigest()[:8]
    cache = HashCache(tmp_path / "cache.json")
    assert cache.sha256(f) == hashlib.sha256(payload).hexdigest()
    assert HashCache(tmp_path / "cache.json").sha256(f, compute=False) == hashlib.sha256(payload).hexdigest()
    f.write_bytes(payload + b"changed")  # size/mtime change invalidates the cached value
    assert HashCache(tmp_path / "cache.json").sha256(f, compute=False) is None


def test_malicious_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckdir = tmp_path / "Stable-diffusion"
    ckdir.mkdir()
    evil = ckdir / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"x": Evil()}}, f)
    torch.save({"state_dict": {"y": Evil()}}, ckdir / "evil2.ckpt")
    mm = manager_for(tmp_path)
    for name in ("evil.ckpt", "evil2.ckpt"):
        with pytest.raises(ModelFileError) as err:
            mm.load(mm.select(name))
        assert name in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()


def test_corrupt_file_keeps_previous_model(tmp_path, tiny_sd1):
    ckdir = tmp_path / "Stable-diffusion"
    ckdir.mkdir()
    good = ckdir / "good.safetensors"
    good.write_bytes(tiny_sd1.read_bytes())
    data = tiny_sd1.read_bytes()
    (ckdir / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (ckdir / "garbage.ckpt").write_bytes(os.urandom(4096))
    (ckdir / "wrong.safetensors").write_bytes(b"")
    from safetensors.torch import save_file
    save_file({"foo.weight": torch.zeros(3)}, str(ckdir / "notsd.safetensors"))
    mm = manager_for(tmp_path)
    mm.load(mm.select("good.safetensors"))
    for name in ("truncated.safetensors", "garbage.ckpt", "wrong.safetensors", "notsd.safetensors"):
        with pytest.raises(ModelFileError) as err:
            mm.load(mm.select(name))
        assert name in str(err.value)
        assert mm.model is not None and mm.model.info.name == "good.safetensors"


def test_no_model_gives_clear_message(tmp_path):
    (tmp_path / "Stable-diffusion").mkdir()
    with pytest.raises(NoModelError, match="put a .safetensors file in models/Stable-diffusion"):
        manager_for(tmp_path).require()


def test_vae_choices_automatic_none_and_file(tmp_path):
    ckdir, vaedir = tmp_path / "Stable-diffusion", tmp_path / "VAE"
    ckdir.mkdir()
    vaedir.mkdir()
    own = write_tiny_checkpoint(ckdir / "m.safetensors", "sd1", seed=5)
    other = make_tiny_components("sd1", seed=9)["vae"]
    vae_sd = {k.removeprefix("first_stage_model."): v for k, v in
              to_ldm_state_dict(own["unet"], other, own["text_encoder"], arch="sd1").items()
              if k.startswith("first_stage_model.")}
    save_checkpoint(vae_sd, vaedir / "other.safetensors")
    save_checkpoint(vae_sd, ckdir / "m.vae.safetensors")
    setting = {"value": "Automatic"}
    reg = ModelRegistry([ckdir], vaedir, HashCache(tmp_path / "h.json"))
    mm = ModelManager(reg, devices.from_args(None), tmp_path / "tok", vae_setting=lambda: setting["value"])
    model = mm.require()
    assert model.vae_file == ckdir / "m.vae.safetensors"  # Automatic picks the VAE beside the checkpoint
    assert_same_tensors(other, model.vae)
    setting["value"] = "None"
    mm.reload_vae()
    assert model.vae_file is None
    assert_same_tensors(own["vae"], model.vae)
    setting["value"] = "other.safetensors"
    mm.reload_vae()
    assert model.vae_file == vaedir / "other.safetensors"
    assert_same_tensors(other, model.vae)
    setting["value"] = "missing.pt"
    with pytest.raises(KeyError, match="unknown VAE"):
        mm.reload_vae()


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _small_sd1_checkpoint(path: Path, seed: int) -> None:
    """~27M parameters (a 512-wide text encoder): big enough that keeping one stale copy would break the 10% bound."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from tests.support.model_factory import tiny_unet_config
    comps = make_tiny_components("sd1", seed=seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**tiny_unet_config("sd1"), "cross_attention_dim": 512})
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=512, intermediate_size=512,
                                        num_hidden_layers=2, num_attention_heads=8, max_position_embeddings=77,
                                        hidden_act="quick_gelu"))
    save_checkpoint(to_ldm_state_dict(unet, comps["vae"], text, arch="sd1"), path)


def test_switching_checkpoints_frees_memory(tmp_path):
    ckdir = tmp_path / "Stable-diffusion"
    ckdir.mkdir()
    _small_sd1_checkpoint(ckdir / "a.safetensors", 1)
    _small_sd1_checkpoint(ckdir / "b.safetensors", 2)
    mm = manager_for(tmp_path)
    mm.load(mm.select("a.safetensors"))
    mm.load(mm.select("b.safetensors"))
    model_bytes = sum(p.numel() * 4 for p in mm.model.text_encoders[0].parameters())
    baseline = _rss()
    for _ in range(5):
        mm.load(mm.select("a.safetensors"))
        mm.load(mm.select("b.safetensors"))
    grown = _rss() - baseline
    # one stale copy of a model would add at least its text encoder: the bound is relative to the model, not to the
    # process (whose size depends on what other tests loaded before, e.g. Gradio)
    assert grown < 0.6 * model_bytes, (f"RSS grew by {grown / 2**20:.1f} MiB over {baseline / 2**20:.1f} MiB "
                                       f"(text encoder {model_bytes / 2**20:.1f} MiB)")


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_diffusers_folder_loads(tmp_path, arch):
    from diffusers import EulerDiscreteScheduler
    folder = tmp_path / "Stable-diffusion" / f"my-{arch}-model"
    comps = make_tiny_components(arch, seed=7)
    for name, module in comps.items():
        module.save_pretrained(folder / name)
    EulerDiscreteScheduler(prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    mm = manager_for(tmp_path)
    assert [c.name for c in mm.registry.checkpoints] == [f"my-{arch}-model"]  # its sub-files are not listed
    model = mm.require()
    assert model.spec.family == arch and model.spec.prediction_type == "v_prediction"
    for key in comps:
        loaded = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoders[0]}.get(key) \
            or model.text_encoders[1]
        assert_same_tensors(comps[key], loaded)


def test_demo_model_is_the_fallback_only(tmp_path):
    """The bundled demo model is listed and loaded when no other checkpoint is present, never chosen over one."""
    demo = tmp_path / "bundled" / "demo" / "demo-shapes.safetensors"
    demo.parent.mkdir(parents=True)
    write_tiny_checkpoint(demo, "sd1", seed=3)
    ckdir = tmp_path / "Stable-diffusion"
    ckdir.mkdir()

    def manager():
        reg = ModelRegistry([ckdir], tmp_path / "VAE", HashCache(tmp_path / "h.json"), fallback_checkpoint=demo)
        return ModelManager(reg, devices.from_args(None), tmp_path / "tok")

    mm = manager()
    assert [c.name for c in mm.registry.checkpoints] == ["demo/demo-shapes.safetensors"]
    assert mm.require().info.filename == demo.resolve()
    # a user's file (sorting after "demo" by name) is the default as soon as it is there; the demo is no longer listed
    write_tiny_checkpoint(ckdir / "zz-user.safetensors", "sd1", seed=4)
    mm = manager()
    assert [c.name for c in mm.registry.checkpoints] == ["zz-user.safetensors"]
    assert mm.default_checkpoint().name == "zz-user.safetensors"
    # the demo inside the scanned folder (the default data dir) is listed beside users' files but is not the default
    reg = ModelRegistry([demo.parent.parent, ckdir], tmp_path / "VAE", HashCache(tmp_path / "h.json"),
                        fallback_checkpoint=demo)
    assert {c.name for c in reg.checkpoints} == {"demo/demo-shapes.safetensors", "zz-user.safetensors"}
    assert reg.default_checkpoint().name == "zz-user.safetensors"
