"""Control model files (CONTROLNET-REFERENCE §1.6, §2): listing, names and matching; every layout of §2.2/§2.3
recognised and loaded for the tiny sd1/sd2/sdxl checkpoints (loaded with the web UI's own loader) with the same
outputs as the diffusers module the file was written from, and outputs the tiny UNets take; difference models and
Control-LoRA merged with the loaded UNet; families that do not fit refused with a clear message before sampling;
unsupported families named; the LRU cache; the demo ControlNet as tools/demo_model loads it."""
from __future__ import annotations

import hashlib
import pickle
import re

import pytest
import torch

from modules.controlnet import control_models as cm
from modules.controlnet.control_models import ModelCache, load
from modules.controlnet.model_files import ControlModelFile, find, scan
from modules.models.safe_load import ModelFileError
from tests.support import controlnet_factory as cf
from tests.support.model_factory import manager_for, write_tiny_checkpoint

SMALL_FILE_HASH = "e3b0c442"        # sha256 of nothing: every file under 1 MiB (§0.6)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The tiny checkpoints as the web UI loads them (modules.models' SDModel), by arch."""
    out = {}
    for arch in ("sd1", "sd2", "sdxl"):
        root = tmp_path_factory.mktemp(f"ckpt_{arch}")
        path = root / "Stable-diffusion" / f"tiny_{arch}.safetensors"
        path.parent.mkdir(parents=True)
        write_tiny_checkpoint(path, arch, seed=1, **({"extra_last_layer": True} if arch == "sd2" else {}))
        out[arch] = manager_for(root).require()
    return out


def _file(path) -> ControlModelFile:
    [f] = scan([path.parent])
    assert f.path == path
    return f


def _inputs(sd_model, batch: int = 1, seed: int = 0):
    """A latent, timestep, text context, SDXL added conditions and a control image at the image size."""
    g = torch.Generator().manual_seed(seed)
    cfg = sd_model.unet.config
    x = torch.randn(batch, cfg.in_channels, 8, 8, generator=g)
    ctx = torch.randn(batch, 7, cfg.cross_attention_dim, generator=g)
    added = None
    if cfg.addition_embed_type == "text_time":
        text = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        added = {"text_embeds": torch.randn(batch, text, generator=g), "time_ids": torch.rand(batch, 6, generator=g)}
    f = sd_model.vae_scale_factor
    hint = torch.rand(batch, 3, 8 * f, 8 * f, generator=g)
    return x, torch.tensor(500), ctx, added, hint


def _unet(sd_model, x, t, ctx, added, **residuals):
    with torch.no_grad():
        return sd_model.unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added, return_dict=False,
                             **residuals)[0]


def _n_skips(sd_model) -> int:
    """How many skip connections (= ControlNet down residuals) the UNet has."""
    cfg = sd_model.unet.config
    n = len(cfg.down_block_types)
    return 1 + n * cfg.layers_per_block + (n - 1)


def assert_unet_takes_residuals(sd_model, model, x, t, ctx, added, hint):
    down, mid = model.controlnet_residuals(x, t, ctx, hint, added)
    assert len(down) == _n_skips(sd_model)
    plain = _unet(sd_model, x, t, ctx, added)
    steered = _unet(sd_model, x, t, ctx, added, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid)
    assert steered.shape == plain.shape and not torch.allclose(steered, plain)
    return down, mid


def _reference(cn, x, t, ctx, added, hint):
    with torch.no_grad():
        d, m = cn(x[:, :4], t, encoder_hidden_states=ctx, controlnet_cond=hint, added_cond_kwargs=added,
                  return_dict=False)
    return list(d), m


def assert_same(a, b, atol=1e-6):
    """The same residuals (up to float rounding: files read from memory-mapped safetensors can take other SIMD
    paths than the module they were written from)."""
    (da, ma), (db, mb) = a, b
    assert len(da) == len(db)
    for p, q in zip(da + [ma], db + [mb]):
        assert p.shape == q.shape
        assert torch.allclose(p, q, atol=atol, rtol=1e-5), (p - q).abs().max()


