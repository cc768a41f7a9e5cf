"""Tiny random-weight LoRA files in the real key layouts, for a loaded tiny model (tests/support/model_factory.py).

`write_lora` writes a kohya-ss file (`lora_unet_…` / `lora_te_…` / `lora_te1_…`, diffusers or LDM UNet names) or a
diffusers/PEFT file (`unet.….lora_A.weight`), and returns, per patched parameter of the model, the factors the file
holds — so a test can compute the expected weights itself (W + m · α/r · up @ down)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from modules.models import ldm_export


@dataclass
class Factors:
    component: str        # "unet", "text_encoder", "text_encoder_2"
    path: str             # module path in that component
    up: torch.Tensor
    down: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, weight_shape) -> torch.Tensor:
        """The file's own math, written out: α/r · up @ down, reshaped to the weight."""
        up = self.up.float().reshape(self.up.shape[0], -1)
        down = self.down.float().reshape(self.rank, -1)
        return (self.alpha / self.rank * (up @ down)).reshape(weight_shape)


def ldm_names(unet) -> dict[str, str]:
    """diffusers module path → LDM module path (the names most SDXL LoRAs use)."""
    by_storage = {(p.data_ptr(), p.numel()): n[:-7] for n, p in unet.named_parameters() if n.endswith(".weight")}
    out = {}
    for key, t in ldm_export.unet_to_original_state_dict(unet).items():
        path = by_storage.get((t.data_ptr(), t.numel()))
        if key.endswith(".weight") and path is not None:
            out[path] = key[:-7]
    return out


def _targets(model, unet_filter, te: bool):
    for name, m in model.unet.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and unet_filter(name):
            yield "unet", name, m
    if te:
        for i, enc in enumerate(model.text_encoders):
            comp = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            for name, m in enc.named_modules():
                if isinstance(m, torch.nn.Linear) and "self_attn" in name:
                    yield comp, name, m


def attention_only(name: str) -> bool:
    return "transformer_blocks" in name and ("attn" in name or "ff." in name) or name.endswith(("proj_in", "proj_out"))


def write_lora(path: Path, model, *, rank: int = 2, alpha: float = 1.0, seed: int = 0, layout: str = "kohya",
               unet_names: str = "diffusers", te: bool = True, unet_filter=attention_only, metadata: dict | None = None,
               scale: float = 0.5, dtype=torch.float16) -> list[Factors]:
    """layout "kohya" (unet_names "diffusers" or "ldm") or "peft"; returns the factors written (as stored)."""
    g = torch.Generator().manual_seed(seed)
    sd, factors = {}, []
    ldm = ldm_names(model.unet) if unet_names == "ldm" else {}
    n_enc = len(model.text_encoders)
    for comp, name, m in _targets(model, unet_filter, te):
        # files name text-encoder modules as transformers 4 did (text_model.encoder.…), whatever our version nests
        file_name = name
        if comp != "unet" and not hasattr(model.text_encoders[0 if comp == "text_encoder" else 1], "text_model"):
            file_name = "text_model." + name
        w = m.weight
        if isinstance(m, torch.nn.Conv2d):
            down = torch.randn(rank, w.shape[1], *w.shape[2:], generator=g) * scale
            up = torch.randn(w.shape[0], rank, 1, 1, generator=g) * scale
        else:
            down = torch.randn(rank, w.shape[1], generator=g) * scale
            up = torch.randn(w.shape[0], rank, generator=g) * scale
        down, up = down.to(dtype), up.to(dtype)
        if layout == "kohya":
            if comp == "unet":
                prefix = "lora_unet_" + ldm.get(name, name).replace(".", "_")
            else:
                idx = 1 if comp == "text_encoder" else int(comp.rsplit("_", 1)[1])
                prefix = ("lora_te_" if n_enc == 1 else f"lora_te{idx}_") + file_name.replace(".", "_")
            sd[f"{prefix}.lora_down.weight"] = down
            sd[f"{prefix}.lora_up.weight"] = up
            sd[f"{prefix}.alpha"] = torch.tensor(float(alpha))
            factors.append(Factors(comp, name, up, down, alpha))
        elif layout == "peft":
            sd[f"{comp}.{file_name}.lora_A.weight"] = down
            sd[f"{comp}.{file_name}.lora_B.weight"] = up
            factors.append(Factors(comp, name, up, down, float(rank)))   # PEFT without alpha: scale 1
        else:
            raise ValueError(layout)
    save_file(sd, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return factors


def parameter(model, component: str, path: str, name: str = "weight") -> torch.Tensor:
    root = model.unet if component == "unet" else model.text_encoders[0 if component == "text_encoder" else
                                                                     int(component.rsplit("_", 1)[1]) - 1]
    return getattr(root.get_submodule(path), name)


def snapshot(model) -> dict[str, torch.Tensor]:
    """Every tensor of the model, cloned (to check that a job leaves them bitwise as they were)."""
    out = {}
    for comp, mod in [("unet", model.unet), ("vae", model.vae)] + \
            [(f"te{i}", e) for i, e in enumerate(model.text_encoders)]:
        for k, v in mod.state_dict().items():
            out[f"{comp}.{k}"] = v.detach().clone()
    return out
