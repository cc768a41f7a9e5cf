"""What every LoRA/LyCORIS module kind shares: A1111 v1.10.1's `NetworkModule.finalize_updown` as a delta.

A1111 turns each kind's raw update into the weight change the same way: add the file's plain `bias` tensor if it has
one, reshape to the patched weight, times the scale (the file's `scale`, else alpha / rank, else 1), DoRA when the
file has `dora_scale`, and last times the multiplier (the `<lora:name:te:unet>` weight) — so every kind's delta is
linear in the multiplier, OFT and DoRA included. Bias changes (`diff_b`, `b_norm`) are times the multiplier only.
An inpainting UNet's 9-channel conv_in takes a 4-channel update zero-padded, as A1111 pads it.
"""
from __future__ import annotations

import torch

from lycoris.functional.general import apply_dora_scale


def scalar(key: str, tensors: dict[str, torch.Tensor], name: str) -> float | None:
    """A one-element tensor of the file (alpha, scale, on_input) as a float; None when absent."""
    t = tensors.get(name)
    if t is None:
        return None
    if not isinstance(t, torch.Tensor) or t.numel() != 1:
        shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{key}: '{name}' must be a single number, got shape {shape}")
    return float(t.reshape(-1)[0])


def shapes_error(key: str, what: str, a: str, sa, b: str, sb) -> ValueError:
    return ValueError(f"{key}: {what}: {a} {list(sa)} does not fit {b} {list(sb)}")


def f32(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A file tensor on the weight's device, in float32 (the math is done in float32 whatever the file holds)."""
    return None if t is None else t.to(device=like.device, dtype=torch.float32)


class NetworkModule:
    """One module of a LoRA file: the change it makes to one weight (and bias) of the model.

    Subclasses set `kind`, `rank` (A1111's `dim`: the rank alpha is divided by, None where a kind has none) and
    implement `_update` (the raw update before scale and multiplier; it may use the original weight)."""

    kind = "?"

    def __init__(self, key: str, tensors: dict[str, torch.Tensor]):
        self.key = key
        self.alpha = scalar(key, tensors, "alpha")
        self.file_scale = scalar(key, tensors, "scale")
        self.rank: int | None = None
        self.dora_scale = tensors.get("dora_scale")
        self.plain_bias = tensors.get("bias")   # A1111 adds a module's plain `bias` tensor to the update, unscaled

    def __repr__(self):
        return f"<{type(self).__name__} {self.kind} {self.key} rank={self.rank} alpha={self.alpha}>"

    def scale(self) -> float:
        """A1111's calc_scale: the file's `scale`, else alpha / rank when both exist, else 1."""
        if self.file_scale is not None:
            return self.file_scale
        if self.rank is not None and self.alpha is not None:
            return self.alpha / self.rank
        return 1.0

    def _update(self, weight: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def _bias_update(self) -> torch.Tensor | None:
        return None

    def weight_delta(self, weight: torch.Tensor, multiplier: float) -> torch.Tensor | None:
        """The additive change to `weight` (the original weight of the patched module) for this multiplier, float32
        and shaped like `weight`; None when the multiplier is 0 or the module changes no weight."""
        if multiplier == 0:
            return None
        with torch.no_grad():
            w = weight.detach().to(torch.float32).contiguous()
            try:
                update = self._update(w)
            except RuntimeError as exc:   # a factor that does not fit this weight (matmul/einsum/broadcast)
                raise ValueError(f"{self.key}: the {self.kind} update does not fit the weight "
                                 f"{list(weight.shape)}: {exc}") from None
            if update is None:
                return None
            if self.plain_bias is not None:
                b = f32(self.plain_bias, w)
                if b.numel() != update.numel():
                    raise shapes_error(self.key, "plain bias", "bias", b.shape, "update", update.shape)
                update = update.reshape(b.shape) + b
            if update.numel() == w.numel():
                update = update.reshape(w.shape)
            if self.dora_scale is None:   # one pass over the update: (update · scale) · multiplier
                delta = update * (self.scale() * float(multiplier))
            else:
                delta = self._dora(w, update * self.scale()) * float(multiplier)
            return self._fit(delta, w)

    def bias_delta(self, bias: torch.Tensor | None, multiplier: float) -> torch.Tensor | None:
        """The additive change to the bias (`diff_b`, `b_norm`): times the multiplier, not the scale (as A1111)."""
        if multiplier == 0:
            return None
        like = bias if bias is not None else torch.empty(0)
        b = f32(self._bias_update(), like)
        if b is None:
            return None
        if bias is not None:
            if b.numel() != bias.numel():
                raise shapes_error(self.key, "bias change", "update", b.shape, "bias", bias.shape)
            b = b.reshape(bias.shape)
        return b * float(multiplier)

    def _dora(self, w: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """A1111's apply_weight_decompose: (W + update) rescaled so each input column's norm is `dora_scale`, minus W.
        Per input column whatever the file's dora_scale shape (A1111 v1.10.1 does not tell LyCORIS's per-output
        form apart; both broadcast)."""
        if w.dim() < 2 or update.shape != w.shape:
            raise shapes_error(self.key, "DoRA needs a 2-D or 4-D weight and an update of its shape",
                               "update", update.shape, "weight", w.shape)
        m = f32(self.dora_scale, w)
        try:
            merged = apply_dora_scale(w, update, m, 1.0)   # = W + (DoRA(W + update) - W)
        except RuntimeError:
            raise shapes_error(self.key, "DoRA", "dora_scale", m.shape, "weight", w.shape) from None
        if merged.shape != w.shape:
            raise shapes_error(self.key, "DoRA", "dora_scale", m.shape, "weight", w.shape)
        return merged - w

    def _fit(self, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if delta.shape == w.shape:
            return delta
        if w.dim() == 4 and delta.dim() == 4 and w.shape[1] == 9 and delta.shape[1] == 4 \
                and delta.shape[0] == w.shape[0] and delta.shape[2:] == w.shape[2:]:
            # an inpainting UNet's conv_in: the 5 extra input channels (mask, masked image) are left unchanged
            return torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, 5))
        raise shapes_error(self.key, f"{self.kind} update", "update", delta.shape, "weight", w.shape)