def assert_same_weights(model, module, exact=True):
    want, got = module.state_dict(), model.module.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]) if exact else torch.allclose(want[k], got[k], atol=1e-6), k


# --------------------------------------------------------------------------------------------------- listing

def test_scan_lists_in_folder_order_sorted_by_basename_first_title_wins(tmp_path):
    a, b = tmp_path / "models" / "ControlNet", tmp_path / "extensions" / "sd-webui-controlnet" / "models"
    big = bytes(range(256)) * (0x110000 // 256)            # over 1 MiB + 64 KiB: a real legacy hash
    for rel, data in [("zeta.pth", b"z"), ("sub/beta.safetensors", b"b"), ("None.pt", b"n"), ("cfg.yaml", b"y"),
                      ("UPPER.PTH", b"u"), ("gamma.bin", big), ("notes.txt", b"t")]:
        (a / rel).parent.mkdir(parents=True, exist_ok=True)
        (a / rel).write_bytes(data)
    (b / "deep").mkdir(parents=True)
    (b / "alpha.ckpt").write_bytes(b"a")
    (b / "zeta.pth").write_bytes(b"other bytes, same 1 MiB hash")      # same title as a/zeta.pth: a's is kept
    (b / "deep" / "omega.pt").write_bytes(big[:10] + b"x")
    (b / "deep" / "loop").symlink_to(b, target_is_directory=True)     # followed, each real folder once
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "linked.safetensors").write_bytes(b"l")
    (b / "shared_models").symlink_to(shared, target_is_directory=True)
    folder = b / "controlnet-canny-sdxl-1.0"                           # a diffusers folder, listed by its name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(big)

    files = scan([a, tmp_path / "missing", b])
    big_hash = hashlib.sha256(big[0x100000:0x110000]).hexdigest()[:8]
    assert [f.title for f in files] == [
        f"beta [{SMALL_FILE_HASH}]", f"gamma [{big_hash}]", f"zeta [{SMALL_FILE_HASH}]",
        f"alpha [{SMALL_FILE_HASH}]", f"controlnet-canny-sdxl-1.0 [{big_hash}]", f"linked [{SMALL_FILE_HASH}]",
        f"omega [{SMALL_FILE_HASH}]"]
    assert files[2].path == a / "zeta.pth"
    assert files[4].path == folder and files[4].weights_path == folder / "diffusion_pytorch_model.safetensors"
    assert files[1].hash8 == big_hash != SMALL_FILE_HASH
    assert scan([b, a])[0].title == f"alpha [{SMALL_FILE_HASH}]"     # the given folder order


def test_find_exact_title_then_stem_then_shortest_containing(tmp_path):
    files = [ControlModelFile(tmp_path / f"{s}.pth", s, h) for s, h in [
        ("control_v11p_sd15_canny", "d14c016b"), ("control_canny-fp16", "e3fe7712"),
        ("Control_SD15_Openpose", "fef5e48e"), ("control_sd15_openpose_extra", "fef5e48e"),
        ("t2iadapter_canny_sd14v1", "12345678")]]
    by = {f.stem: f for f in files}
    assert find("control_v11p_sd15_canny [d14c016b]", files) is by["control_v11p_sd15_canny"]
    assert find("control_sd15_openpose", files) is by["Control_SD15_Openpose"]      # bare stem, any case
    assert find("CANNY", files) is by["control_canny-fp16"]                         # shortest containing
    assert find("sd14v1", files) is by["t2iadapter_canny_sd14v1"]
    # a title copied from another machine (other hash) still finds the stem
    assert find("control_v11p_sd15_canny [00000000]", files) is by["control_v11p_sd15_canny"]
    for nothing in ("None", "", None, "depth"):
        assert find(nothing, files) is None


# --------------------------------------------------------------------------------------------------- ControlNets

