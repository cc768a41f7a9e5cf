"""Round trip: diffusers components -> LDM single-file layout -> diffusers' own converters."""

from __future__ import annotations

import functools
import os

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    CHECKPOINT_KEY_NAMES,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    create_diffusers_clip_model_from_ldm,
)
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict
from tests.support.model_factory import TINY_VAE_SCALE_FACTOR, make_tiny_components, write_tiny_checkpoint

CASES = [("sd1", 4), ("sd1", 9), ("sd2", 4), ("sd2", 9), ("sdxl", 4)]
CASE_IDS = ["sd1", "sd1-inpaint", "sd2", "sd2-inpaint", "sdxl"]

OPEN_CLIP_PREFIX = {"sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model."}
EXPECTED_PREFIXES = {
    "sd1": ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."),
    "sd2": ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."),
    "sdxl": (
        "model.diffusion_model.",
        "first_stage_model.",
        "conditioner.embedders.0.transformer.text_model.",
        "conditioner.embedders.1.model.",
    ),
}


@functools.lru_cache(maxsize=None)
def _case(arch: str, in_channels: int):
    comps = make_tiny_components(arch, seed=0, in_channels=in_channels)
    sd = to_ldm_state_dict(
        comps["unet"], comps["vae"], comps["text_encoder"], comps.get("text_encoder_2"), arch=arch
    )
    return comps, sd


def _strip_text_model(sd: dict, model) -> dict:
    """transformers >= 5.6 CLIPTextModel has no `text_model.` wrapper; diffusers strips it too."""
    if hasattr(model, "text_model"):
        return sd
    return {k.removeprefix("text_model."): v for k, v in sd.items()}


def _assert_same_tensors(reference: dict, converted: dict, what: str) -> None:
    missing = sorted(set(reference) - set(converted))
    unexpected = sorted(set(converted) - set(reference))
    assert not missing, f"{what}: lost in round trip: {missing[:10]}"
    assert not unexpected, f"{what}: unexpected after round trip: {unexpected[:10]}"
    for k, ref in reference.items():
        got = converted[k]
        assert got.shape == ref.shape, f"{what}: {k}: {tuple(got.shape)} != {tuple(ref.shape)}"
        assert torch.equal(got, ref), f"{what}: {k}: values differ"


def _load_strict(model_cls, config, state_dict):
    fresh = model_cls.from_config(config) if hasattr(model_cls, "from_config") else model_cls(config)
    result = fresh.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return fresh


