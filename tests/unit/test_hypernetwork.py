"""Hypernetworks: A1111's .pt layout rebuilt index for index, applied to the context of every attention layer of its
width before to_k/to_v (self-attention too), several in sequence, multiplier 0 = the unpatched image bit for bit."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.engine.extra_networks import ExtraNetworkRegistry
from modules.engine.patches import PatchSet
from modules.networks.hypernetwork import Hypernetwork, HypernetworkHandler, add_to_patches, attention_layers
from modules.networks.network_files import NetworkCatalog
from tests.support.engine_helpers import load_tiny, pixels, run
from tests.support.hypernet_factory import A_META, layout_a, linear_params, write_net

CONTEXT = 32   # the tiny SD1 UNet's cross-attention width (and its first block's channels)
MID = 64       # the mid block's channels: only its self-attention (attn1) has this context width


def forward_a(sd, x, m):
    def lin(i, t):
        return F.linear(t, sd[f"linear.{i}.weight"], sd[f"linear.{i}.bias"])

    def ln(i, t):
        return F.layer_norm(t, t.shape[-1:], sd[f"linear.{i}.weight"], sd[f"linear.{i}.bias"])
    return x + ln(4, lin(3, ln(2, torch.relu(lin(0, x))))) * m


def layout_b(dim, g, scale):
    """[1, 2, 2, 1], tanh, dropout after both hidden layers (use_dropout + last_layer_dropout), activate_output:
    0 Linear, 1 Tanh, 2 Dropout, 3 Linear, 4 Tanh, 5 Dropout, 6 Linear, 7 Tanh."""
    parts = {0: linear_params(g, dim, 2 * dim, scale), 3: linear_params(g, 2 * dim, 2 * dim, scale),
             6: linear_params(g, 2 * dim, dim, scale)}
    return {f"linear.{i}.{k}": v for i, d in parts.items() for k, v in d.items()}


B_META = {"layer_structure": [1, 2, 2, 1], "activation_func": "tanh", "is_layer_norm": False, "use_dropout": True,
          "activate_output": True, "last_layer_dropout": True}


def forward_b(sd, x, m):
    def lin(i, t):
        return F.linear(t, sd[f"linear.{i}.weight"], sd[f"linear.{i}.bias"])
    return x + torch.tanh(lin(6, torch.tanh(lin(3, torch.tanh(lin(0, x)))))) * m


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("hn"), "sd1", seed=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hypernetworks")
    write_net(folder / "hn.pt", layout_a, A_META, (CONTEXT, MID), seed=1)
    write_net(folder / "selfonly.pt", layout_a, A_META, (MID,), seed=2, scale=1.0)
    return folder


def networks(folder) -> ExtraNetworkRegistry:
    registry = ExtraNetworkRegistry()
    registry.register(HypernetworkHandler(NetworkCatalog(lambda: [folder], (".pt",), kind="hypernet")))
    return registry


def gen(model, folder, prompt):
    registry = networks(folder)
    return run(model, prompt=prompt, steps=2, setup=lambda p: setattr(p, "extra_networks", registry))


def test_modules_are_built_in_a1111s_layout(tmp_path):
    x = torch.randn(3, 5, 16)
    for layout, meta, forward in ((layout_a, A_META, forward_a), (layout_b, B_META, forward_b)):
        data = write_net(tmp_path / "n.pt", layout, meta, (16,), seed=3)
        net = Hypernetwork(str(tmp_path / "n.pt")).load()
        assert net.name == "name-in-file" and net.step == 100 and net.sd_checkpoint == "abc"
        k, v = net.layers[16]
        assert not k.training and not v.training
        assert torch.allclose(k(x, 0.7), forward(data[16][0], x, 0.7), atol=1e-6)
        assert torch.allclose(v(x, 1.0), forward(data[16][1], x, 1.0), atol=1e-6)
    assert Hypernetwork(str(tmp_path / "n.pt")).load().dropout_structure == [0, 0.3, 0.3, 0]
    # A1111's oldest files: linear1/linear2, no activation
    g = torch.Generator().manual_seed(0)
    old = {"linear1.weight": torch.randn(32, 16, generator=g), "linear1.bias": torch.zeros(32),
           "linear2.weight": torch.randn(16, 32, generator=g), "linear2.bias": torch.zeros(16)}
    torch.save({16: (old, old)}, tmp_path / "old.pt")
    k, _ = Hypernetwork(str(tmp_path / "old.pt")).load().layers[16]
    assert torch.allclose(k(x), x + F.linear(F.linear(x, old["linear1.weight"]), old["linear2.weight"]), atol=1e-5)


def test_a_file_that_does_not_fit_its_structure_names_the_file(tmp_path):
    write_net(tmp_path / "bad.pt", layout_a, {**A_META, "layer_structure": [1, 3, 1]}, (16,), seed=1)
    with pytest.raises(ValueError, match=r"bad\.pt.*layer structure \[1, 3, 1\]"):
        Hypernetwork(str(tmp_path / "bad.pt")).load()


def test_the_context_goes_through_it_before_to_k_and_to_v_several_in_sequence(model, tmp_path):
    first = write_net(tmp_path / "one.pt", layout_a, A_META, (CONTEXT,), seed=5)[CONTEXT]
    second = write_net(tmp_path / "two.pt", layout_b, B_META, (CONTEXT,), seed=6)[CONTEXT]
    patches = PatchSet()
    for name, m in (("one", 0.8), ("two", 1.5)):
        add_to_patches(patches, model.unet, Hypernetwork(str(tmp_path / f"{name}.pt")).load(), m)
    attn = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    x, context = torch.randn(2, 16, CONTEXT), torch.randn(2, 77, CONTEXT)
    with torch.no_grad():
        plain = attn(x, encoder_hidden_states=context)
        with patches.applied(model):
            patched = attn(x, encoder_hidden_states=context)
        after = attn(x, encoder_hidden_states=context)
        ck = forward_b(second[0], forward_a(first[0], context, 0.8), 1.5)
        cv = forward_b(second[1], forward_a(first[1], context, 0.8), 1.5)
        heads = attn.heads

        def split(t):
            return t.view(2, -1, heads, t.shape[-1] // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(attn.to_q(x)), split(attn.to_k(ck)), split(attn.to_v(cv)))
        expected = attn.to_out[0](out.transpose(1, 2).reshape(2, -1, attn.to_q.out_features))
    assert torch.allclose(patched, expected, atol=1e-5) and not torch.allclose(patched, plain)
    assert torch.equal(after, plain)  # the hooks are gone after the patch set
    # every attention whose context has a width the file has: attn1 and attn2 of the 32-channel blocks (one down,
    # two up) and the mid block's attn2 (its attn1 is 64 wide): 7 layers × (to_k, to_v) × 2 networks
    widths = [w for _, w in attention_layers(model.unet)]
    assert widths.count(CONTEXT) == 7 and widths.count(MID) == 1
    assert len(patches.forward_pre_hooks) == 7 * 2 * 2


def test_it_changes_the_image_and_multiplier_zero_is_the_unpatched_image(model, folder):
    plain = gen(model, folder, "a red circle")
    full = gen(model, folder, "a red circle <hypernet:hn>")
    assert np.abs(pixels(full.images[0]) - pixels(plain.images[0])).max() > 2
    assert np.array_equal(pixels(full.images[0]), pixels(gen(model, folder, "a red circle <hypernet:hn:1>")
                                                          .images[0]))
    zero = gen(model, folder, "a red circle <hypernet:hn:0>")
    assert np.array_equal(pixels(zero.images[0]), pixels(plain.images[0]))
    # the prompt keeps the token (A1111 writes no other hypernetwork field), nothing is reported
    assert "<hypernet:hn>" in full.infotexts[0] and "Hypernet" not in full.infotexts[0].split("\n")[-1]
    assert full.comments == ""
    # nothing stays on the model
    assert np.array_equal(pixels(gen(model, folder, "a red circle").images[0]), pixels(plain.images[0]))


def test_self_attention_layers_are_reached(model, folder):
    """selfonly.pt has only the mid block's width (64), which only its self-attention has as context."""
    plain = gen(model, folder, "a red circle")
    self_only = gen(model, folder, "a red circle <hypernet:selfonly:1>")
    assert np.abs(pixels(self_only.images[0]) - pixels(plain.images[0])).max() > 0


def test_missing_and_malicious_files_are_reported_not_run(model, folder, tmp_path):
    out = gen(model, folder, "a red circle <hypernet:nosuch:0.5>")
    assert "Networks not found: nosuch" in out.comments
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    with open(folder / "evil.pt", "wb") as f:
        pickle.dump({CONTEXT: (Evil(), {})}, f, protocol=2)
    try:
        out = gen(model, folder, "a red circle <hypernet:evil>")
    finally:
        (folder / "evil.pt").unlink()
    assert not marker.exists()
    assert "Error loading hypernetwork evil" in out.comments and "refused" in out.comments
    with pytest.raises(ValueError, match="multiplier must be a number"):
        gen(model, folder, "a red circle <hypernet:hn:lots>")