CONTROLNET_LAYOUTS = [
    # (arch, variant, file name, writer, exact)
    ("sd1", "full", "control_v11p_tiny_canny.pth", cf.write_pth, True),
    ("sd1", "full", "control_canny-fp16.safetensors", cf.write_pruned, False),
    ("sd1", "full", "control_v11e_sd15_shuffle.safetensors", cf.write_pth, True),
    ("sd1", "full", "diffusers_tiny_canny.safetensors", cf.write_diffusers_file, True),
    ("sd1", "full", "controlnet-tiny-depth", cf.write_diffusers_folder, True),
    ("sd2", "full", "controlnet-sd21-tiny-canny.pth", cf.write_pth, True),
    ("sdxl", "full", "controlnet-tiny-sdxl.safetensors", cf.write_pth, True),
    ("sdxl", "mid", "controlnet-tiny-sdxl-mid.safetensors", cf.write_pth, True),
    ("sdxl", "small", "controlnet-tiny-sdxl-small", cf.write_diffusers_folder, True),
]


@pytest.mark.parametrize("arch,variant,name,writer,exact", CONTROLNET_LAYOUTS, ids=[c[2] for c in CONTROLNET_LAYOUTS])
def test_controlnet_layout_loads_with_the_written_weights(tmp_path, ckpt, arch, variant, name, writer, exact):
    sd_model = ckpt[arch]
    cn = cf.tiny_controlnet(sd_model.unet, seed=5, variant=variant)
    path = writer(tmp_path / "ControlNet" / name, cn)
    f = _file(path)
    assert f.title == f"{path.stem if path.is_file() else path.name} [{f.hash8}]"
    model = load(f, sd_model, torch.float32, torch.device("cpu"))
    assert (model.kind, model.family, model.hint_channels, model.title) == ("controlnet", arch, 3, f.title)
    assert model.global_pool == ("shuffle" in name)
    assert model.dtype == torch.float32
    if not exact:                  # fp16 file: the written module's weights rounded the same way
        cn = cn.half().float()
    assert_same_weights(model, cn)
    inputs = _inputs(sd_model)
    assert_same(assert_unet_takes_residuals(sd_model, model, *inputs), _reference(cn, *inputs))


def test_controlnet_1_0_full_file_in_the_extension_folder(tmp_path, ckpt):
    """control_sd15_openpose.pth as users have it: the whole SD model plus control_model.*, a pickle, in
    extensions/sd-webui-controlnet/models; found by its stem, read through the restricted unpickler."""
    from tests.support.model_factory import make_tiny_components

    sd_model = ckpt["sd1"]
    cn = cf.tiny_controlnet(sd_model.unet, seed=6)
    folders = [tmp_path / "models" / "ControlNet", tmp_path / "extensions" / "sd-webui-controlnet" / "models"]
    folders[0].mkdir(parents=True)
    path = cf.write_full_10(folders[1] / "control_sd15_openpose.pth", cn, make_tiny_components("sd1", seed=2))
    f = find("control_sd15_openpose", scan(folders))
    assert f is not None and f.path == path
    model = load(f, sd_model, torch.float32, "cpu")
    assert (model.kind, model.family) == ("controlnet", "sd1")
    assert_same_weights(model, cn)
    inputs = _inputs(sd_model, batch=2)
    assert_same(assert_unet_takes_residuals(sd_model, model, *inputs), _reference(cn, *inputs))
    x, t, ctx, added, hint = inputs
    with pytest.raises(ValueError, match=r"control image is \(8, 8\) for a latent of \(8, 8\); it must be \(16, 16\)"):
        model.controlnet_residuals(x, t, ctx, hint[..., :8, :8], added)


def test_an_inpainting_checkpoint_gives_the_controlnet_its_first_4_latent_channels(tmp_path, ckpt):
    """An SD1 ControlNet on a 9-channel inpainting UNet (§4.4): the ControlNet sees the 4 latent channels only."""
    root = tmp_path / "inpaint"
    (root / "Stable-diffusion").mkdir(parents=True)
    write_tiny_checkpoint(root / "Stable-diffusion" / "tiny_sd1_inpainting.safetensors", "sd1", seed=1, in_channels=9)
    inpaint = manager_for(root).require()
    cn = cf.tiny_controlnet(ckpt["sd1"].unet, seed=2)
    model = load(_file(cf.write_pth(tmp_path / "cn" / "control_v11p_sd15_canny.pth", cn)), inpaint, torch.float32,
                 "cpu")
    inputs = _inputs(inpaint)
    assert inputs[0].shape[1] == 9
    assert_same(assert_unet_takes_residuals(inpaint, model, *inputs), _reference(cn, *inputs))


