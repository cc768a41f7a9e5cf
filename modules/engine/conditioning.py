"""Prompt text → text-encoder conditioning, with A1111's prompt syntax.

Emphasis ((a), [a], (a:1.3)) scales token embeddings and then restores each chunk's mean ("Original" mode); prompts
of any length are encoded in 75-token chunks (BREAK and comma back-off from prompt_chunks); [from:to:when] and [a|b]
give a different text per step; "A AND B:0.5" gives several conditionings combined by composable diffusion.
Works for SD1 (CLIP-L), SD2 (OpenCLIP-H) and SDXL (both, penultimate layers, plus the pooled embedding).
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass

import torch

from modules.engine import prompt_chunks, prompt_parser


@dataclass
class Conditioning:
    context: torch.Tensor                 # [batch, 77 * chunks, dim]
    pooled: torch.Tensor | None = None    # SDXL: [batch, pooled_dim]
    used_embeddings: tuple[str, ...] = ()  # textual-inversion names the text used (for "TI hashes")


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


# tokenizer → {embedding name: its token ids}: names are tokenized once per tokenizer (per loaded model), so a
# catalog of a thousand embeddings costs one batched tokenizer call, not one per prompt
_NAME_IDS: "weakref.WeakKeyDictionary[object, dict[str, list[int]]]" = weakref.WeakKeyDictionary()


def name_ids(tokenizer, names) -> dict[str, list[int]]:
    """The token ids of each name (without BOS/EOS), from the per-tokenizer cache."""
    known = _NAME_IDS.get(tokenizer)
    if known is None:
        known = _NAME_IDS[tokenizer] = {}
    missing = [n for n in names if n not in known]
    if missing:
        ids = tokenizer(missing, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        known.update(zip(missing, ids))
    return known


class EmbeddingIndex:
    """Textual-inversion vectors of one width as the tokenizer's lookup (prompt_chunks.EmbeddingLookup): indexed by
    the first token id of each name, longest name first, as A1111's ids_lookup, so a prompt without embeddings pays
    one dict lookup per token however many embeddings there are."""

    def __init__(self, tokenizer, width: int, embeddings: dict):
        ids_of = name_ids(tokenizer, embeddings)
        self.by_first: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
        self.names: dict[int, str] = {}  # id(vectors) → name, to tell which embeddings a prompt used
        for name, vectors in embeddings.items():
            candidates = vectors if isinstance(vectors, (list, tuple)) else [vectors]
            fitting = next((v for v in candidates if v.shape[-1] == width), None)
            ids = ids_of[name]
            if fitting is None or not ids:
                continue
            if fitting.dim() != 2:
                fitting = fitting.reshape(-1, width)
            self.by_first.setdefault(ids[0], []).append((ids, fitting))
            self.names[id(fitting)] = name
        for entries in self.by_first.values():
            entries.sort(key=lambda item: -len(item[0]))

    def __bool__(self) -> bool:
        return bool(self.by_first)

    def __call__(self, ids: list[int], pos: int):
        for name_ids_, vectors in self.by_first.get(ids[pos], ()):
            if ids[pos:pos + len(name_ids_)] == name_ids_:
                return vectors, vectors.shape[0], len(name_ids_)
        return None

    def used(self, chunks: list[prompt_chunks.Chunk]) -> list[str]:
        return [self.names[id(f.embedding)] for c in chunks for f in c.fixes if id(f.embedding) in self.names]


# tokenizer → {width: (name → id of its vectors, the embeddings (kept alive so the ids stay theirs), index)}: the
# last index per tokenizer and width, reused while a job's patch set holds the same names and tensor objects (a copy
# of the dict per job and per batch still matches; comparing the id maps is one C-level dict comparison)
_INDEXES: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def embedding_lookup(tokenizer, width: int, embeddings: dict | None) -> EmbeddingIndex | None:
    """Textual-inversion vectors of the job's patch set (name → [n, width] tensor, or a list of tensors of different
    widths for SDXL's two encoders) as the tokenizer's lookup: the longest name whose tokens start at `pos` wins."""
    if not embeddings:
        return None
    fingerprint = {name: id(vectors) for name, vectors in embeddings.items()}
    per_width = _INDEXES.get(tokenizer)
    if per_width is None:
        per_width = _INDEXES[tokenizer] = {}
    cached = per_width.get(width)
    if cached is not None and cached[0] == fingerprint:
        index = cached[2]
    else:
        index = EmbeddingIndex(tokenizer, width, embeddings)
        per_width[width] = (fingerprint, dict(embeddings), index)
    return index if index else None


def embedding_indexes(model, embeddings: dict | None) -> list[EmbeddingIndex | None]:
    """One lookup per text encoder of the model (built once per pass, not per prompt)."""
    return [embedding_lookup(tok, enc.get_input_embeddings().weight.shape[1], embeddings)
            for enc, tok in zip(model.text_encoders, model.tokenizers)]


@contextlib.contextmanager
def _with_fixes(encoder, chunks: list[prompt_chunks.Chunk]):
    """While encoding: the token-embedding output at each textual-inversion position replaced by its vectors (a
    forward hook, removed afterwards, so the encoder's weights are never touched)."""
    fixes = [(i, f) for i, c in enumerate(chunks) for f in c.fixes]
    if not fixes:
        yield
        return
    module = encoder.get_input_embeddings()

    def replace(_module, _inputs, output):
        output = output.clone()
        for row, fix in fixes:
            vec = fix.embedding.to(output.device, output.dtype)
            start = 1 + fix.offset  # after BOS
            n = min(vec.shape[0], output.shape[1] - start)
            output[row, start:start + n] = vec[:n]
        return output
    handle = module.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def encode_text(model, text: str, clip_skip: int = 1, embeddings: dict | None = None,
                indexes: list[EmbeddingIndex | None] | None = None) -> Conditioning:
    """One prompt (no AND, no scheduling left) → [1, 77 * chunks, dim] with emphasis applied. `indexes` (from
    embedding_indexes) saves rebuilding the embeddings' lookup for every prompt."""
    items = prompt_parser.parse_attention(text)
    per_encoder, pooled = [], None
    n_chunks = None
    if indexes is None:
        indexes = embedding_indexes(model, embeddings) if embeddings else [None] * len(model.text_encoders)
    used: list[str] = []
    for encoder, tokenizer, index in zip(model.text_encoders, model.tokenizers, indexes):
        chunks = prompt_chunks.tokenize_weighted(tokenizer, items, index)
        if index is not None:
            used += index.used(chunks)
        if n_chunks is not None and len(chunks) != n_chunks:  # the two SDXL tokenizers agree on CLIP BPE
            chunks = (chunks + chunks[-1:] * n_chunks)[:n_chunks]
        n_chunks = len(chunks)
        ids = torch.tensor([prompt_chunks.chunk_to_ids(c, tokenizer) for c in chunks], device=model.device)
        weights = torch.tensor([prompt_chunks.chunk_to_weights(c) for c in chunks], device=model.device)
        with _with_fixes(encoder, chunks):
            hidden, pooled_out = _encode_ids(encoder, ids, clip_skip, model.is_sdxl)
        hidden = hidden.float()
        if not torch.all(weights == 1):
            # "Original" emphasis: scale by the weights, then give each chunk back its unweighted mean
            before = hidden.mean(dim=(1, 2), keepdim=True)
            hidden = hidden * weights[..., None]
            hidden = hidden * (before / hidden.mean(dim=(1, 2), keepdim=True))
        per_encoder.append(hidden.reshape(1, -1, hidden.shape[-1]))
        if pooled_out is not None:
            pooled = pooled_out[:1].float()  # the first chunk's pooled output, as A1111 does
    return Conditioning(torch.cat(per_encoder, dim=-1), pooled, tuple(dict.fromkeys(used)))


def repeat_last(contexts: list[torch.Tensor]) -> list[torch.Tensor]:
    """A1111's batching of prompts of different lengths (its reconstruct_cond_batch): the shorter ones repeat their
    last vector up to the longest."""
    longest = max(c.shape[1] for c in contexts)
    return [c if c.shape[1] == longest else torch.cat([c, c[:, -1:].expand(-1, longest - c.shape[1], -1)], dim=1)
            for c in contexts]


def pad_contexts(model, contexts: list[torch.Tensor], clip_skip: int = 1) -> list[torch.Tensor]:
    """Prompts with fewer 75-token chunks are padded with the empty prompt's chunk so that all can be batched."""
    longest = max(c.shape[1] for c in contexts)
    if all(c.shape[1] == longest for c in contexts):
        return contexts
    empty = encode_text(model, "", clip_skip).context
    return [torch.cat([c] + [empty.expand(c.shape[0], -1, -1)] * ((longest - c.shape[1]) // empty.shape[1]), dim=1)
            for c in contexts]


@dataclass
class StepBatch:
    """The UNet batch for one step, in A1111's layout: the prompt rows first (for image b, cond_rows[b] lists
    (row, weight) of its AND parts), then one negative-prompt row per image (uncond_rows[b]; None without CFG)."""
    context: torch.Tensor
    pooled: torch.Tensor | None
    uncond_rows: list[int] | None
    cond_rows: list[list[tuple[int, float]]]
    # set when the prompt and negative-prompt rows have different token lengths and are run as two UNet batches
    # (A1111's default, "Pad prompt/negative prompt" off): `context` then holds the prompt rows only
    uncond_context: torch.Tensor | None = None
    padded: bool = False    # the shorter side was padded with empty-prompt chunks (A1111's "Pad conds")

    @functools.cached_property  # the batch object is reused while the texts stay the same
    def image_of_row(self) -> list[int]:
        extra = self.uncond_context.shape[0] if self.uncond_context is not None else 0
        rows = [0] * (self.context.shape[0] + extra)
        for b, parts in enumerate(self.cond_rows):
            for row, _ in parts:
                rows[row] = b
        for b, row in enumerate(self.uncond_rows or []):
            rows[row] = b
        return rows

    @functools.cached_property
    def n_cond(self) -> int:
        return sum(len(parts) for parts in self.cond_rows)

    def combine(self, out: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Classifier-free guidance with composable diffusion: u + Σ w·cfg·(c − u)."""
        results = []
        for b, parts in enumerate(self.cond_rows):
            if self.uncond_rows is None:
                results.append(out[parts[0][0]])
                continue
            u = out[self.uncond_rows[b]]
            results.append(u + sum(w * cfg_scale * (out[row] - u) for row, w in parts))
        return torch.stack(results)


class StepConditioner:
    """Encodes every text a job needs once, then gives the batch for any step.

    Prompt editing: schedules span `steps`; for the hires. fix pass (hires_steps given) A1111's rule applies — with
    the new timelines (use_old_scheduling False, A1111's default) integers count from the start of the base pass and
    fractions from 1.0 over the hires steps; with the old ones the base pass's schedule is reused."""

    def __init__(self, model, prompts: list[str], negative_prompts: list[str], steps: int, clip_skip: int,
                 cfg_scale: float, *, hires_steps: int | None = None, use_old_scheduling: bool = False,
                 embeddings: dict | None = None, pad_cond_uncond: bool = False):
        self.model, self.clip_skip, self.embeddings = model, clip_skip, embeddings
        self.pad_cond_uncond = pad_cond_uncond
        self.indexes = embedding_indexes(model, embeddings) if embeddings else None
        self.used_embeddings: dict[str, None] = {}  # ordered set of the embeddings the encoded texts used
        self._cache: dict[str, Conditioning] = {}
        self.parts = []  # per image: [(schedule, weight)]

        def schedules(texts: list[str]):
            return prompt_parser.prompt_schedules(texts, steps, hires_steps=hires_steps,
                                                  use_old_scheduling=use_old_scheduling)
        for prompt in prompts:
            text, _networks = prompt_parser.strip_extra_networks(prompt)
            subs = prompt_parser.split_and(text) or [("", 1.0)]
            self.parts.append([(sched, w) for sched, (_, w) in zip(schedules([s for s, _ in subs]), subs)])
        single = all(len(p) == 1 and p[0][1] == 1.0 for p in self.parts)
        self.use_uncond = not (single and cfg_scale == 1.0)
        self.negatives = [schedules([prompt_parser.strip_extra_networks(n)[0]])[0]
                          for n in negative_prompts] if self.use_uncond else None
        self._last_key = None
        self._last_batch: StepBatch | None = None

    def _get(self, text: str) -> Conditioning:
        if text not in self._cache:
            cond = encode_text(self.model, text, self.clip_skip, self.embeddings, self.indexes)
            self.used_embeddings.update(dict.fromkeys(cond.used_embeddings))
            self._cache[text] = cond
        return self._cache[text]

    @staticmethod
    def _at(schedule: list[tuple[int, str]], step: int) -> str:
        # A1111: the first entry whose end step is >= the (0-based) current step
        return next((text for end, text in schedule if step <= end), schedule[-1][1])

    def batch(self, step: int) -> StepBatch:
        texts, cond_rows = [], []
        for parts in self.parts:
            rows = []
            for schedule, weight in parts:
                rows.append((len(texts), weight))
                texts.append(self._at(schedule, step))
            cond_rows.append(rows)
        uncond_rows = None
        if self.use_uncond:
            uncond_rows = list(range(len(texts), len(texts) + len(self.negatives)))
            texts += [self._at(s, step) for s in self.negatives]
        key = tuple(texts)
        if key == self._last_key:
            return self._last_batch
        conds = [self._get(t) for t in texts]
        n_cond = sum(len(r) for r in cond_rows)
        cond = torch.cat(repeat_last([c.context for c in conds[:n_cond]]))
        uncond = torch.cat(repeat_last([c.context for c in conds[n_cond:]])) if uncond_rows else None
        pooled = torch.cat([c.pooled for c in conds]) if conds[0].pooled is not None else None
        separate, padded = None, False
        if uncond is not None and uncond.shape[1] != cond.shape[1]:
            if self.pad_cond_uncond:
                cond, uncond = pad_contexts(self.model, [cond, uncond], self.clip_skip)
                padded = True
            else:
                separate = uncond
        context = cond if separate is not None or uncond is None else torch.cat([cond, uncond])
        self._last_key = key
        self._last_batch = StepBatch(context, pooled, uncond_rows, cond_rows, separate, padded)
        return self._last_batch
