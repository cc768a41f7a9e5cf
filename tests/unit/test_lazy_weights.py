"""Checkpoints read tensor by tensor into the precision they run in (issue #21's memory bullet), on real files."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.devices import DeviceConfig
from modules.models.hashing import HashCache
from modules.models.lazy_weights import LazyStateDict, SafetensorsFormatError
from modules.models.manager import ModelManager
from modules.models.registry import ModelRegistry
from modules.models.safe_load import ModelFileError
from tests.support.model_factory import write_tiny_checkpoint


def test_values_equal_safetensors_own_reader_and_cast_on_read(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).half(), "c": torch.arange(6, dtype=torch.int64),
               "d": torch.randn(2, 2).bfloat16(), "empty": torch.zeros(0, 4)}
    save_file(tensors, str(path), metadata={"k": "v"})
    reference = load_file(str(path))
    sd = LazyStateDict(path)
    assert set(sd) == set(reference) and len(sd) == 5 and sd.metadata == {"k": "v"}
    for key, value in reference.items():
        assert sd[key].dtype == value.dtype and torch.equal(sd[key], value), key
    assert sd.shape("a") == (3, 5) and sd.stored_dtype("b") == torch.float16
    sd.set_dtypes(lambda key: torch.bfloat16)
    assert sd["a"].dtype == torch.bfloat16 and torch.equal(sd["a"], reference["a"].bfloat16())
    assert sd["b"].dtype == torch.bfloat16 and torch.equal(sd["b"], reference["b"].bfloat16())
    assert sd["c"].dtype == torch.int64 and torch.equal(sd["c"], reference["c"])  # integers are never cast
    assert sd["empty"].shape == (0, 4) and sd["empty"].dtype == torch.bfloat16


def test_same_precision_is_a_private_mapping_of_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(1024)}, str(path))
    before = path.read_bytes()
    sd = LazyStateDict(path)
    w = sd["w"]
    w.add_(1)  # an in-place patch (LoRA) changes the process's copy, never the file
    assert torch.equal(w, torch.full((1024,), 2.0))
    assert path.read_bytes() == before
    assert torch.equal(LazyStateDict(path)["w"], torch.ones(1024))
    sd.release()
    gc.collect()
    assert float(w.sum()) == 2048.0  # the tensor keeps its mapping alive after the mapping object is dropped


@pytest.mark.parametrize("data,why", [(b"\x01", "too short"), (b"\x08" + b"\x00" * 7 + b"not json", "not JSON"),
                                      (b"\xff" * 8, "too large")])
def test_bad_headers_are_named(tmp_path, data, why):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(SafetensorsFormatError, match=why):
        LazyStateDict(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SafetensorsFormatError, match="outside the file"):
        LazyStateDict(path)


def _manager(tmp_path, dtype, vae_dtype):
    reg = ModelRegistry([tmp_path / "Stable-diffusion"], tmp_path / "VAE", HashCache(tmp_path / "hashes.json"))
    return ModelManager(reg, DeviceConfig(torch.device("cpu"), dtype, vae_dtype), tmp_path / "tok")


def test_checkpoint_loads_each_component_in_its_precision(tmp_path):
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    path.parent.mkdir()
    comps = write_tiny_checkpoint(path, "sd1", seed=1)
    model = _manager(tmp_path, torch.bfloat16, torch.float32).require()
    assert {p.dtype for p in model.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.text_encoders[0].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vae.parameters()} == {torch.float32}
    src = comps["unet"].state_dict()
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value, src[key].bfloat16()), key
    vae_src = comps["vae"].state_dict()
    for key, value in model.vae.state_dict().items():
        assert torch.equal(value, vae_src[key]), key


def test_switching_checkpoints_frees_the_old_one(tmp_path):
    folder = tmp_path / "Stable-diffusion"
    folder.mkdir()
    write_tiny_checkpoint(folder / "a.safetensors", "sd1", seed=1)
    write_tiny_checkpoint(folder / "b.safetensors", "sd1", seed=2)
    mm = _manager(tmp_path, torch.bfloat16, torch.float32)
    first = mm.load(mm.select("a.safetensors"))
    refs = [weakref.ref(first.unet), weakref.ref(first.vae), weakref.ref(first.text_encoders[0])]
    weight = weakref.ref(next(first.unet.parameters()))
    del first
    mm.load(mm.select("b.safetensors"))
    gc.collect()
    assert all(r() is None for r in refs) and weight() is None
    assert mm.model.info.filename.name == "b.safetensors"


def test_unreadable_safetensors_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "Stable-diffusion" / "broken.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"\x10" + b"\x00" * 7 + b"{not a header}!!")
    with pytest.raises(ModelFileError, match="broken.safetensors"):
        _manager(tmp_path, torch.bfloat16, torch.float32).require()


def test_bf16_cpu_model_runs_channels_last_with_the_same_image(tmp_path):
    import numpy as np

    from tests.support.engine_helpers import run
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    path.parent.mkdir()
    write_tiny_checkpoint(path, "sd1", seed=1)
    model = _manager(tmp_path, torch.bfloat16, torch.bfloat16).require()
    conv = model.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    fast = np.asarray(run(model, steps=2).images[0]).astype(np.int16)
    model.unet.to(memory_format=torch.contiguous_format)
    model.vae.to(memory_format=torch.contiguous_format)
    plain = np.asarray(run(model, steps=2).images[0]).astype(np.int16)
    assert np.abs(fast - plain).mean() < 2.0  # summation order only


def test_fp32_cpu_model_keeps_the_contiguous_layout(tmp_path):
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    path.parent.mkdir()
    write_tiny_checkpoint(path, "sd1", seed=1)
    model = _manager(tmp_path, torch.float32, torch.float32).require()
    assert model.unet.conv_in.weight.is_contiguous()


def test_bf16_vae_decodes_its_last_layer_in_fp32(tmp_path):
    from modules.engine.vae_codec import decode_to_tensor
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    path.parent.mkdir()
    write_tiny_checkpoint(path, "sd1", seed=1)
    model = _manager(tmp_path, torch.bfloat16, torch.bfloat16).require()
    assert model.vae.dtype == torch.bfloat16 and model.vae.decoder.conv_out.weight.dtype == torch.float32
    seen = []
    model.vae.decoder.conv_out.register_forward_hook(lambda m, a, out: seen.append((a[0].dtype, out.dtype)))
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images = decode_to_tensor(model, z)
    assert seen == [(torch.float32, torch.float32)] and images.shape == (1, 3, 16, 16)
    model.vae.to(torch.float32)  # what the NaN fall-back does: still decodes
    assert decode_to_tensor(model, z).shape == (1, 3, 16, 16)
