"""The weight math of every LoRA / LyCORIS module kind A1111 v1.10.1's built-in Lora extension reads.

`build_module(key, tensors)` picks the kind from a module's tensor names, in A1111's order (lora, loha, ia3, lokr,
full, norm, glora, oft/boft), and returns a NetworkModule whose `weight_delta(weight, multiplier)` is A1111's `updown`
for that weight and `bias_delta` its extra bias. Scale, DoRA, the multiplier and shape fitting are shared
(lora_math_base); OFT/BOFT are in lora_math_oft.

The factor products come from lycoris-lora's `lycoris.functional` (LoRA/LoCon/Tucker, LoHa, LoKr), always with its
eager torch backend (`backend="torch"`): its automatic choice would pick Triton kernels or torch.compile on a GPU,
which costs warm-ups and changes numerics for an update computed once per job. Scale and multiplier are applied
here (A1111's rules), never through the library's `gamma`.
"""
from __future__ import annotations

import torch

from lycoris.functional import locon, loha, lokr
from lycoris.functional.general import tucker_weight_from_conv

from modules.networks.lora_math_base import NetworkModule, f32, scalar, shapes_error
from modules.networks.lora_math_oft import OftModule

__all__ = ["NetworkModule", "build_module", "KINDS"]

TORCH = "torch"   # lycoris.functional's eager backend (see the module docstring)


def _need(key: str, tensors: dict, names: tuple[str, ...]) -> None:
    for name in names:
        t = tensors.get(name)
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{key}: '{name}' must be a tensor, got {type(t).__name__}")


def _same(key, what, a, sa, b, sb):
    if sa != sb:
        raise shapes_error(key, what, a, [sa], b, [sb])


class LoraModule(NetworkModule):
    """LoRA (kohya), LoCon (k×k down, 1×1 up) and CP/Tucker LoCon (`lora_mid`): up @ down, rank = down's rows."""
    kind = "lora"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        self.up = tensors.get("lora_up.weight", tensors.get("lora_B.weight"))
        self.down = tensors.get("lora_down.weight", tensors.get("lora_A.weight"))
        self.mid = tensors.get("lora_mid.weight")
        up, down, mid = self.up, self.down, self.mid
        if up.dim() < 2 or down.dim() < 2:
            raise shapes_error(key, "LoRA factors must be 2-D or 4-D", "lora_up", up.shape, "lora_down", down.shape)
        self.rank = down.shape[0]
        if mid is None:
            _same(key, "LoRA rank", "lora_up.weight[1]", up.shape[1], "lora_down.weight[0]", down.shape[0])
        elif mid.dim() != 4 or mid.shape[0] != up.shape[1] or mid.shape[1] != down.shape[0]:
            raise shapes_error(key, "LoRA CP/Tucker: lora_mid must be [up rank, down rank, kh, kw]",
                               "lora_mid", mid.shape, "lora_up/lora_down ranks", (up.shape[1], down.shape[0]))

    def _update(self, weight):
        down, up, mid = f32(self.down, weight), f32(self.up, weight), f32(self.mid, weight)
        return locon.diff_weight(down, up, mid, gamma=1.0, backend=TORCH)

    def apply_to(self, weight: torch.Tensor, multiplier: float) -> torch.Tensor | None:
        """weight + delta in one pass (torch.addmm, the scale folded into the small up factor) for the common case —
        a plain LoRA/LoCon module without mid, DoRA or plain bias whose update has the weight's size; None otherwise
        (then weight_delta is used). The same math as weight_delta, without two weight-sized temporaries: patching
        an SD 1.5-size LoRA is dominated by these passes and the matmuls."""
        if self.mid is not None or self.dora_scale is not None or self.plain_bias is not None or multiplier == 0:
            return None
        out = self.up.shape[0]
        if weight.shape[0] != out or weight.numel() != out * self.down[0].numel():
            return None
        with torch.no_grad():
            w = weight.detach().to(torch.float32).reshape(out, -1)
            up = f32(self.up, w).reshape(out, -1) * (self.scale() * float(multiplier))
            down = f32(self.down, w).reshape(self.down.shape[0], -1)
            return torch.addmm(w, up, down).reshape(weight.shape)