def _text_encoders(arch, sd, comps):
    """(name, source model, converted state dict) for each text encoder, via diffusers."""
    te = comps["text_encoder"]
    if arch == "sd2":
        conv = convert_open_clip_checkpoint(te, sd, prefix=OPEN_CLIP_PREFIX["sd2"])
    else:
        conv = convert_ldm_clip_checkpoint(sd)
    out = [("text_encoder", te, _strip_text_model(conv, te))]
    if arch == "sdxl":
        te2 = comps["text_encoder_2"]
        conv2 = convert_open_clip_checkpoint(te2, sd, prefix=OPEN_CLIP_PREFIX["sdxl"])
        out.append(("text_encoder_2", te2, _strip_text_model(conv2, te2)))
    return out


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("arch,in_channels", CASES, ids=CASE_IDS)
def test_unet_round_trip(arch, in_channels):
    comps, sd = _case(arch, in_channels)
    unet = comps["unet"]
    conv = convert_ldm_unet_checkpoint(sd, unet.config)
    _assert_same_tensors(unet.state_dict(), conv, "unet")
    _load_strict(UNet2DConditionModel, unet.config, conv)
    assert sd["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == in_channels


@pytest.mark.parametrize("arch,in_channels", CASES, ids=CASE_IDS)
def test_vae_round_trip(arch, in_channels):
    comps, sd = _case(arch, in_channels)
    vae = comps["vae"]
    # LDM stores the mid-block attention projections as 1x1 convolutions
    for part in ("encoder", "decoder"):
        for name in ("q", "k", "v", "proj_out"):
            w = sd[f"first_stage_model.{part}.mid.attn_1.{name}.weight"]
            assert w.ndim == 4 and w.shape[2:] == (1, 1)
    # convert_ldm_vae_checkpoint squeezes them back to Linear weights
    conv = convert_ldm_vae_checkpoint(sd, vae.config)
    _assert_same_tensors(vae.state_dict(), conv, "vae")
    _load_strict(AutoencoderKL, vae.config, conv)


@pytest.mark.parametrize("arch,in_channels", CASES, ids=CASE_IDS)
def test_text_encoder_round_trip(arch, in_channels):
    comps, sd = _case(arch, in_channels)
    for name, model, conv in _text_encoders(arch, sd, comps):
        _assert_same_tensors(model.state_dict(), conv, name)
        _load_strict(type(model), model.config, conv)


@pytest.mark.parametrize("arch,in_channels", CASES, ids=CASE_IDS)
def test_key_layout_and_counts(arch, in_channels):
    comps, sd = _case(arch, in_channels)
    prefixes = EXPECTED_PREFIXES[arch]
    stray = [k for k in sd if not k.startswith(prefixes)]
    assert not stray, stray[:10]

    def count(prefix):
        return sum(k.startswith(prefix) for k in sd)

    assert count("model.diffusion_model.") == len(comps["unet"].state_dict())
    assert count("first_stage_model.") == len(comps["vae"].state_dict())
    hf_prefix = {"sd1": prefixes[2], "sdxl": prefixes[2]}.get(arch)
    if hf_prefix:
        assert count(hf_prefix) == len(comps["text_encoder"].state_dict())
    if arch in OPEN_CLIP_PREFIX:
        model = comps["text_encoder_2" if arch == "sdxl" else "text_encoder"]
        n_layers = model.config.num_hidden_layers
        # q/k/v weights+biases (6 tensors) become in_proj_weight/in_proj_bias (2) per layer;
        # sd2 gains an identity text_projection
        expected = len(model.state_dict()) - 4 * n_layers + (1 if arch == "sd2" else 0)
        assert count(OPEN_CLIP_PREFIX[arch]) == expected

    # the keys diffusers uses to recognise the text encoder families
    if arch == "sd1":
        assert CHECKPOINT_KEY_NAMES["clip"] in sd
    elif arch == "sd2":
        assert CHECKPOINT_KEY_NAMES["open_clip"] in sd
        assert torch.equal(sd["cond_stage_model.model.text_projection"], torch.eye(64))
    else:
        assert CHECKPOINT_KEY_NAMES["clip_sdxl"] in sd
        assert CHECKPOINT_KEY_NAMES["open_clip_sdxl"] in sd
        proj = comps["text_encoder_2"].text_projection.weight
        assert torch.equal(sd["conditioner.embedders.1.model.text_projection"], proj.T)
        assert "model.diffusion_model.label_emb.0.0.weight" in sd


def test_sd1_upsampler_and_downsampler_indices():
    comps, sd = _case("sd1", 4)
    p = "model.diffusion_model."
    # down: [conv_in] [res+attn] [op] [res]; up: [res] [res+upsample(.1)] [res+attn] [res+attn]
    assert sd[p + "input_blocks.2.0.op.weight"] is not None
    assert p + "input_blocks.1.1.proj_in.weight" in sd
    assert not any(k.startswith(p + "input_blocks.3.1.") for k in sd)
    assert torch.equal(sd[p + "output_blocks.1.1.conv.weight"], comps["unet"].up_blocks[0].upsamplers[0].conv.weight)
    assert p + "output_blocks.2.1.proj_in.weight" in sd
    assert sd[p + "output_blocks.2.1.proj_in.weight"].ndim == 4  # use_linear_projection=False -> 1x1 conv
    # decoder levels are numbered by resolution: diffusers up_blocks[0] is LDM up.1
    vae = comps["vae"]
    assert torch.equal(sd["first_stage_model.decoder.up.1.upsample.conv.weight"], vae.decoder.up_blocks[0].upsamplers[0].conv.weight)


def test_sdxl_upsampler_after_attention():
    comps, sd = _case("sdxl", 4)
    p = "model.diffusion_model."
    assert torch.equal(sd[p + "output_blocks.1.2.conv.weight"], comps["unet"].up_blocks[0].upsamplers[0].conv.weight)
    assert p + "middle_block.1.transformer_blocks.1.attn2.to_k.weight" in sd
    # down: [conv_in] [res] [op] [res+attn with 2 transformer blocks]; no attention in block 0
    assert not any(k.startswith(p + "input_blocks.1.1.") for k in sd)
    assert sd[p + "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight"].shape[-1] == 96


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_diffusers_clip_loader_accepts_export(arch, tmp_path):
    """diffusers' single-file CLIP loader (family detection included) rebuilds identical weights."""
    comps, sd = _case(arch, 4)
    names = [("text_encoder", CLIPTextModel)]
    if arch == "sdxl":
        names.append(("text_encoder_2", CLIPTextModelWithProjection))
    for name, cls in names:
        cfg_dir = tmp_path / name
        comps[name].config.save_pretrained(cfg_dir)
        model = create_diffusers_clip_model_from_ldm(cls, sd, config=str(cfg_dir), local_files_only=True)
        _assert_same_tensors(comps[name].state_dict(), model.state_dict(), name)


def test_sd2_extra_last_layer():
    comps = make_tiny_components("sd2")
    te = comps["text_encoder"]
    n = te.config.num_hidden_layers
    sd = to_ldm_state_dict(comps["unet"], comps["vae"], te, arch="sd2", extra_last_layer=True)
    prefix = "cond_stage_model.model.transformer.resblocks."
    extra = {k[len(f"{prefix}{n}.") :]: v for k, v in sd.items() if k.startswith(f"{prefix}{n}.")}
    last = {k[len(f"{prefix}{n - 1}.") :]: v for k, v in sd.items() if k.startswith(f"{prefix}{n - 1}.")}
    assert extra.keys() == last.keys() and len(extra) == 12
    assert all(extra[k].shape == last[k].shape for k in extra)
    # deterministic
    sd_again = to_ldm_state_dict(comps["unet"], comps["vae"], te, arch="sd2", extra_last_layer=True)
    assert all(torch.equal(sd_again[prefix + f"{n}." + k], v) for k, v in extra.items())
    # diffusers only skips resblocks.23 (real SD2); for the tiny model the extra layer comes
    # back as encoder.layers.<n>, everything else is unchanged
    conv = _strip_text_model(convert_open_clip_checkpoint(te, sd, prefix="cond_stage_model.model."), te)
    extra_conv = {k for k in conv if k.startswith(f"encoder.layers.{n}.")}
    assert len(extra_conv) == 16
    _assert_same_tensors(te.state_dict(), {k: v for k, v in conv.items() if k not in extra_conv}, "sd2 te")


def test_argument_validation():
    comps = make_tiny_components("sd1")
    with pytest.raises(ValueError):
        to_ldm_state_dict(comps["unet"], comps["vae"], comps["text_encoder"], arch="sd3")
    with pytest.raises(ValueError):
        to_ldm_state_dict(comps["unet"], comps["vae"], comps["text_encoder"], arch="sdxl")
    with pytest.raises(ValueError):
        to_ldm_state_dict(comps["unet"], comps["vae"], comps["text_encoder"], comps["text_encoder"], arch="sd1")
    with pytest.raises(ValueError):
        to_ldm_state_dict(comps["unet"], comps["vae"], comps["text_encoder"], arch="sd1", extra_last_layer=True)
    # a parameter without an LDM counterpart is an error, not silently dropped
    comps["unet"].register_parameter("stray", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="stray"):
        to_ldm_state_dict(comps["unet"], comps["vae"], comps["text_encoder"], arch="sd1")


# --------------------------------------------------------------------------- factory


def test_factory_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = make_tiny_components("sd1", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = make_tiny_components("sd1", seed=3)
    c = make_tiny_components("sd1", seed=4)
    w = "conv_in.weight"
    assert torch.equal(a["unet"].state_dict()[w], b["unet"].state_dict()[w])
    assert not torch.equal(a["unet"].state_dict()[w], c["unet"].state_dict()[w])
    # norm weights are perturbed too, so swapped mappings cannot go unnoticed
    assert not torch.equal(a["unet"].conv_norm_out.weight, torch.ones(32))


@pytest.mark.parametrize("arch,in_channels", CASES, ids=CASE_IDS)
@torch.no_grad()
def test_tiny_components_run(arch, in_channels):
    comps, _ = _case(arch, in_channels)
    unet, vae, te = comps["unet"], comps["vae"], comps["text_encoder"]
    image = torch.randn(1, 3, 16, 16)
    latent = vae.encode(image).latent_dist.mean
    assert latent.shape == (1, 4, 16 // TINY_VAE_SCALE_FACTOR, 16 // TINY_VAE_SCALE_FACTOR)
    assert vae.decode(latent).sample.shape == image.shape
    ids = torch.randint(0, 49408, (1, 77))
    added = None
    if arch == "sdxl":
        te2 = comps["text_encoder_2"]
        h1 = te(ids, output_hidden_states=True).hidden_states[-2]
        out2 = te2(ids, output_hidden_states=True)
        ctx = torch.cat([h1, out2.hidden_states[-2]], dim=-1)
        added = {"text_embeds": out2.text_embeds, "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])}
    else:
        ctx = te(ids).last_hidden_state
    assert ctx.shape[-1] == unet.config.cross_attention_dim
    sample = torch.randn(1, in_channels, 8, 8)
    out = unet(sample, 10, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("ext", [".safetensors", ".ckpt"])
def test_save_checkpoint_round_trip(tmp_path, ext):
    _, sd = _case("sdxl", 4)
    path = tmp_path / f"model{ext}"
    save_checkpoint(sd, path)
    if ext == ".safetensors":
        loaded = load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        assert set(loaded) == {"state_dict"}
        loaded = loaded["state_dict"]
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert os.listdir(tmp_path) == [path.name]  # no temp file left behind


def test_save_checkpoint_dtype_views_and_errors(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    sd = {"a": base[:6], "b": base[6:].view(2, 3), "c": base.view(3, 4).T, "i": torch.arange(3)}
    path = tmp_path / "half.safetensors"
    save_checkpoint(sd, path, dtype=torch.float16, metadata={"format": "pt"})
    loaded = load_file(str(path))
    assert loaded["a"].dtype == torch.float16 and loaded["i"].dtype == torch.int64
    assert torch.equal(loaded["c"].float(), base.view(3, 4).T)
    assert torch.equal(loaded["b"].float(), base[6:].view(2, 3))
    with pytest.raises(ValueError):
        save_checkpoint(sd, tmp_path / "model.bin")
    assert sorted(os.listdir(tmp_path)) == ["half.safetensors"]


def test_write_tiny_checkpoint(tmp_path):
    path = tmp_path / "sub" / "tiny-inpaint.safetensors"
    comps = write_tiny_checkpoint(path, "sd1", seed=1, in_channels=9, dtype=torch.float16)
    sd = load_file(str(path))
    assert sd["model.diffusion_model.input_blocks.0.0.weight"].shape == (32, 9, 3, 3)
    assert sd["model.diffusion_model.input_blocks.0.0.weight"].dtype == torch.float16
    conv = convert_ldm_unet_checkpoint(sd, comps["unet"].config)
    ref = comps["unet"].state_dict()
    assert conv.keys() == ref.keys()
    assert all(torch.equal(conv[k], ref[k].half()) for k in ref)
