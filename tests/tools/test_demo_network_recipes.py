"""The recipes of the demo LoRA and the demo embedding (tools/demo_model/lora.py, embedding.py): their data, the
pixel measures of their effects, the kohya export's math against the adapters it was trained as, and the
embedding's placeholder tokens. Fast: rendered scenes and a tiny random-weight SD1 model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.engine.patches import PatchSet
from tests.support.engine_helpers import load_tiny
from tools.demo_model import analysis, data, models
from tools.demo_model import embedding as demo_emb
from tools.demo_model import lora as demo_lora


def _scenes(n: int, seed: int = 3) -> list[data.Scene]:
    rng = np.random.default_rng(seed)
    return [data.random_scene(rng, "train", n_objects=1) for _ in range(n)]


def test_outlines_are_hollow_and_filled_shapes_are_not():
    scenes = _scenes(48)
    filled = [analysis.hollowness(data.render(s)) for s in scenes]
    outline = [analysis.hollowness(data.render(s, mask=demo_lora.outline_mask)) for s in scenes]
    assert max(filled) == 0.0
    assert min(outline) >= 0.95


def test_an_outline_is_a_band_along_the_edge_of_the_shape():
    for s in _scenes(12, seed=5):
        full, band = data.shape_mask(s.objects[0]), demo_lora.outline_mask(s.objects[0])
        assert np.all(band <= full + 1e-6)
        assert 0.15 * full.sum() < band.sum() < 0.8 * full.sum()
    # the outline scenes keep what the caption says: colour and position read back from the band itself
    for s in _scenes(24, seed=6):
        res = analysis.analyze(data.render(s, mask=demo_lora.outline_mask))
        assert (res.color, res.position) == (s.objects[0].color, s.objects[0].position)


def test_outline_batches_come_from_the_training_split_only():
    _, captions = demo_lora.make_outline_batch(np.random.default_rng(0), 200)
    for cap in captions:
        for o in data.parse_caption(cap)[1]:
            assert not data.is_heldout(o["color"], o["shape"], o["position"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return load_tiny(tmp_path_factory.mktemp("tiny"))


def test_kohya_export_patches_the_weights_to_what_the_adapters_computed(tiny):
    """The exported file, read back as weight patches (W + alpha/rank · up · down) on the plain model, gives what the
    adapter modules gave during training; the keys follow kohya's diffusers-name layout."""
    layers = demo_lora.attach(tiny, rank=4)
    try:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for layer in layers.values():
                layer.up.weight.copy_(torch.randn(layer.up.weight.shape, generator=g) * 0.05)
        sd = demo_lora.kohya_state_dict(layers, dtype=torch.float32)
        x = torch.randn(1, 4, 8, 8, generator=g)
        ids = torch.randint(0, 1000, (1, 77), generator=g)
        t = torch.tensor([500])
        with torch.no_grad():
            ctx = tiny.text_encoders[0](ids).last_hidden_state
            want = tiny.unet(x, t, encoder_hidden_states=ctx).sample
            demo_lora.set_multiplier(layers, 0.0)
            base = tiny.unet(x, t, encoder_hidden_states=tiny.text_encoders[0](ids).last_hidden_state).sample
    finally:
        demo_lora.detach(tiny, layers)
    assert not any(isinstance(m, demo_lora.LoRALayer) for m in tiny.unet.modules())
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in sd
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight" in sd
    assert "lora_unet_down_blocks_0_attentions_0_proj_in.alpha" in sd
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in sd
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].dim() == 4  # 1x1 conv
    patches = PatchSet()
    for target, delta in demo_lora.file_patches(tiny, sd):
        patches.add_weight(target, delta)
    with torch.no_grad(), patches.applied(tiny):
        got = tiny.unet(x, t, encoder_hidden_states=tiny.text_encoders[0](ids).last_hidden_state).sample
    assert (want - base).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_embedding_scenes_have_a_pink_object_never_in_a_held_out_combination():
    rng = np.random.default_rng(2)
    for _ in range(500):
        s = demo_emb.scene(rng)
        pink = [o for o in s.objects if o.color == demo_emb.COLOR]
        assert len(pink) == 1
        assert (pink[0].shape, pink[0].position) not in demo_emb.HELDOUT
        assert demo_emb._fits(s.background, [o.color for o in s.objects])
        assert demo_emb.named(s.caption).count(demo_emb.NAME) == 1
    images, captions, masks = demo_emb.make_batch(np.random.default_rng(4), 16)
    for img, cap, mask in zip(images, captions, masks):  # the loss weight covers the pink object, and only it
        inside = mask > 0.99
        assert inside.sum() > 20
        assert np.all(np.abs(img[inside].astype(int) - demo_emb.RGB).max(axis=1) <= 1), cap
    captions = demo_emb.heldout_captions()
    assert len(captions) >= 48
    for cap in captions:
        o = demo_emb._parse(cap)
        assert (o["shape"], o["position"]) in demo_emb.HELDOUT


def test_the_embedding_name_takes_one_position_per_vector():
    tok = models.load_tokenizer()
    caps = ["a large pink circle on the right, blue background",
            "a small green square at the top and a large pink triangle at the bottom, gray background"]
    ids, starts = demo_emb.placeholder_ids(tok, caps, 3)
    assert ids.shape == (2, 77)
    plain = models.token_ids(tok, caps)
    name_len = len(tok(demo_emb.NAME, add_special_tokens=False)["input_ids"])
    for row, start, p in zip(ids.tolist(), starts.tolist(), plain.tolist()):
        at = p.index(tok("pink", add_special_tokens=False)["input_ids"][0])
        assert start == at and row[:start] == p[:at]
        assert row[start:start + 3] == [tok.pad_token_id] * 3
        assert row[start + 3:start + 3 + 10] == p[at + 1:at + 11]
    assert name_len > 1  # "demo-pink" is several BPE tokens; the vectors replace all of them


def test_the_web_ui_finds_every_module_of_the_kohya_export(tiny):
    """kohya names the text encoder's modules `lora_te_text_model_encoder_…` (transformers 4's layout); the loaded
    CLIP text model of transformers 5 has no `text_model` level, and the web UI's key index must still find them
    (before it did, the text-encoder half of every SD1 LoRA was dropped as 'did not match')."""
    from modules.networks import lora_keys

    layers = demo_lora.attach(tiny, rank=2)
    try:
        sd = demo_lora.kohya_state_dict(layers, dtype=torch.float32)
        where = {name: layer.where for name, layer in layers.items()}
    finally:
        demo_lora.detach(tiny, layers)
    index = lora_keys.ModuleIndex(tiny)
    names = {k.split(".")[0] for k in sd}
    assert any(n.startswith("lora_te_text_model_") for n in names)
    for name in names:
        target = index.lookup(name)
        assert target is not None, name
        assert (target.component, target.path) == where[name]