class LohaModule(NetworkModule):
    """LoHa: (w1a @ w1b) ⊙ (w2a @ w2b), or with Tucker cores t1/t2 per factor; rank = w1b's rows."""
    kind = "loha"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        self.w1a, self.w1b = tensors["hada_w1_a"], tensors["hada_w1_b"]
        self.w2a, self.w2b = tensors["hada_w2_a"], tensors["hada_w2_b"]
        self.t1, self.t2 = tensors.get("hada_t1"), tensors.get("hada_t2")
        if (self.t1 is None) != (self.t2 is None):
            raise ValueError(f"{key}: LoHa with Tucker cores needs both hada_t1 and hada_t2, found "
                             f"{'hada_t1' if self.t1 is not None else 'hada_t2'} only")
        self.rank = self.w1b.shape[0]
        if self.t1 is None:   # up [out, r] @ down [r, in…]
            _same(key, "LoHa rank 1", "hada_w1_a[1]", self.w1a.shape[1], "hada_w1_b[0]", self.w1b.shape[0])
            _same(key, "LoHa rank 2", "hada_w2_a[1]", self.w2a.shape[1], "hada_w2_b[0]", self.w2b.shape[0])
            _same(key, "LoHa factor shapes", "hada_w1_a @ hada_w1_b",
                  (self.w1a.shape[0], self.w1b[0].numel()), "hada_w2_a @ hada_w2_b",
                  (self.w2a.shape[0], self.w2b[0].numel()))
        else:                 # t [r, r, kh, kw], a [r, out], b [r, in]
            for t, a, b, n in ((self.t1, self.w1a, self.w1b, 1), (self.t2, self.w2a, self.w2b, 2)):
                if t.dim() < 3 or (t.shape[0], t.shape[1]) != (a.shape[0], b.shape[0]):
                    raise shapes_error(key, f"LoHa Tucker {n}", f"hada_t{n}", t.shape,
                                       f"hada_w{n}_a/hada_w{n}_b ranks", (a.shape[0], b.shape[0]))

    def _update(self, weight):
        g = [f32(t, weight) for t in (self.w1b, self.w1a, self.w2b, self.w2a, self.t1, self.t2)]
        return loha.diff_weight(*g, gamma=1.0, backend=TORCH)


class LokrModule(NetworkModule):
    """LoKr: kron(w1, w2), each given whole or as a @ b (w2 also Tucker with t2). rank = w2b's rows, else w1b's,
    else none — so alpha / rank applies only when a factor is decomposed (A1111's rule)."""
    kind = "lokr"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        g = tensors.get
        self.w1, self.w1a, self.w1b = g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b")
        self.w2, self.w2a, self.w2b, self.t2 = g("lokr_w2"), g("lokr_w2_a"), g("lokr_w2_b"), g("lokr_t2")
        if self.w1 is None:
            _same(key, "LoKr w1 rank", "lokr_w1_a[1]", self.w1a.shape[1], "lokr_w1_b[0]", self.w1b.shape[0])
            self.rank = self.w1b.shape[0]
        if self.w2 is None:
            if self.t2 is None:
                _same(key, "LoKr w2 rank", "lokr_w2_a[1]", self.w2a.shape[1], "lokr_w2_b[0]", self.w2b.shape[0])
            elif self.t2.dim() < 3 or (self.t2.shape[0], self.t2.shape[1]) != (self.w2a.shape[0], self.w2b.shape[0]):
                raise shapes_error(key, "LoKr Tucker", "lokr_t2", self.t2.shape, "lokr_w2_a/lokr_w2_b ranks",
                                   (self.w2a.shape[0], self.w2b.shape[0]))
            self.rank = self.w2b.shape[0]

    def _update(self, weight):
        w1 = f32(self.w1, weight)
        w1a, w1b = (None, None) if w1 is not None else (f32(self.w1a, weight), f32(self.w1b, weight))
        w2 = f32(self.w2, weight)
        w2a, w2b, t2 = (None, None, None) if w2 is not None else \
            (f32(self.w2a, weight), f32(self.w2b, weight), f32(self.t2, weight))
        # kron_weight, not diff_weight: the latter divides by its own rank (w1a's first), A1111 by w2b's
        return lokr.kron_weight(w1, w1a, w1b, w2, w2a, w2b, t2, scale=1.0, backend=TORCH)


class Ia3Module(NetworkModule):
    """(IA)³: new weight = W · (1 + w·multiplier), w scaling the input axis when `on_input`, else the output axis.
    Hand-written: lycoris.functional has no IA3 weight function. A1111 multiplies a Linear's [out, in] weight by w
    (on_input) or w[:, None]; a Conv weight gets the same per-channel scaling here (A1111 broadcasts it wrongly)."""
    kind = "ia3"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        if "on_input" not in tensors:
            raise ValueError(f"{key}: an (IA)³ module ('weight') needs 'on_input'; found {sorted(tensors)}")
        self.w = tensors["weight"]
        self.on_input = bool(scalar(key, tensors, "on_input"))

    def _update(self, weight):
        w = f32(self.w, weight).reshape(-1)
        axis = 1 if self.on_input else 0
        if weight.dim() < 2 or w.numel() != weight.shape[axis]:
            raise shapes_error(self.key, f"(IA)³ scales the {'input' if self.on_input else 'output'} axis",
                               "weight", self.w.shape, "model weight", weight.shape)
        shape = [1] * weight.dim()
        shape[axis] = -1
        return weight * w.reshape(shape)


class FullModule(NetworkModule):
    """LyCORIS full: the stored difference `diff` (and `diff_b` for the bias). Nothing to compute."""
    kind = "full"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        self.diff, self.diff_b = tensors["diff"], tensors.get("diff_b")

    def _update(self, weight):
        return f32(self.diff, weight)

    def _bias_update(self):
        return self.diff_b


