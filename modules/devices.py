"""Device and precision decisions, in one place (ComfyUI/Forge keep these out of the rest of the code, so do we)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceConfig:
    device: torch.device
    dtype: torch.dtype          # UNet and text encoders
    vae_dtype: torch.dtype

    @property
    def name(self) -> str:
        return str(self.device)


def from_args(args: argparse.Namespace | None) -> DeviceConfig:
    use_cpu = set(getattr(args, "use_cpu", []) or [])
    cuda = torch.cuda.is_available() and not ({"all", "sd"} & {u.lower() for u in use_cpu})
    if cuda:
        device_id = getattr(args, "device_id", None)
        device = torch.device(f"cuda:{device_id}" if device_id is not None else "cuda")
        full = getattr(args, "no_half", False) or getattr(args, "precision", "autocast") == "full"
        dtype = torch.float32 if full else torch.float16
        vae_dtype = torch.float32 if full or getattr(args, "no_half_vae", False) else dtype
        return DeviceConfig(device, dtype, vae_dtype)
    # CPU: fp32 by default; --precision half asks for bf16, the CPU half type with fp32's range.
    dtype = torch.bfloat16 if getattr(args, "precision", "autocast") == "half" and not getattr(args, "no_half", False) \
        else torch.float32
    return DeviceConfig(torch.device("cpu"), dtype, torch.float32 if getattr(args, "no_half_vae", False) else dtype)


def torch_gc() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
