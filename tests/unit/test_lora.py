"""LoRA files in the real key layouts on tiny models: where each key goes, the patched weights against the file's own
math computed here, the job leaving every weight bitwise as it was, names, hashes, families and the cache."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from modules.engine.extra_networks import ExtraNetworkParams
from modules.engine.patches import PatchSet
from modules.networks import lora_keys
from modules.networks.lora import LoraExtraNetwork, LoraNetworks, Request
from modules.networks.network_files import NetworkCatalog
from tests.support.engine_helpers import load_tiny, run
from tests.support.lora_factory import ldm_names, parameter, snapshot, write_lora


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("sd1"), "sd1")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("sdxl"), "sdxl")


class P:
    """The parts of the run state a network handler touches."""

    def __init__(self, model):
        self.sd_model, self.patches = model, PatchSet()
        self.comments, self.extra_generation_params = {}, {}

    def comment(self, text):
        self.comments[text] = 1


def handler_for(folder, **options):
    networks = LoraNetworks(NetworkCatalog(lambda: [folder]))
    return LoraExtraNetwork(networks, lambda key, default=None: options.get(key, default))


def params(*items):
    return ExtraNetworkParams([str(i) for i in items])


def patched_values(model, handler, entries, targets):
    """Activates `entries` and returns the listed parameters' values while the patches are on."""
    p = P(model)
    handler.activate(p, entries)
    with p.patches.applied(model):
        values = {t: parameter(model, *t).detach().float().clone() for t in targets}
    return p, values