class NormModule(NetworkModule):
    """LyCORIS norm: `w_norm` added to a LayerNorm/GroupNorm weight, `b_norm` to its bias."""
    kind = "norm"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        self.w_norm, self.b_norm = tensors["w_norm"], tensors["b_norm"]

    def _update(self, weight):
        return f32(self.w_norm, weight)

    def _bias_update(self):
        return self.b_norm


class GloraModule(NetworkModule):
    """GLoRA: ΔW = W·A + B with low-rank A [in, in] and B [out, in]. Hand-written: lycoris.functional has no GLoRA
    weight function. Two layouts of the same four names:
    - older LyCORIS, the one A1111 v1.10.1 reads: a1 [r, in], a2 [in, r], b1 [r, in], b2 [out, r];
      ΔW = b2 @ b1 + (W @ a2) @ a1 on a Linear (a 1×1 Conv as its matrix), with no alpha scaling (A1111 gives GLoRA
      no rank);
    - LyCORIS 4: a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in, kh, kw] (+ `bm.weight` Tucker core);
      ΔW = (b1 @ b2 + W @ a1 @ a2) · alpha / r. A1111 v1.10.1 fails on these shapes (its module is skipped); we
      follow LyCORIS so that such a file still works.
    They are told apart by a1: wide (rank first) is the old layout, tall is LyCORIS 4; square (full rank) reads as
    the old one."""
    kind = "glora"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        self.a1, self.a2 = tensors["a1.weight"], tensors["a2.weight"]
        self.b1, self.b2 = tensors["b1.weight"], tensors["b2.weight"]
        self.bm = tensors.get("bm.weight")
        a1 = self.a1.reshape(self.a1.shape[0], -1)
        self.lycoris4 = a1.shape[0] > a1.shape[1]
        if self.lycoris4:
            self.rank = self.a2.shape[0]

    def _update(self, weight):
        a1, a2, b1, b2 = (f32(t, weight).reshape(t.shape[0], -1) for t in (self.a1, self.a2, self.b1, self.b2))
        if not self.lycoris4:
            w = weight.reshape(weight.shape[0], -1)
            if w.shape[1] != a2.shape[0]:
                raise shapes_error(self.key, "GLoRA (Linear or 1x1 Conv only)", "a2.weight", self.a2.shape,
                                   "weight", weight.shape)
            return b2 @ b1 + (w @ a2) @ a1
        if self.bm is not None:
            wb = tucker_weight_from_conv(b1, b2, f32(self.bm, weight))
        else:
            wb = b1 @ b2
        wa = torch.einsum("o i ..., i r, r j -> o j ...", weight, a1, a2)
        return wb.reshape(weight.shape) + wa


def _lokr_match(t):
    has1 = "lokr_w1" in t or ("lokr_w1_a" in t and "lokr_w1_b" in t)
    has2 = "lokr_w2" in t or ("lokr_w2_a" in t and "lokr_w2_b" in t)
    return has1 and has2


# A1111's module_types order: the first kind whose tensors are all there takes the module.
KINDS = (
    (LoraModule, lambda t: {"lora_up.weight", "lora_down.weight"} <= t.keys()
        or {"lora_A.weight", "lora_B.weight"} <= t.keys()),
    (LohaModule, lambda t: {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= t.keys()),
    (Ia3Module, lambda t: "weight" in t),
    (LokrModule, _lokr_match),
    (FullModule, lambda t: "diff" in t),
    (NormModule, lambda t: {"w_norm", "b_norm"} <= t.keys()),
    (GloraModule, lambda t: {"a1.weight", "a2.weight", "b1.weight", "b2.weight"} <= t.keys()),
    (OftModule, lambda t: "oft_blocks" in t or "oft_diag" in t),
)


def build_module(key: str, tensors: dict[str, torch.Tensor]) -> NetworkModule:
    """The module for one LoRA-file module's tensors (suffixes without the module prefix: 'lora_up.weight', 'alpha',
    'hada_w1_a', 'diff', 'oft_blocks', …). `key` names the module in errors. ValueError when no kind takes the
    suffixes or the factors do not fit together."""
    for cls, matches in KINDS:
        if matches(tensors):
            _need(key, tensors, tuple(k for k in tensors if k not in ("alpha", "scale", "on_input")))
            return cls(key, tensors)
    raise ValueError(f"{key}: no LoRA/LyCORIS module kind takes the suffixes {sorted(tensors)} (known: "
                     "lora_up/lora_down[/lora_mid] (lora), hada_w1_a/b+hada_w2_a/b (loha), weight+on_input (ia3), "
                     "lokr_w1[_a/_b]+lokr_w2[_a/_b] (lokr), diff[+diff_b] (full), w_norm+b_norm (norm), "
                     "a1/a2/b1/b2.weight (glora), oft_blocks or oft_diag (oft/boft))")