def test_difference_model_is_the_loaded_unet_plus_the_stored_delta(tmp_path, ckpt):
    sd_model = ckpt["sd1"]
    cn = cf.tiny_controlnet(sd_model.unet, seed=7)
    f = _file(cf.write_difference(tmp_path / "diff_control_sd15_tiny.safetensors", cn, sd_model.unet))
    model = load(f, sd_model, torch.float32, "cpu")
    assert (model.kind, model.family) == ("controlnet", "sd1") and "difference" in model.description
    assert_same_weights(model, cn, exact=False)
    inputs = _inputs(sd_model)
    assert_same(assert_unet_takes_residuals(sd_model, model, *inputs), _reference(cn, *inputs), atol=1e-5)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_control_lora_is_the_loaded_unet_plus_up_times_down(tmp_path, ckpt, arch):
    sd_model = ckpt[arch]
    path, cn = cf.write_control_lora(tmp_path / f"control-lora-tiny-{arch}-rank2.safetensors", sd_model.unet, seed=8)
    model = load(_file(path), sd_model, torch.float32, "cpu")
    assert (model.kind, model.family) == ("controlnet", arch) and "Control-LoRA" in model.description
    assert_same_weights(model, cn, exact=False)
    inputs = _inputs(sd_model)
    assert_same(assert_unet_takes_residuals(sd_model, model, *inputs), _reference(cn, *inputs), atol=1e-5)


@pytest.mark.parametrize("cn_arch,ckpt_arch,what,theirs", [
    ("sdxl", "sd1", "an SDXL ControlNet (context 96, ADM 1600)", "an SD 1.x model (context 32)"),
    ("sd1", "sdxl", "an SD 1.x ControlNet (context 32)", "an SDXL model (context 96, ADM 1600)"),
    ("sd2", "sd1", "an SD 2.x ControlNet (context 64)", "an SD 1.x model (context 32)"),
])
def test_a_controlnet_for_another_family_is_refused_before_sampling(tmp_path, ckpt, cn_arch, ckpt_arch, what, theirs):
    cn = cf.tiny_controlnet(ckpt[cn_arch].unet, seed=9)
    f = _file(cf.write_pruned(tmp_path / f"control_{cn_arch}_canny.safetensors", cn))
    with pytest.raises(ModelFileError) as err:
        load(f, ckpt[ckpt_arch], torch.float32, "cpu")
    assert str(err.value) == f"{f.title} is {what}; the loaded checkpoint tiny_{ckpt_arch} is {theirs}"


def test_a_t2i_adapter_for_another_family_is_refused(tmp_path, ckpt):
    ad = cf.tiny_adapter("sdxl", seed=1)
    f = _file(cf.write_adapter(tmp_path / "t2i-adapter-tiny-sdxl.safetensors", ad, layout="diffusers"))
    with pytest.raises(ModelFileError, match=rf"^{re.escape(f.title)} does not fit the loaded checkpoint tiny_sd1: "
                                             r"feature channels \[64, 128, 128\]; the loaded UNet needs"):
        load(f, ckpt["sd1"], torch.float32, "cpu")


def test_a_controlnet_with_another_hint_encoder_depth_is_refused(tmp_path, ckpt):
    """A ControlNet whose hint encoder downsamples 4x (the demo model's) on a 2x-VAE checkpoint."""
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(ckpt["sd1"].unet, conditioning_embedding_out_channels=(16, 32, 96))
    f = _file(cf.write_pth(tmp_path / "control_deep_hint.pth", cn))
    with pytest.raises(ModelFileError, match=r"control-image encoder downsamples 4x; the loaded checkpoint tiny_sd1 "
                                             r"has a 2x VAE"):
        load(f, ckpt["sd1"], torch.float32, "cpu")


# --------------------------------------------------------------------------------------------------- T2I-Adapters

