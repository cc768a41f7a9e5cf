"""Per-job model patches: applied when a job starts, removed when it ends, whatever happens in between.

A PatchSet collects what a job changes on the loaded model — weight deltas on named parameters (LoRA and its
relatives), textual-inversion vectors, attention processors, forward hooks and forward pre-hooks on named modules
(hypernetworks change the context that reaches an attention's to_k/to_v), tiling —
and `applied(model)` is the context manager that puts them on and takes them off. Weights are restored from a copy
of the originals taken before the first change (not by subtracting the delta again, which would not give the same
bits back in half precision), so after any job the model is bitwise what it was and changing patch sets between jobs
never reloads the checkpoint. Only the patched tensors are copied.

Textual-inversion vectors never touch the model: the conditioning code reads `embeddings` and swaps them in at the
token-embedding output while it encodes (modules/engine/conditioning.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class WeightPatch:
    """new weight = weight + strength · delta (delta broadcast to the weight's shape), or `fn(weight)` when given
    (fn gets the weight in float32), or `value` as it is (a weight computed in an earlier job and kept)."""
    target: str                             # "unet.down_blocks.0....to_q.weight", "text_encoder.….weight"
    delta: torch.Tensor | None = None
    strength: float = 1.0
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    source: str = ""                        # which network asked for it (for messages)
    value: torch.Tensor | None = None
    # called with the new weight in the parameter's dtype once it is computed (so a network can keep it)
    on_result: Callable[[torch.Tensor], None] | None = None


@dataclass
class PatchSet:
    weights: list[WeightPatch] = field(default_factory=list)
    embeddings: dict[str, torch.Tensor | list[torch.Tensor]] = field(default_factory=dict)
    attention_processors: dict[str, object] = field(default_factory=dict)   # UNet attention-processor name → proc
    forward_hooks: list[tuple[str, Callable]] = field(default_factory=list)  # (module path, hook(module, in, out))
    tiling: bool = False
    # (module path, hook(module, args) -> new args or None), registered in order, so several chain as A1111 chains them
    forward_pre_hooks: list[tuple[str, Callable]] = field(default_factory=list)
    # name → its short hash, for "TI hashes" in the infotext (only the embeddings a prompt used); None: not written
    embedding_hash: Callable[[str], str | None] | None = None

    def add_weight(self, target: str, delta: torch.Tensor | None = None, strength: float = 1.0,
                   fn: Callable | None = None, source: str = "") -> None:
        self.weights.append(WeightPatch(target, delta, strength, fn, source))

    def __bool__(self) -> bool:
        return bool(self.weights or self.embeddings or self.attention_processors or self.forward_hooks
                    or self.forward_pre_hooks or self.tiling)

    def copy(self, tiling: bool | None = None) -> "PatchSet":
        """A copy whose lists and dicts can be added to without touching this one (a batch's patches)."""
        return dataclasses.replace(
            self, weights=list(self.weights), embeddings=dict(self.embeddings),
            attention_processors=dict(self.attention_processors), forward_hooks=list(self.forward_hooks),
            forward_pre_hooks=list(self.forward_pre_hooks), tiling=self.tiling if tiling is None else tiling)

    @contextlib.contextmanager
    def applied(self, model):
        with contextlib.ExitStack() as stack:
            if self.weights:
                stack.enter_context(_weights(model, self.weights))
            if self.attention_processors:
                stack.enter_context(_attention(model, self.attention_processors))
            for path, hook in self.forward_pre_hooks:
                stack.callback(_module(model, path).register_forward_pre_hook(hook).remove)
            for path, hook in self.forward_hooks:
                stack.callback(_module(model, path).register_forward_hook(hook).remove)
            if self.tiling:
                stack.enter_context(seamless(model))
            yield model


def _module(model, path: str) -> torch.nn.Module:
    head, _, rest = path.partition(".")
    if head == "text_encoder" and not hasattr(model, "text_encoder"):
        root = model.text_encoders[0]
    elif head.startswith("text_encoder_") and head[13:].isdigit():
        root = model.text_encoders[int(head[13:]) - 1]
    else:
        root = getattr(model, head)
    return root.get_submodule(rest) if rest else root


def _parameter(model, target: str) -> torch.Tensor:
    path, _, name = target.rpartition(".")
    module = _module(model, path)
    tensor = getattr(module, name, None)
    if not isinstance(tensor, torch.Tensor):
        raise KeyError(f"patch target {target!r}: {type(module).__name__} has no tensor {name!r}")
    return tensor


@contextlib.contextmanager
def _weights(model, patches: list[WeightPatch]):
    originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        with torch.no_grad():
            for patch in patches:
                tensor = _parameter(model, patch.target)
                if id(tensor) not in originals:
                    originals[id(tensor)] = (tensor, tensor.detach().clone())
                if patch.value is not None:
                    tensor.copy_(patch.value)
                    continue
                if patch.fn is not None:
                    new = patch.fn(tensor.detach().float())
                else:
                    new = tensor.detach().float() + patch.strength * patch.delta.to(tensor.device, torch.float32)\
                        .reshape(tensor.shape)
                new = new.to(tensor.dtype)
                tensor.copy_(new)
                if patch.on_result is not None:
                    patch.on_result(new if new.data_ptr() != tensor.data_ptr() else new.clone())
        yield
    finally:
        with torch.no_grad():
            for tensor, backup in originals.values():
                tensor.copy_(backup)


@contextlib.contextmanager
def _attention(model, processors: dict[str, object]):
    unet = model.unet
    before = dict(unet.attn_processors)
    unknown = [name for name in processors if name not in before]
    if unknown:
        raise KeyError(f"attention processor {unknown[0]!r} does not exist in this UNet")
    try:
        unet.set_attn_processor({**before, **processors})
        yield
    finally:
        unet.set_attn_processor(before)


@contextlib.contextmanager
def seamless(model):
    """Tiling: every convolution of the UNet and the VAE pads circularly, so the image wraps around at its edges."""
    convs = [m for net in (model.unet, model.vae) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    old = [c.padding_mode for c in convs]
    for c in convs:
        c.padding_mode = "circular"
    try:
        yield
    finally:
        for c, mode in zip(convs, old):
            c.padding_mode = mode