@pytest.mark.parametrize("layout,names", [("kohya", "diffusers"), ("kohya", "ldm"), ("peft", "diffusers")])
def test_patched_weights_equal_the_files_math(sd1, tmp_path, layout, names):
    factors = write_lora(tmp_path / "style.safetensors", sd1, layout=layout, unet_names=names, alpha=1.0)
    assert any(f.component == "unet" and isinstance(sd1.unet.get_submodule(f.path), torch.nn.Conv2d)
               for f in factors)   # proj_in of SD1 is a 1x1 conv
    targets = [(f.component, f.path) for f in factors]
    originals = {t: parameter(sd1, *t).detach().float().clone() for t in targets}
    p, values = patched_values(sd1, handler_for(tmp_path), [params("style", 0.7, 0.4)], targets)
    assert not p.comments
    for f in factors:
        m = 0.7 if f.component != "unet" else 0.4
        expected = originals[(f.component, f.path)] + m * f.delta(originals[(f.component, f.path)].shape)
        weight = parameter(sd1, f.component, f.path)
        tol = 1e-6 if weight.dtype == torch.float32 else 1e-2
        torch.testing.assert_close(values[(f.component, f.path)], expected.to(weight.dtype).float(), atol=tol,
                                   rtol=tol)
    for t in targets:   # restored bitwise after the patches come off
        assert torch.equal(parameter(sd1, *t).detach().float(), originals[t])


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_sdxl_file_with_two_text_encoders(sdxl, tmp_path, layout):
    """kohya with LDM UNet names and lora_te1_/lora_te2_, or diffusers/PEFT with text_encoder_2."""
    factors = write_lora(tmp_path / "xl.safetensors", sdxl, unet_names="ldm", layout=layout,
                         metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    comps = {f.component for f in factors}
    assert comps == {"unet", "text_encoder", "text_encoder_2"}
    targets = [(f.component, f.path) for f in factors]
    originals = {t: parameter(sdxl, *t).detach().float().clone() for t in targets}
    p, values = patched_values(sdxl, handler_for(tmp_path), [params("xl", 1)], targets)
    assert not p.comments
    for f in factors:
        expected = originals[(f.component, f.path)] + f.delta(originals[(f.component, f.path)].shape)
        torch.testing.assert_close(values[(f.component, f.path)], expected, atol=2e-2, rtol=2e-2)


def test_ldm_names_map_to_the_diffusers_modules(sd1, sdxl):
    """A few names checked by hand against the LDM layout (lpb 1): input_blocks.1 is SD1's first attention block;
    SDXL's first block has none, so its first attention is input_blocks.3 (after a resnet and a downsampler)."""
    sd1_index, xl_index = lora_keys.index_for(sd1), lora_keys.index_for(sdxl)
    t = sd1_index.lookup("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q")
    assert t == lora_keys.Target("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    t = sd1_index.lookup("lora_unet_output_blocks_2_1_proj_in")
    assert t == lora_keys.Target("unet", "up_blocks.1.attentions.0.proj_in")
    t = xl_index.lookup("lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k")
    assert t == lora_keys.Target("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")
    assert xl_index.lookup("lora_te2_text_model_encoder_layers_1_self_attn_v_proj") == \
        lora_keys.Target("text_encoder_2", "text_model.encoder.layers.1.self_attn.v_proj")
    assert sd1_index.lookup("unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora") == \
        lora_keys.Target("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0")
    assert sd1_index.lookup("lora_unet_nothing_like_this") is None
    assert len(ldm_names(sd1.unet)) > 20


def test_te_and_unet_weights_act_separately_and_two_loras_add(sd1, tmp_path):
    a = write_lora(tmp_path / "a.safetensors", sd1, seed=1)
    b = write_lora(tmp_path / "b.safetensors", sd1, seed=2)
    te = next(f for f in a if f.component == "text_encoder")
    un = next(f for f in a if f.component == "unet")
    te_b = next(f for f in b if (f.component, f.path) == (te.component, te.path))
    handler = handler_for(tmp_path)
    targets = [(te.component, te.path), (un.component, un.path)]
    orig = {t: parameter(sd1, *t).detach().float().clone() for t in targets}
    _, only_te = patched_values(sd1, handler, [params("a", 1, 0)], targets)
    assert not torch.equal(only_te[targets[0]], orig[targets[0]])
    assert torch.equal(only_te[targets[1]], orig[targets[1]])            # unet weight 0: untouched
    _, both = patched_values(sd1, handler, [params("a", 1), params("b", 1)], targets)
    torch.testing.assert_close(both[targets[0]], orig[targets[0]] + te.delta(orig[targets[0]].shape) +
                               te_b.delta(orig[targets[0]].shape), atol=1e-5, rtol=1e-5)
    _, keyword = patched_values(sd1, handler, [params("a", "te=0", "unet=1")], targets)
    assert torch.equal(keyword[targets[0]], orig[targets[0]])
    assert not torch.equal(keyword[targets[1]], orig[targets[1]])


def test_weight_zero_is_the_plain_image_and_the_job_restores_every_weight(sd1, tmp_path):
    write_lora(tmp_path / "style.safetensors", sd1, scale=1.0)
    handler = handler_for(tmp_path)
    before = snapshot(sd1)

    def with_lora(p):
        p.extra_networks.register(handler)
    plain = np.asarray(run(sd1, steps=3).images[0])
    zero = run(sd1, steps=3, prompt="a red circle <lora:style:0>", setup=with_lora)
    assert np.array_equal(plain, np.asarray(zero.images[0]))
    one = run(sd1, steps=3, prompt="a red circle <lora:style:1>", setup=with_lora)
    assert not np.array_equal(plain, np.asarray(one.images[0]))
    after = snapshot(sd1)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(plain, np.asarray(run(sd1, steps=3).images[0]))


def test_infotext_has_lora_hashes_and_unknown_names_are_reported(sd1, tmp_path):
    write_lora(tmp_path / "style.safetensors", sd1)

    def with_lora(p):
        p.extra_networks.register(handler_for(tmp_path))
    out = run(sd1, steps=2, prompt="a red circle <lora:style:0.5> <lora:missing_one:1>", setup=with_lora)
    text = out.infotexts[0]
    from modules import hashes
    with open(tmp_path / "style.safetensors", "rb") as f:
        addnet = hashes.addnet_hash_safetensors(f)
    assert f'Lora hashes: "style: {addnet[:12]}"' in text
    assert "Networks not found: missing_one" in out.comments
    assert text.splitlines()[0] == "a red circle <lora:style:0.5> <lora:missing_one:1>"   # kept, as in A1111


def test_alias_from_metadata_file_name_and_ambiguous_aliases(sd1, tmp_path):
    write_lora(tmp_path / "detail_v2.safetensors", sd1, metadata={"ss_output_name": "detail"})
    (tmp_path / "sub").mkdir()
    write_lora(tmp_path / "sub" / "x1.safetensors", sd1, metadata={"ss_output_name": "same"})
    write_lora(tmp_path / "sub" / "x2.safetensors", sd1, metadata={"ss_output_name": "same"})
    catalog = NetworkCatalog(lambda: [tmp_path])
    assert catalog.find("detail").name == "detail_v2"
    assert catalog.find("detail_v2").name == "detail_v2"
    assert catalog.find("same") is None                 # two files share the alias: only file names find them
    assert catalog.find("x2").name == "x2"
    assert catalog.available["detail_v2"].get_alias() == "detail"
    assert catalog.available["detail_v2"].get_alias("Filename") == "detail_v2"
    assert catalog.available["x1"].get_alias() == "x1"


def test_a_lora_for_another_family_is_refused_naming_both(sd1, sdxl, tmp_path):
    write_lora(tmp_path / "xl_style.safetensors", sdxl, metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    p = P(sd1)
    handler_for(tmp_path).activate(p, [params("xl_style", 1)])
    message = " ".join(p.comments)
    assert "xl_style" in message and "SDXL" in message and "SD1.x" in message
    assert not p.patches
    # without metadata: found from its keys (two text encoders)
    write_lora(tmp_path / "xl_bare.safetensors", sdxl)
    p = P(sd1)
    handler_for(tmp_path).activate(p, [params("xl_bare", 1)])
    assert any("SDXL" in c for c in p.comments)


def test_sd1_lora_on_sdxl_does_not_fit(sd1, sdxl, tmp_path):
    write_lora(tmp_path / "small.safetensors", sd1)
    p = P(sdxl)
    handler_for(tmp_path).activate(p, [params("small", 1)])
    assert any("small" in c and "SDXL" in c for c in p.comments), p.comments


def test_a_file_is_read_once_and_again_when_it_changes(sd1, tmp_path):
    path = tmp_path / "style.safetensors"
    write_lora(path, sd1, seed=1)
    networks = LoraNetworks(NetworkCatalog(lambda: [tmp_path]))
    entry = networks.catalog.find("style")
    first = networks.file(entry)
    assert networks.file(entry) is first
    write_lora(path, sd1, seed=2)
    os.utime(path, ns=(first.version[1] + 10**9, first.version[1] + 10**9))
    assert networks.file(entry) is not first


def test_request_forms():
    assert Request.parse(params("x")) == Request("x", 1.0, 1.0, None)
    assert Request.parse(params("x", 0.5)) == Request("x", 0.5, 0.5, None)
    assert Request.parse(params("x", 0.5, 0.2)) == Request("x", 0.5, 0.2, None)
    assert Request.parse(params("x", 1, "unet=0.3", "dyn=4")) == Request("x", 1.0, 0.3, 4)
    with pytest.raises(ValueError, match="numbers"):
        Request.parse(params("x", "abc"))


def test_add_network_to_prompt_setting_applies_without_a_token(sd1, tmp_path):
    write_lora(tmp_path / "always.safetensors", sd1)
    handler = handler_for(tmp_path, sd_lora="always")
    p = P(sd1)
    handler.activate(p, [])
    assert p.patches.weights and "Lora hashes" in p.extra_generation_params


def test_pasting_an_infotext_renames_a_lora_found_by_its_hash(sd1, tmp_path):
    """PNG Info → txt2img: the author's name for a LoRA is replaced by the local file with the same hash."""
    from modules import script_callbacks
    from modules.networks.lora import rename_pasted
    from modules.ui import pnginfo_tab
    write_lora(tmp_path / "ink_v3.safetensors", sd1, metadata={"ss_output_name": "ink"})
    catalog = NetworkCatalog(lambda: [tmp_path])
    shorthash = catalog.find("ink").read_hash()[:12]
    text = ('a red circle <lora:someone_elses_name:0.7>, <lora:unknown:1>\nNegative prompt: <lora:other:1>\n'
            f'Steps: 3, Seed: 1, Size: 64x64, Lora hashes: "someone_elses_name: {shorthash}, other: 0123456789ab"')
    params = {"Prompt": "a red circle <lora:someone_elses_name:0.7>, <lora:unknown:1>",
              "Lora hashes": f"someone_elses_name: {shorthash}, other: 0123456789ab"}
    rename_pasted(params, catalog)
    assert params["Prompt"] == "a red circle <lora:ink:0.7>, <lora:unknown:1>"
    rename_pasted(params := {"Prompt": "<lora:someone_elses_name:1>", "Lora hashes": f"someone_elses_name: "
                             f"{shorthash}"}, catalog, "Filename")
    assert params["Prompt"] == "<lora:ink_v3:1>"
    script_callbacks.on_infotext_pasted(lambda _text, p: rename_pasted(p, catalog), name="test-lora-paste")
    try:
        prompt, negative = pnginfo_tab.paste_values(text, ["prompt", "negative_prompt"])
    finally:
        script_callbacks.clear_callbacks()
    assert prompt["value"] == "a red circle <lora:ink:0.7>, <lora:unknown:1>"
    assert negative["value"] == "<lora:other:1>"


def test_a_lycoris_file_with_several_kinds_patches_each_module_by_its_own_math(sd1, tmp_path):
    """LoHa, LoKr, IA3, full diff (+diff_b) and norm modules in one kohya-named file, as LyCORIS writes them."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(7)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.1
    blk = "down_blocks.0.attentions.0.transformer_blocks.0"
    q, k, v, out, norm = (f"{blk}.attn1.to_q", f"{blk}.attn1.to_k", f"{blk}.attn1.to_v", f"{blk}.attn1.to_out.0",
                          f"{blk}.norm1")
    W = {p: parameter(sd1, "unet", p).detach().float().clone() for p in (q, k, v, out, norm)}
    B = {p: parameter(sd1, "unet", p, "bias").detach().float().clone() for p in (out, norm)}
    o, i = W[q].shape
    w1a, w1b, w2a, w2b = rnd(o, 2), rnd(2, i), rnd(o, 2), rnd(2, i)
    kw1, kw2 = rnd(2, 4), rnd(o // 2, i // 4)
    ia3 = rnd(W[v].shape[0])
    diff, diff_b = rnd(*W[out].shape), rnd(W[out].shape[0])
    w_norm, b_norm = rnd(W[norm].shape[0]), rnd(W[norm].shape[0])

    def key(path):
        return "lora_unet_" + path.replace(".", "_")
    sd = {f"{key(q)}.hada_w1_a": w1a, f"{key(q)}.hada_w1_b": w1b, f"{key(q)}.hada_w2_a": w2a,
          f"{key(q)}.hada_w2_b": w2b, f"{key(q)}.alpha": torch.tensor(1.0),
          f"{key(k)}.lokr_w1": kw1, f"{key(k)}.lokr_w2": kw2,
          f"{key(v)}.weight": ia3, f"{key(v)}.on_input": torch.tensor(False),
          f"{key(out)}.diff": diff, f"{key(out)}.diff_b": diff_b,
          f"{key(norm)}.w_norm": w_norm, f"{key(norm)}.b_norm": b_norm}
    save_file(sd, str(tmp_path / "lyco.safetensors"))
    p = P(sd1)
    handler_for(tmp_path).activate(p, [params("lyco", 0.5)])
    assert not p.comments
    with p.patches.applied(sd1):
        got = {path: parameter(sd1, "unet", path).detach().float().clone() for path in W}
        got_b = {path: parameter(sd1, "unet", path, "bias").detach().float().clone() for path in B}
    close = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[q], W[q] + 0.5 * 0.5 * (w1a @ w1b) * (w2a @ w2b), **close)   # alpha/rank = 1/2
    torch.testing.assert_close(got[k], W[k] + 0.5 * torch.kron(kw1, kw2), **close)
    torch.testing.assert_close(got[v], W[v] + 0.5 * W[v] * ia3[:, None], **close)
    torch.testing.assert_close(got[out], W[out] + 0.5 * diff, **close)
    torch.testing.assert_close(got_b[out], B[out] + 0.5 * diff_b, **close)
    torch.testing.assert_close(got[norm], W[norm] + 0.5 * w_norm, **close)
    torch.testing.assert_close(got_b[norm], B[norm] + 0.5 * b_norm, **close)
    assert all(torch.equal(parameter(sd1, "unet", path).detach().float(), W[path]) for path in W)


def test_the_same_loras_in_the_next_job_reuse_the_merged_weights(sd1, tmp_path):
    """The second job with the same set copies the kept weights in (no math): same values, weights restored."""
    write_lora(tmp_path / "a.safetensors", sd1, seed=1)
    write_lora(tmp_path / "b.safetensors", sd1, seed=2)
    handler = handler_for(tmp_path)
    target = ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")
    original = parameter(sd1, *target).detach().clone()
    p1, first = patched_values(sd1, handler, [params("a", 1), params("b", 0.5)], [target])
    assert all(w.fn is not None for w in p1.patches.weights)
    p2, second = patched_values(sd1, handler, [params("a", 1), params("b", 0.5)], [target])
    assert all(w.value is not None for w in p2.patches.weights)
    assert torch.equal(first[target], second[target]) and not torch.equal(first[target], original.float())
    assert torch.equal(parameter(sd1, *target), original)
    p3, third = patched_values(sd1, handler, [params("a", 1), params("b", 0.6)], [target])   # another weight
    assert all(w.fn is not None for w in p3.patches.weights)
    assert not torch.equal(third[target], second[target])


def test_add_network_to_prompt_writes_its_token_into_the_prompts(sd1, tmp_path):
    write_lora(tmp_path / "always.safetensors", sd1)

    def with_setting(p):
        p.extra_networks.register(handler_for(tmp_path, sd_lora="always", extra_networks_default_multiplier=0.6))
    out = run(sd1, steps=2, prompt="a red circle", setup=with_setting)
    assert out.infotexts[0].splitlines()[0] == "a red circle<lora:always:0.6>"
    assert "Lora hashes" in out.infotexts[0]


def test_sd2_kohya_file(tmp_path_factory, tmp_path):
    sd2 = load_tiny(tmp_path_factory.mktemp("sd2"), "sd2")
    factors = write_lora(tmp_path / "v2.safetensors", sd2, metadata={"ss_v2": "True"})
    targets = [(f.component, f.path) for f in factors]
    originals = {t: parameter(sd2, *t).detach().float().clone() for t in targets}
    p, values = patched_values(sd2, handler_for(tmp_path), [params("v2", 1)], targets)
    assert not p.comments and len(p.patches.weights) == len(factors)
    for f in factors:
        o = originals[(f.component, f.path)]
        torch.testing.assert_close(values[(f.component, f.path)], o + f.delta(o.shape), atol=1e-5, rtol=1e-5)
    p = P(sd2)
    write_lora(tmp_path / "v1.safetensors", sd2, metadata={"ss_base_model_version": "sd_v1"})
    handler_for(tmp_path).activate(p, [params("v1", 1)])
    assert any("SD1.x" in c and "SD2.x" in c for c in p.comments)


def test_the_addnet_hash_is_kept_in_the_hash_cache_file_beside_the_sha256(sd1, tmp_path):
    """So a pasted infotext finds a LoRA by hash in a later session before the LoRA is used again."""
    from modules import hashes
    from modules.models.hashing import HashCache
    path = tmp_path / "style.safetensors"
    write_lora(path, sd1)
    cache = HashCache(tmp_path / "hashes.json")
    full = cache.sha256(path)
    addnet = cache.sha256(path, hasher=hashes._addnet_file, field="addnet")
    again = HashCache(tmp_path / "hashes.json")
    assert again.sha256(path, compute=False, field="addnet") == addnet != full
    assert again.sha256(path, compute=False) == full
    with open(path, "rb") as f:
        assert addnet == hashes.addnet_hash_safetensors(f)