ADAPTERS = [
    # (arch, file name, layout, kwargs of tiny_adapter, hint channels)
    ("sd1", "t2iadapter_depth_sd14v1.pth", "original", {}, 3),
    ("sd1", "t2iadapter_canny_sd14v1.pth", "original", {"hint_channels": 1}, 1),
    ("sd1", "t2iadapter_canny_sd15v2.pth", "original", {"hint_channels": 1, "conv_down": True}, 1),
    ("sd1", "t2iadapter_color_sd14v1.pth", "original", {"light": True}, 3),
    ("sd1", "t2i-adapter-tiny-sd15.safetensors", "diffusers", {}, 3),
    ("sdxl", "t2i-adapter-canny-sdxl-1.0.safetensors", "diffusers", {"hint_channels": 1}, 1),
    ("sdxl", "t2i-adapter-depth-sdxl.pth", "original", {}, 3),
]


@pytest.mark.parametrize("arch,name,layout,kw,channels", ADAPTERS, ids=[a[1] for a in ADAPTERS])
def test_t2i_adapter_loads_and_its_features_are_what_the_unet_takes(tmp_path, ckpt, arch, name, layout, kw, channels):
    sd_model = ckpt[arch]
    ad = cf.tiny_adapter(arch, seed=3, **kw)
    f = _file(cf.write_adapter(tmp_path / name, ad, layout=layout))
    model = load(f, sd_model, torch.float32, "cpu")
    assert (model.kind, model.family, model.hint_channels) == ("t2i_adapter", arch, channels)
    x, t, ctx, added, hint = _inputs(sd_model)
    feats = model.adapter_features(hint)
    with torch.no_grad():
        want = ad(hint[:, :channels])
    assert len(feats) == len(want)
    for p, q in zip(feats, want):
        assert p.shape == q.shape and torch.allclose(p, q, atol=1e-6, rtol=1e-5), (p - q).abs().max()
    given = list(feats)
    steered = _unet(sd_model, x, t, ctx, added, down_intrablock_additional_residuals=given)
    assert given == [], "the UNet took every feature (diffusers pops them)"
    assert not torch.allclose(steered, _unet(sd_model, x, t, ctx, added))


def test_style_adapter_makes_context_tokens(tmp_path, ckpt):
    sd_model = ckpt["sd1"]
    context = sd_model.unet.config.cross_attention_dim
    f = _file(cf.write_style_adapter(tmp_path / "t2iadapter_style_sd14v1.pth", context, width=32, tokens=8))
    model = load(f, sd_model, torch.float32, "cpu")
    assert (model.kind, model.family) == ("t2i_style", "sd1")
    x, t, ctx, added, _ = _inputs(sd_model, batch=2)
    embeds = torch.randn(2, 5, 32)                     # CLIP vision last hidden state (width 1024 for the real one)
    tokens = model.style_tokens(embeds)
    assert tokens.shape == (2, 8, context)
    assert not torch.allclose(tokens[0], tokens[1])     # depends on the image
    out = _unet(sd_model, x, t, torch.cat([ctx, tokens], dim=1), added)
    assert out.shape == x.shape[:1] + (4,) + x.shape[2:]
    with pytest.raises(TypeError, match="T2I style adapter; controlnet_residuals is for a ControlNet"):
        model.controlnet_residuals(x, t, ctx, torch.rand(2, 3, 16, 16))


# --------------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("kind,name,says", [
    ("ip_adapter_bin", "ip-adapter_sd15.bin", "is an IP-Adapter model, which is not supported yet"),
    ("ip_adapter", "ip-adapter_sd15.safetensors", "is an IP-Adapter model, which is not supported yet"),
    ("sparsectrl", "v3_sd15_sparsectrl_rgb.ckpt", "is a SparseCtrl (AnimateDiff) model, which is not supported yet"),
    ("lllite", "controllllite_v01032064e_sdxl_canny.safetensors",
     "is a ControlLLLite (kohya) model, which is not supported yet"),
    ("union", "controlnet-union-sdxl-1.0.safetensors",
     "is a ControlNet-Union (xinsir) model, which is not supported yet"),
    ("lora", "some_lora.safetensors", ": Cannot recognize the control model in "),
])
def test_unsupported_and_unknown_files_are_named(tmp_path, ckpt, kind, name, says):
    cn = cf.tiny_controlnet(ckpt["sd1"].unet) if kind == "union" else None
    f = _file(cf.write_other(tmp_path / name, kind, cn))
    with pytest.raises(ModelFileError) as err:
        load(f, ckpt["sd1"], torch.float32, "cpu")
    assert str(err.value).startswith(f.title) and says in str(err.value)


