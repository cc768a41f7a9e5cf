"""Prompt text → text-encoder conditioning, for SD1 (CLIP-L), SD2 (OpenCLIP-H) and SDXL (both, plus pooled).

Prompts of any length are split into 75-token chunks, each encoded as 77 tokens with BOS/EOS and padding, and the
chunks' embeddings concatenated (A1111's rule, so prompts have no length limit).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 75


@dataclass
class Conditioning:
    context: torch.Tensor                 # [batch, 77 * chunks, dim]
    pooled: torch.Tensor | None = None    # SDXL: [batch, pooled_dim]


def chunk_token_ids(tokenizer, text: str) -> list[list[int]]:
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    chunks = [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)] or [[]]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    return [[bos] + c + [eos] + [pad] * (CHUNK - len(c)) for c in chunks]


def token_count(tokenizer, text: str) -> tuple[int, int]:
    """(tokens used, limit) for the UI counter: '17/75', '80/150'."""
    n = len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
    return n, max(CHUNK, -(-n // CHUNK) * CHUNK)


def _encode_ids(encoder, ids: torch.Tensor, clip_skip: int, sdxl_layer: bool):
    out = encoder(ids, output_hidden_states=True)
    if sdxl_layer:  # SDXL conditions on the penultimate layer, without the final layer norm
        hidden = out.hidden_states[-2]
    elif clip_skip > 1:
        hidden = out.hidden_states[-clip_skip]
        final_ln = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
        hidden = final_ln(hidden)
    else:
        hidden = out.last_hidden_state
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled


@torch.no_grad()
def encode(model, prompts: list[str], clip_skip: int = 1) -> Conditioning:
    sdxl = model.is_sdxl
    contexts, pooled_all = [], []
    for text in prompts:
        per_encoder, pooled = [], None
        for encoder, tokenizer in zip(model.text_encoders, model.tokenizers):
            chunks = torch.tensor(chunk_token_ids(tokenizer, text), device=model.device)
            hidden, pooled_out = _encode_ids(encoder, chunks, clip_skip, sdxl)
            per_encoder.append(hidden.reshape(1, -1, hidden.shape[-1]))  # chunks concatenated along tokens
            if pooled_out is not None:
                pooled = pooled_out[:1]  # the first chunk's pooled output, as A1111 does
        contexts.append(torch.cat(per_encoder, dim=-1))
        if pooled is not None:
            pooled_all.append(pooled)
    return Conditioning(torch.cat(pad_contexts(model, contexts, clip_skip)),
                        torch.cat(pooled_all) if pooled_all else None)


def pad_contexts(model, contexts: list[torch.Tensor], clip_skip: int = 1) -> list[torch.Tensor]:
    """Prompts with fewer 75-token chunks are padded with the empty prompt's chunk so that all can be batched."""
    longest = max(c.shape[1] for c in contexts)
    if all(c.shape[1] == longest for c in contexts):
        return contexts
    empty = encode(model, [""], clip_skip).context
    return [torch.cat([c] + [empty.expand(c.shape[0], -1, -1)] * ((longest - c.shape[1]) // empty.shape[1]), dim=1)
            for c in contexts]
