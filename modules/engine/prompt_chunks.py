"""Weighted prompt text → 75-token CLIP chunks, following A1111's rules (sd_hijack_clip.tokenize_line).

- every (text, weight) item is tokenized on its own, without BOS/EOS;
- tokens fill 75-token chunks; a chunk is closed when the next token does not fit;
- comma back-off: when a chunk is full and its last comma lies within the last 20 tokens, the tokens after that comma
  move to the next chunk (A1111's comma_padding_backtrack=20), so phrases are not cut in half;
- a BREAK item closes the current chunk (even an empty one), padding it;
- an empty prompt gives one chunk of padding.

Chunks hold the 75 content positions only; chunk_to_ids/chunk_to_weights add BOS and EOS for the text encoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from modules.engine.prompt_parser import BREAK_ITEM, parse_attention, prompt_schedules, split_and, \
    strip_extra_networks

__all__ = ["CHUNK_LENGTH", "COMMA_BACKTRACK", "Chunk", "ChunkFix", "EmbeddingLookup", "tokenize_weighted",
           "tokenize_weighted_with_count", "chunk_to_ids", "chunk_to_weights", "token_count"]

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20


@dataclass
class ChunkFix:
    """A textual-inversion embedding placed at `offset` (0-based, within the chunk's 75 positions)."""
    offset: int
    embedding: Any


@dataclass
class Chunk:
    tokens: list[int]                 # exactly 75 ids once built by tokenize_weighted (padded with the pad id)
    weights: list[float]              # 75 emphasis multipliers (1.0 on padding)
    fixes: list[ChunkFix] = field(default_factory=list)
    length: int | None = None         # how many of the 75 are real tokens (the rest is padding)


# (token ids of one item, position) -> (embedding, vectors it takes in the chunk, ids it consumes) or None.
# The hook that textual-inversion support can pass; embeddings occupy placeholder id 0 as in A1111.
EmbeddingLookup = Callable[[list[int], int], "tuple[Any, int, int] | None"]


def _comma_id(tokenizer) -> int | None:
    ids = tokenizer(",", add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _tokenize_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def tokenize_weighted_with_count(tokenizer, items: list[tuple[str, float]],
                                 find_embedding: EmbeddingLookup | None = None) -> tuple[list[Chunk], int]:
    """tokenize_weighted, plus A1111's token count: 75 for every chunk but the last (BREAK and comma back-off
    padding included), and the real tokens of the last."""
    pad = tokenizer.pad_token_id
    comma = _comma_id(tokenizer)
    texts = [text for text, weight in items if not _is_break(text, weight)]
    tokenized = iter(_tokenize_texts(tokenizer, texts))

    chunks: list[Chunk] = []
    cur_tokens: list[int] = []
    cur_weights: list[float] = []
    cur_fixes: list[ChunkFix] = []
    count = 0
    last_comma = -1

    def close(is_last: bool = False) -> None:
        nonlocal cur_tokens, cur_weights, cur_fixes, count, last_comma
        length = len(cur_tokens)
        count += length if is_last else CHUNK_LENGTH
        fill = max(0, CHUNK_LENGTH - length)
        chunks.append(Chunk(cur_tokens + [pad] * fill, cur_weights + [1.0] * fill, cur_fixes, length))
        cur_tokens, cur_weights, cur_fixes = [], [], []
        last_comma = -1

    for text, weight in items:
        if _is_break(text, weight):
            close()
            continue
        ids = next(tokenized)
        pos = 0
        while pos < len(ids):
            token = ids[pos]
            if token == comma:
                last_comma = len(cur_tokens)
            elif (len(cur_tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(cur_tokens) - last_comma <= COMMA_BACKTRACK):
                cut = last_comma + 1
                moved_tokens, moved_weights = cur_tokens[cut:], cur_weights[cut:]
                moved_fixes = [ChunkFix(f.offset - cut, f.embedding) for f in cur_fixes if f.offset >= cut]
                cur_tokens, cur_weights = cur_tokens[:cut], cur_weights[:cut]
                cur_fixes = [f for f in cur_fixes if f.offset < cut]
                close()
                cur_tokens, cur_weights, cur_fixes = moved_tokens, moved_weights, moved_fixes

            if len(cur_tokens) == CHUNK_LENGTH:
                close()

            found = find_embedding(ids, pos) if find_embedding is not None else None
            if found is None:
                cur_tokens.append(token)
                cur_weights.append(weight)
                pos += 1
                continue
            embedding, n_vectors, n_ids = found
            if len(cur_tokens) + n_vectors > CHUNK_LENGTH:
                close()
            cur_fixes.append(ChunkFix(len(cur_tokens), embedding))
            cur_tokens += [0] * n_vectors
            cur_weights += [weight] * n_vectors
            pos += max(1, n_ids)

    if cur_tokens or not chunks:
        close(is_last=True)
    return chunks, count


def tokenize_weighted(tokenizer, items: list[tuple[str, float]],
                      find_embedding: EmbeddingLookup | None = None) -> list[Chunk]:
    """(text, weight) items (from parse_attention) → 75-token chunks with per-token weights."""
    return tokenize_weighted_with_count(tokenizer, items, find_embedding)[0]


def _is_break(text: str, weight: float) -> bool:
    return text == BREAK_ITEM[0] and weight == BREAK_ITEM[1]


def chunk_to_ids(chunk: Chunk, tokenizer) -> list[int]:
    """The 77 ids for the text encoder: BOS, the chunk's tokens, EOS. The EOS goes right after the real tokens, as in
    A1111 (for SD1 the pad id is the EOS id, so this is just [BOS] + tokens + [EOS]; for OpenCLIP tokenizers that
    pad with 0 it gives [BOS] + text + [EOS] + [0...], which is what the pooled output of SDXL depends on)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    n = len(chunk.tokens) if chunk.length is None else chunk.length
    return [bos] + chunk.tokens[:n] + [eos] + chunk.tokens[n:]


def chunk_to_weights(chunk: Chunk) -> list[float]:
    """The 77 weights matching chunk_to_ids: 1.0 at BOS and EOS."""
    n = len(chunk.weights) if chunk.length is None else chunk.length
    return [1.0] + chunk.weights[:n] + [1.0] + chunk.weights[n:]


def token_count(tokenizer, prompt: str, steps: int = 20, *, is_positive: bool = True,
                find_embedding: EmbeddingLookup | None = None) -> tuple[int, int]:
    """(tokens used, limit) for the UI counter ("17/75", "80/150"), as A1111's: extra networks removed, AND split
    (positive prompts), every prompt-editing variant over `steps` counted and the longest one reported, emphasis
    syntax removed, padding added by BREAK and comma back-off counted; a textual-inversion embedding found by
    `find_embedding` counts as its number of vectors. The limit is the next multiple of 75."""
    text, _ = strip_extra_networks(prompt)
    subprompts = [sub for sub, _ in split_and(text)] if is_positive else [text]
    variants: list[str] = []
    for schedule in prompt_schedules(subprompts, steps):
        variants.extend(t for _, t in schedule)
    used = max((tokenize_weighted_with_count(tokenizer, parse_attention(v), find_embedding)[1]
                for v in dict.fromkeys(variants)), default=0)
    return used, -(-max(used, 1) // CHUNK_LENGTH) * CHUNK_LENGTH