def test_instant_id_controlnet_is_named(tmp_path, ckpt):
    cn = cf.tiny_controlnet(ckpt["sd1"].unet)
    f = _file(cf.write_pruned(tmp_path / "instant_id" / "diffusion_instant_id.safetensors", cn))
    with pytest.raises(ModelFileError, match="is an InstantID ControlNet .*, which is not supported yet"):
        load(f, ckpt["sd1"], torch.float32, "cpu")


def test_unknown_and_missing_weights_are_refused_naming_the_file(tmp_path, ckpt):
    cn = cf.tiny_controlnet(ckpt["sd1"].unet)
    sd = cf.original_state_dict(cn, prefix=False)
    extra = dict(sd, **{"input_blocks.1.0.extra_layer.weight": torch.zeros(2)})
    f = _file(cf._save(extra, tmp_path / "a" / "control_extra.safetensors"))
    with pytest.raises(ModelFileError, match=r"control_extra \[\w+\]: 0 missing and 1 unknown weights .*extra_layer"):
        load(f, ckpt["sd1"], torch.float32, "cpu")
    del sd["zero_convs.1.0.bias"]
    f = _file(cf._save(sd, tmp_path / "b" / "control_missing.safetensors"))
    with pytest.raises(ModelFileError, match=r"control_missing \[\w+\]: 1 missing and 0 unknown weights "
                                             r"\(such as controlnet_down_blocks.1.bias\)"):
        load(f, ckpt["sd1"], torch.float32, "cpu")
    # a T2I-Adapter with a skip convolution (sk=False), which no released adapter has
    ad = cf.adapter_original_state_dict(cf.tiny_adapter("sd1"))
    ad["body.1.skep.weight"] = torch.zeros(32, 32, 1, 1)
    f = _file(cf._save(ad, tmp_path / "c" / "t2iadapter_skep.pth"))
    with pytest.raises(ModelFileError, match=r"t2iadapter_skep \[\w+\]: 0 missing and 1 unknown T2I-Adapter weights "
                                             r"\(such as body.1.skep.weight\)"):
        load(f, ckpt["sd1"], torch.float32, "cpu")


def test_a_pickle_that_would_run_code_is_refused(tmp_path, ckpt):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "m" / "control_evil.pth"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"input_hint_block.0.weight": Evil()}))
    with pytest.raises(ModelFileError, match=r"^control_evil \[\w+\]: .*control_evil.pth: cannot be read .*refused"):
        load(_file(path), ckpt["sd1"], torch.float32, "cpu")
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------------------------------- cache

def test_cache_keeps_the_most_recent_models_per_checkpoint(tmp_path, ckpt):
    sd1 = ckpt["sd1"]
    files = [_file(cf.write_pruned(tmp_path / f"m{i}" / f"control_{i}.safetensors",
                                   cf.tiny_controlnet(sd1.unet, seed=i), dtype=None)) for i in range(3)]
    cache = ModelCache(max_models=2)
    a = cache.get(files[0], sd1, torch.float32, "cpu")
    assert cache.get(files[0], sd1, torch.float32, "cpu") is a
    b = cache.get(files[1], sd1, torch.float32, "cpu")
    cache.get(files[0], sd1, torch.float32, "cpu")                      # 0 is now the most recent
    cache.get(files[2], sd1, torch.float32, "cpu")                      # evicts 1
    assert cache.titles() == [files[0].title, files[2].title]
    assert cache.get(files[1], sd1, torch.float32, "cpu") is not b       # loaded again
    half = cache.get(files[1], sd1, torch.float16, "cpu")
    assert half.dtype == torch.float16 and next(half.module.parameters()).dtype == torch.float16
    # another checkpoint: nothing built for the first one is reused
    sdxl_cn = _file(cf.write_pruned(tmp_path / "x" / "control_x.safetensors", cf.tiny_controlnet(ckpt["sdxl"].unet)))
    cache.get(sdxl_cn, ckpt["sdxl"], torch.float32, "cpu")
    assert cache.titles() == [sdxl_cn.title]
    cache.clear()
    assert cache.titles() == []


