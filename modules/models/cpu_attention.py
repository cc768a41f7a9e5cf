"""Attention for bf16 models on the CPU: the query rows a block at a time, each block through two bf16 matrix products
and an in-place softmax.

Why our own rather than torch's scaled_dot_product_attention: on a CPU with AVX-512 bf16 but no AMX (the machines
this project is measured on), SDPA's flash kernel runs its small block products at a fraction of what oneDNN's
batched bf16 product does, and SD's self-attention over 4,096 tokens (512² images; 16,384 in the VAE at 1024²) is then
half of a UNet step. Measured on one such machine (2 cores, torch 2.13; docs/PERFORMANCE.md): (2, 8, 4096, 40) — SD
1.5's first level — 307 ms with SDPA, 180 ms here; (2, 10, 4096, 64) (SDXL) 526 → 281 ms; the VAE's (1, 1, 4096,
512) 182 → 54 ms. Two things make it fast: one score buffer per call, reused by every block (a fresh 8–16 MB tensor
per block costs more in page faults than the products), and blocks of at least 128 query rows (more while the
buffer stays within 16 MiB).

Precision: the scores come out of the bf16 product rounded to bf16 (SDPA keeps them in fp32), so the result differs
from fp32 attention by about twice what SDPA-in-bf16 does (rms 0.4 % against 0.2 % of the output at logits up to 15;
the inputs' own bf16 rounding is of the same order). Only long attention in bf16 on the CPU comes here; masks, other
precisions, other devices and cross-attention over the 77 text tokens go to SDPA as before.
"""
from __future__ import annotations

import torch

MIN_KEYS = 256                 # shorter key sequences (text tokens) go to SDPA: no gain there
BUFFER_BYTES = 16 * 2 ** 20    # the score buffer one block fills


def block_rows(batch_heads: int, keys: int, element_size: int = 2) -> int:
    """Query rows per block: 128, or more (a power of two, up to 1024) while the score buffer stays within
    BUFFER_BYTES. Fewer than 128 rows per product costs more than a larger buffer does: (2, 8, 9216, 40) — SD 1.5 at
    768² — 1.20 s with 32 rows (16 MiB), 0.97 s with 128 (36 MiB)."""
    rows = 128
    while rows < 1024 and batch_heads * rows * 2 * keys * element_size <= BUFFER_BYTES:
        rows *= 2
    return rows


def chunked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v for (batch, heads, tokens, dim) tensors, the query tokens a block at a time."""
    b, h, n, d = query.shape
    q = (query * scale).reshape(b * h, n, d)
    kt = key.reshape(b * h, -1, d).transpose(1, 2).contiguous()
    v = value.reshape(b * h, -1, value.shape[-1])
    out = torch.empty(b * h, n, v.shape[-1], dtype=query.dtype, device=query.device)
    rows = min(n, block_rows(b * h, kt.shape[-1], query.element_size()))
    scores = torch.empty(b * h, rows, kt.shape[-1], dtype=query.dtype, device=query.device)
    for start in range(0, n, rows):
        m = min(rows, n - start)
        s = torch.bmm(q[:, start:start + m], kt, out=scores[:, :m])
        s.sub_(s.amax(dim=-1, keepdim=True)).exp_()
        total = s.sum(dim=-1, keepdim=True)
        torch.bmm(s, v, out=out[:, start:start + m]).div_(total)
    return out.view(b, h, n, -1)


class CpuAttnProcessor:
    """A diffusers attention processor (what AttnProcessor2_0 computes) whose attention product is
    chunked_attention for bf16 on the CPU with MIN_KEYS keys or more; every other call goes to AttnProcessor2_0."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.fallback = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        keys_from = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        long_keys = (keys_from.shape[-2] if keys_from.ndim == 3 else keys_from.shape[-1] * keys_from.shape[-2])
        if (attention_mask is not None or args or kwargs or hidden_states.device.type != "cpu"
                or hidden_states.dtype != torch.bfloat16 or long_keys < MIN_KEYS):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads

        def heads(t):
            return t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        query, key, value = heads(query), heads(key), heads(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = chunked_attention(query, key, value, head_dim ** -0.5)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if four_d:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
