"""OFT and BOFT as A1111 v1.10.1 reads them: the output channels of W rotated by orthogonal blocks.

Two forms: `oft_blocks` (kohya's OFT and LyCORIS ≥ 2's diag-OFT/BOFT) holds Q, turned into R by the Cayley map
R = (I + S)(I - S)⁻¹ with S = Q - Qᵀ, its norm clamped to alpha · out_channels when alpha is non-zero; `oft_diag`
(older LyCORIS) holds R itself. A [blocks, b, b] tensor rotates W's output channels block by block (each block of
rows becomes Rᵀ · rows); a 4-D [stages, blocks, b, b] one is BOFT's butterfly of such stages. `rescale` scales rows.

The multiplier is A1111's: delta = multiplier · (R·W − W), a straight line from W to the rotated weight — not
LyCORIS's own interpolation of each rotation towards I. alpha is the constraint, never a scale (A1111 fixes scale 1).
"""
from __future__ import annotations

import torch

from lycoris.functional import boft, diag_oft

from modules.networks.lora_math_base import NetworkModule, f32, shapes_error

TORCH = "torch"   # lycoris.functional's eager backend, as in lora_math


class OftModule(NetworkModule):
    kind = "oft"

    def __init__(self, key, tensors):
        super().__init__(key, tensors)
        self.stored_r = "oft_blocks" not in tensors
        self.blocks = tensors["oft_diag"] if self.stored_r else tensors["oft_blocks"]
        self.rescale = tensors.get("rescale")
        b = self.blocks
        name = "oft_diag" if self.stored_r else "oft_blocks"
        if b.dim() not in ((3,) if self.stored_r else (3, 4)) or b.shape[-1] != b.shape[-2]:
            form = "[blocks, size, size]" + ("" if self.stored_r else " or [stages, blocks, size, size] (BOFT)")
            raise shapes_error(key, f"{name} must be {form}", name, b.shape, "expected", ["…", "size", "size"])
        if b.dim() == 4:
            self.kind = "boft"
            if b.shape[-1] % 2:
                raise shapes_error(key, "BOFT block size must be even", name, b.shape, "expected", ["…", "2k", "2k"])

    def scale(self) -> float:
        return 1.0   # A1111 sets OFT's scale to 1: alpha is the rotation's constraint

    def constraint(self, out_dim: int) -> float:
        return (self.alpha or 0.0) * out_dim

    def _update(self, weight):
        out = weight.shape[0]
        name = "oft_diag" if self.stored_r else "oft_blocks"
        blocks = f32(self.blocks, weight)
        num, size = blocks.shape[-3], blocks.shape[-1]
        if num * size != out:
            raise shapes_error(self.key, "OFT blocks × block size must be the output channels", name,
                               self.blocks.shape, "weight", weight.shape)
        rescale = f32(self.rescale, weight)
        if rescale is not None:
            if rescale.numel() != out:
                raise shapes_error(self.key, "OFT rescale is one factor per output channel", "rescale",
                                   self.rescale.shape, "weight", weight.shape)
            rescale = rescale.reshape(-1, *[1] * (weight.dim() - 1))
        if self.kind == "boft":
            stages = blocks.shape[0]
            if out % (2 ** stages * (size // 2)):
                raise shapes_error(self.key, f"BOFT's {stages} butterfly stages need the output channels to be a "
                                   f"multiple of {2 ** stages * (size // 2)}", name, self.blocks.shape,
                                   "weight", weight.shape)
            # same butterfly, Cayley map and clamp as A1111; scale=1 so no per-stage interpolation (see docstring)
            return boft.diff_weight(weight, blocks, rescale, constraint=self.constraint(out), scale=1,
                                    backend=TORCH)
        if self.stored_r:
            # hand-written: the library always applies the Cayley map, A1111 uses a stored oft_diag as R itself
            rows = weight.reshape(num, size, *weight.shape[1:])
            merged = torch.einsum("k n m, k n ... -> k m ...", blocks, rows).reshape(weight.shape)
            if rescale is not None:
                merged = rescale * merged
            return merged - weight
        return diag_oft.diff_weight(weight, blocks, rescale, constraint=self.constraint(out), backend=TORCH)