def test_model_built_in_the_jobs_dtype(tmp_path, ckpt):
    sd_model = ckpt["sd1"]
    cn = cf.tiny_controlnet(sd_model.unet, seed=4)
    model = load(_file(cf.write_pth(tmp_path / "control_bf16.pth", cn)), sd_model, torch.bfloat16, "cpu")
    assert model.dtype == torch.bfloat16
    assert {p.dtype for p in model.module.parameters()} == {torch.bfloat16}
    x, t, ctx, added, hint = _inputs(sd_model)
    down, mid = model.controlnet_residuals(x, t, ctx, hint, added)
    assert mid.dtype == torch.float32 and torch.isfinite(mid).all()     # in the latent's dtype


# --------------------------------------------------------------------------------------------------- real sizes

def _meta(cls, **cfg):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return cls(**cfg)


def _recognised(sd, name="real_size.safetensors"):
    from pathlib import Path
    return cm.recognise(sd, ControlModelFile(Path(name), Path(name).stem, "00000000"))


SDXL = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)


@pytest.mark.parametrize("cfg,family,depth,mid,key", [
    ({}, "sd1", (1, 1, 1, 0), 1, "input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"),
    (dict(cross_attention_dim=1024, use_linear_projection=True, attention_head_dim=(5, 10, 20, 20)), "sd2",
     (1, 1, 1, 0), 1, "input_blocks.5.1.proj_in.weight"),
    (dict(SDXL, transformer_layers_per_block=(1, 2, 10)), "sdxl", (0, 2, 10), 10,
     "input_blocks.8.1.transformer_blocks.9.norm3.weight"),
    (dict(SDXL, transformer_layers_per_block=(0, 0, 1)), "sdxl", (0, 0, 1), 1,
     "input_blocks.8.1.transformer_blocks.0.norm3.weight"),
    (dict(SDXL, down_block_types=("DownBlock2D",) * 3, transformer_layers_per_block=0), "sdxl", (0, 0, 0), 0,
     "middle_block.1.proj_in.weight"),
], ids=["sd15", "sd21", "sdxl-full", "sdxl-mid", "sdxl-small"])
def test_real_size_controlnets_are_read_and_built_from_their_weights(cfg, family, depth, mid, key):
    """The real files' key names and shapes (§2.2 rules 3 and 7), on the meta device (no weights): the architecture
    read from the original layout and from diffusers' layout, and every weight placed in the ControlNetModel built."""
    from diffusers import ControlNetModel

    from modules.controlnet.controlnet_arch import build_controlnet, read_arch

    source = _meta(ControlNetModel, **cfg)
    original = cf.original_state_dict(source)
    assert ("control_model." + key) in original
    kind, sd = _recognised(original, "control_v11p_sd15_canny.pth")
    assert kind == "controlnet"
    arch = read_arch(sd)
    assert arch.family == family
    assert arch.channels[:3] == (320, 640, 1280) and arch.layers_per_block == 2
    assert arch.depth == depth and arch.mid_depth == mid
    assert arch.hint_factor == 8 and arch.hint_channels == 3
    assert arch.adm_dim == (2816 if family == "sdxl" else None)
    built, want = build_controlnet(sd, arch, source.config).state_dict(), source.state_dict()
    assert built.keys() == want.keys() and all(built[k].shape == v.shape for k, v in want.items())
    kind, from_diffusers = _recognised(source.state_dict(), "diffusion_pytorch_model.safetensors")
    assert kind == "controlnet" and read_arch(from_diffusers) == arch


