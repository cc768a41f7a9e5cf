"""The CPU's blocked bf16 attention (modules/models/cpu_attention.py): the same result as SDPA within bf16's error, in
diffusers' Attention modules of the UNet (3-D tokens, self and cross) and of the VAE (4-D, group norm, residual)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from modules.models import cpu_attention as ca


def qkv(shape, seed=0, logit_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * logit_scale ** 0.5 for _ in range(3)]


@pytest.mark.parametrize("shape", [(2, 8, 300, 40), (1, 1, 1030, 64), (3, 2, 250, 16)])
def test_blocked_attention_matches_fp32_attention(shape, monkeypatch):
    monkeypatch.setattr(ca, "BUFFER_BYTES", 64 * 1024)   # small blocks: several blocks and a remainder
    q, k, v = qkv(shape, logit_scale=3.0)
    rows = ca.block_rows(shape[0] * shape[1], shape[2])
    assert rows < shape[2] and shape[2] % rows
    want = F.scaled_dot_product_attention(q, k, v)
    got = ca.chunked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), shape[-1] ** -0.5).float()
    sdpa_bf16 = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    err, sdpa_err = (got - want).pow(2).mean().sqrt(), (sdpa_bf16 - want).pow(2).mean().sqrt()
    assert err <= 3 * sdpa_err + 1e-4, (err, sdpa_err)       # bf16 scores: about twice SDPA-in-bf16's error
    assert (got - want).abs().max() <= 3 * (sdpa_bf16 - want).abs().max() + 1e-3


def test_block_rows_keep_the_buffer_bounded():
    assert ca.block_rows(16, 4096) == 128                    # SD 1.5, 512²: 16 MiB of bf16 scores
    assert ca.block_rows(1, 4096) == 1024                    # capped
    assert ca.block_rows(1, 16384) == 512
    assert ca.block_rows(40, 16384) == 128                   # floor: a larger buffer rather than thin blocks


def attention_pair(**kw):
    torch.manual_seed(0)
    ours = Attention(**kw).eval()
    theirs = Attention(**kw).eval()
    theirs.load_state_dict(ours.state_dict())
    ours.set_processor(ca.CpuAttnProcessor())
    theirs.set_processor(AttnProcessor2_0())
    return ours.to(torch.bfloat16), theirs.to(torch.bfloat16)


def test_unet_self_and_cross_attention_in_bf16():
    ours, theirs = attention_pair(query_dim=64, heads=4, dim_head=16)
    x = torch.randn(2, 320, 64).bfloat16()
    with torch.no_grad():                                   # self-attention: the blocked path
        torch.testing.assert_close(ours(x).float(), theirs(x).float(), atol=0.03, rtol=0.05)
    ours, theirs = attention_pair(query_dim=64, heads=4, dim_head=16, cross_attention_dim=32)
    text = torch.randn(2, 77, 32).bfloat16()
    with torch.no_grad():                                   # over the text tokens: SDPA, the same numbers
        assert torch.equal(ours(x, encoder_hidden_states=text), theirs(x, encoder_hidden_states=text))


def test_vae_attention_4d_with_group_norm_and_residual():
    ours, theirs = attention_pair(query_dim=32, heads=1, dim_head=32, norm_num_groups=8, residual_connection=True,
                                  rescale_output_factor=1.0, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)
    x = torch.randn(1, 32, 20, 20).bfloat16()               # 400 tokens
    with torch.no_grad():
        torch.testing.assert_close(ours(x).float(), theirs(x).float(), atol=0.03, rtol=0.05)


def test_fp32_and_masks_go_to_sdpa_unchanged():
    ours, theirs = attention_pair(query_dim=64, heads=4, dim_head=16)
    ours, theirs = ours.float(), theirs.float()
    x = torch.randn(1, 300, 64)
    mask = torch.zeros(1, 1, 300)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
        ours_b, theirs_b = ours.bfloat16(), theirs.bfloat16()
        xb = x.bfloat16()
        assert torch.equal(ours_b(xb, attention_mask=mask.bfloat16()), theirs_b(xb, attention_mask=mask.bfloat16()))
