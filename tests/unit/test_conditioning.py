"""Prompt syntax reaching the text encoder: weights, chunks, BREAK, prompt editing and AND."""
from __future__ import annotations

import pytest
import torch

from modules.engine import conditioning
from tests.support.model_factory import manager_for, write_tiny_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    (root / "Stable-diffusion").mkdir()
    write_tiny_checkpoint(root / "Stable-diffusion" / "m.safetensors", "sd1", seed=1)
    return manager_for(root).require()


def ctx(model, text):
    return conditioning.encode_text(model, text).context


def test_weight_changes_conditioning_and_one_is_neutral(model):
    plain = ctx(model, "a red cat")
    assert torch.equal(ctx(model, "a (red:1.0) cat"), plain)
    heavy = ctx(model, "a (red:1.5) cat")
    light = ctx(model, "a [red] cat")
    assert not torch.allclose(heavy, plain) and not torch.allclose(light, plain)
    # "Original" emphasis keeps the chunk's mean
    assert torch.allclose(heavy.mean(), plain.mean(), atol=1e-5)
    # only the weighted token's row is scaled before the mean is restored: token rows 1 (a), 2 (red), 3 (cat)
    ratio = heavy[0, 2] / plain[0, 2]
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), atol=1e-4)


def test_long_prompts_and_break_make_more_chunks(model):
    assert ctx(model, "cat " * 10).shape[1] == 77
    assert ctx(model, "cat " * 100).shape[1] == 154
    assert ctx(model, "a cat BREAK a dog").shape[1] == 154
    assert torch.equal(ctx(model, "a cat BREAK a dog")[:, 77:], ctx(model, "a dog"))


def test_prompt_editing_switches_text_at_the_step(model):
    sc = conditioning.StepConditioner(model, ["a [cat:dog:2] on grass"], [""], steps=4, clip_skip=1, cfg_scale=7)
    cat, dog = ctx(model, "a cat on grass"), ctx(model, "a dog on grass")
    assert [torch.equal(sc.batch(i).context[:1], cat) for i in range(4)] == [True, True, True, False]
    assert torch.equal(sc.batch(3).context[:1], dog)
    alt = conditioning.StepConditioner(model, ["[red|blue] ball"], [""], steps=4, clip_skip=1, cfg_scale=7)
    red, blue = ctx(model, "red ball"), ctx(model, "blue ball")
    # A1111 matches the 0-based sampling step against 1-based schedule ends, so the first text covers two steps
    assert [torch.equal(alt.batch(i).context[:1], red) for i in range(4)] == [True, True, False, True]
    assert torch.equal(alt.batch(2).context[:1], blue)


def test_and_combines_parts_with_weights(model):
    sc = conditioning.StepConditioner(model, ["a cat AND a dog:0.5"], ["ugly"], steps=2, clip_skip=1, cfg_scale=3)
    batch = sc.batch(0)
    # A1111's layout: the prompt rows (both AND parts) first, then the negative prompt's row
    assert batch.uncond_rows == [2] and batch.cond_rows == [[(0, 1.0), (1, 0.5)]]
    assert torch.equal(batch.context[1:2], ctx(model, "a dog"))
    out = torch.stack([torch.full((2,), 3.0), torch.full((2,), 5.0), torch.full((2,), 1.0)])
    # u + 3*(1*(c1-u) + 0.5*(c2-u)) = 1 + 3*(2 + 2) = 13
    assert torch.equal(batch.combine(out, 3.0), torch.full((1, 2), 13.0))


def test_cfg_one_skips_the_unconditional_pass(model):
    sc = conditioning.StepConditioner(model, ["a cat"], ["ugly"], steps=2, clip_skip=1, cfg_scale=1.0)
    assert sc.batch(0).uncond_rows is None and sc.batch(0).context.shape[0] == 1


def test_clip_skip_uses_an_earlier_layer(model):
    assert not torch.allclose(conditioning.encode_text(model, "a cat", clip_skip=2).context, ctx(model, "a cat"))
