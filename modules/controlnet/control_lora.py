"""Control-LoRA files (Stability's control-lora-*-rank128/256.safetensors; CONTROLNET-REFERENCE §2.2 rule 1).

Such a file is a ControlNet stored against the loaded checkpoint's UNet: every matrix or convolution weight the
ControlNet shares with the UNet is the UNet's weight plus ``<layer>.up @ <layer>.down`` (rank r), shared 1-D tensors
(norms, biases) and the ControlNet's own layers (hint encoder, zero convolutions) are stored in full, and shared
weights the file leaves out are the UNet's own. Merged here into complete original-layout weights, which are then
loaded like any ControlNet, with the base UNet's encoder architecture.
"""
from __future__ import annotations

import torch

from modules.controlnet.controlnet_arch import ArchError, base_encoder

MARKER = "lora_controlnet"


def merge_control_lora(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Complete ControlNet weights from a Control-LoRA file's tensors and the base UNet's (original names)."""
    out = base_encoder(base)
    ups = {k[: -len(".up")]: v for k, v in sd.items() if k.endswith(".up")}
    downs = {k[: -len(".down")]: v for k, v in sd.items() if k.endswith(".down")}
    if ups.keys() != downs.keys():
        odd = sorted(ups.keys() ^ downs.keys())
        raise ArchError(f"LoRA layers without their up/down partner: {', '.join(odd[:4])}")
    for layer, up in ups.items():
        w = base.get(layer + ".weight")
        if w is None:
            raise ArchError(f"a LoRA for {layer}, which the loaded UNet does not have")
        down = downs[layer].to(w.device, torch.float32)
        delta = up.to(w.device, torch.float32).flatten(1) @ down.flatten(1)
        if delta.numel() != w.numel():
            raise ArchError(f"the LoRA of {layer} makes {tuple(delta.shape)}, the UNet's weight is {tuple(w.shape)}")
        out[layer + ".weight"] = (w.float() + delta.reshape(w.shape)).to(torch.promote_types(w.dtype, up.dtype))
    for k, v in sd.items():
        if k != MARKER and not k.endswith((".up", ".down")):
            out[k] = v
    return out