@pytest.mark.parametrize("adapter_type,channels,layout", [
    ("full_adapter", [320, 640, 1280, 1280], "original"), ("light_adapter", [320, 640, 1280], "original"),
    ("full_adapter_xl", [320, 640, 1280, 1280], "diffusers")])
def test_real_size_t2i_adapters_load_into_the_real_unets(adapter_type, channels, layout):
    """t2iadapter_*_sd14v1.pth (full and light) and t2i-adapter-*-sdxl-1.0 (diffusers) at their real sizes, on the
    meta device: recognised, fitted to the real UNet configs, every weight placed."""
    from diffusers import T2IAdapter

    from modules.controlnet import t2i_adapter as t2i
    from modules.models.architecture import family_defaults

    source = _meta(T2IAdapter, in_channels=3, channels=channels, num_res_blocks=4 if "light" in adapter_type else 2,
                   downscale_factor=16 if "xl" in adapter_type else 8, adapter_type=adapter_type)
    sd = cf.adapter_original_state_dict(source) if layout == "original" else source.state_dict()
    kind, sd = _recognised(sd)
    assert kind == "t2i_adapter"
    arch = t2i.read_arch(sd)
    unet = family_defaults("sdxl" if "xl" in adapter_type else "sd1")["unet"]
    hint, factor, downs = t2i.fit(arch, unet, 8)
    assert (hint, factor) == (3, 16 if "xl" in adapter_type else 8)
    net = _meta(t2i.AdapterNet, arch=arch, factor=factor, downs=downs)
    missing, unexpected = net.load_state_dict(sd, strict=False, assign=True)
    assert missing == [] and unexpected == []
    assert [b.downsample is not None for b in net.body] == downs
    assert [b.downsample is not None for b in source.adapter.body] == downs     # diffusers' own layout


def test_real_t2i_adapters_fit_the_real_unets_as_the_original_layouts():
    """SD: pixel-unshuffle 8, downsampling before levels 1–3; SDXL: unshuffle 16, only before level 2
    (§2.2 rule 8)."""
    from modules.controlnet.t2i_adapter import AdapterArch, fit
    from modules.models.architecture import family_defaults

    sd15 = family_defaults("sd1")["unet"]
    sdxl = family_defaults("sdxl")["unet"]
    chans = (320, 640, 1280, 1280)
    assert fit(AdapterArch(False, 192, chans, 2, 1, (False,) * 4), sd15, 8) == (3, 8, [False, True, True, True])
    assert fit(AdapterArch(False, 64, chans, 2, 1, (False,) * 4), sd15, 8)[:2] == (1, 8)
    assert fit(AdapterArch(True, 192, chans, 4, 1, (False,) * 4), sd15, 8)[0] == 3
    assert fit(AdapterArch(False, 768, chans, 2, 1, (False,) * 4), sdxl, 8) == (3, 16, [False, False, True, False])
    assert AdapterArch(False, 256, chans, 2, 1, (False,) * 4).standard_family == "sdxl"


# --------------------------------------------------------------------------------------------------- demo model

def test_demo_controlnet_loads_as_tools_demo_model_loads_it(tmp_path):
    from modules.models.controlnet import load_controlnet
    from modules.paths import DEMO_CHECKPOINT, DEMO_CONTROLNET
    from tools.demo_model.evaluate import load_model

    demo, _ = load_model(DEMO_CHECKPOINT, torch.device("cpu"))
    [f] = [f for f in scan([DEMO_CONTROLNET.parent]) if f.path == DEMO_CONTROLNET]
    assert f.stem == "control_demo-shapes_canny"
    model = load(f, demo, torch.float32, "cpu")
    assert (model.kind, model.family, model.hint_channels) == ("controlnet", "sd1", 3)
    reference = load_controlnet(DEMO_CONTROLNET, demo.unet.config)
    inputs = _inputs(demo, batch=2)
    ours = assert_unet_takes_residuals(demo, model, *inputs)
    assert_same(ours, _reference(reference, *inputs))
    # the demo checkpoint is an SD 1.x model with context 64: the tiny SDXL ControlNet is refused by name
    assert cm._unet_facts(demo)[:3] == ("sd1", demo.unet.config.cross_attention_dim, None)
