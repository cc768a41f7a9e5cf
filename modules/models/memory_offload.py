"""A1111's --medvram / --medvram-sdxl / --lowvram: weights live in RAM and move to the accelerator only while they run.

One unit is resident on the accelerator at a time (A1111's "module in GPU"): a forward pre-hook on each unit's
modules moves the resident unit back to RAM and this unit in. --medvram's units are the whole components (each text
encoder, the UNet, the VAE); --lowvram's are the UNet's down blocks, mid block and up blocks one by one (its small
remainder — conv_in, the time embedding, conv_out — stays on the accelerator), each text encoder, and the VAE's
encoder and decoder halves.

Why our own hooks rather than accelerate's cpu_offload_with_hook chain (diffusers' enable_model_cpu_offload): that
chain offloads the previous component of a fixed pipeline order, while our engine re-enters components in any order
(hires fix decodes and encodes between two UNet passes, img2img encodes first, scripts decode previews), so "one unit
resident, whichever ran last" is the rule that keeps the memory bound. accelerate's sequential cpu_offload works per
leaf layer and streams every weight on every call, finer and slower than A1111's block-level --lowvram.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterable

import torch

log = logging.getLogger("sd.memory")

MODES = ("none", "medvram", "lowvram")


@dataclass(frozen=True)
class MemoryFlags:
    lowvram: bool = False
    medvram: bool = False
    medvram_sdxl: bool = False

    @classmethod
    def from_args(cls, args) -> "MemoryFlags":
        return cls(bool(getattr(args, "lowvram", False)), bool(getattr(args, "medvram", False)),
                   bool(getattr(args, "medvram_sdxl", False)))

    def mode_for(self, is_sdxl: bool) -> str:
        """A1111: --lowvram wins; --medvram always; --medvram-sdxl only for SDXL models."""
        if self.lowvram:
            return "lowvram"
        if self.medvram or (self.medvram_sdxl and is_sdxl):
            return "medvram"
        return "none"

    @property
    def any(self) -> bool:
        return self.lowvram or self.medvram or self.medvram_sdxl


class Placement:
    """Where modules live and how they move: the offload device (RAM) and the accelerator."""

    def __init__(self, accelerator: torch.device, offload: torch.device = torch.device("cpu")):
        self.accelerator, self.offload = torch.device(accelerator), torch.device(offload)

    def move(self, module: torch.nn.Module, to_accelerator: bool) -> None:
        module.to(self.accelerator if to_accelerator else self.offload)

    def on_accelerator(self, module: torch.nn.Module) -> bool:
        p = next(module.parameters(), None)
        return p is not None and p.device == self.accelerator


class Offloader:
    """Keeps at most one unit on the accelerator; a unit moves in when one of its modules is about to run."""

    def __init__(self, placement: Placement, mode: str):
        self.placement, self.mode = placement, mode
        self.units: list[tuple[str, list[torch.nn.Module]]] = []
        self.resident: list[torch.nn.Module] | None = None
        self._handles: list = []

    def add_unit(self, name: str, modules: list[torch.nn.Module], triggers: Iterable[torch.nn.Module] | None = None):
        modules = [m for m in modules if m is not None]
        if not modules:
            return
        for m in modules:
            self.placement.move(m, False)
        self.units.append((name, modules))
        for trigger in (modules if triggers is None else [t for t in triggers if t is not None]):
            self._handles.append(trigger.register_forward_pre_hook(lambda _m, _a, unit=modules: self.bring(unit)))

    def bring(self, unit: list[torch.nn.Module]) -> None:
        if self.resident is unit:
            return
        if self.resident is not None:
            for m in self.resident:
                self.placement.move(m, False)
        for m in unit:
            self.placement.move(m, True)
        self.resident = unit

    @contextlib.contextmanager
    def borrowed(self, module: torch.nn.Module):
        """A module outside the units (a ControlNet model) on the accelerator for one forward, in RAM again after:
        it runs beside whichever unit is resident, as the ControlNet extension's Low VRAM does."""
        self.placement.move(module, True)
        try:
            yield
        finally:
            self.placement.move(module, False)

    def unit_names_on_accelerator(self) -> list[str]:
        return [name for name, modules in self.units if all(self.placement.on_accelerator(m) for m in modules)]

    def remove(self) -> None:
        """Hooks off, every unit back on the accelerator (not used on a switch: the old model is simply dropped)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for _name, modules in self.units:
            for m in modules:
                self.placement.move(m, True)
        self.resident = None


def _vae_halves(vae) -> tuple[list, list]:
    encode = [vae.encoder, getattr(vae, "quant_conv", None)]
    decode = [getattr(vae, "post_quant_conv", None), vae.decoder]
    return [m for m in encode if m is not None], [m for m in decode if m is not None]


def install(model, mode: str, placement: Placement) -> Offloader | None:
    """Puts `model`'s weights in RAM and hooks them in as they run. `model.device` stays the accelerator: the engine
    makes its inputs there. Returns None for mode "none"."""
    if mode not in MODES:
        raise ValueError(f"memory mode {mode!r}: choose one of {MODES}")
    if mode == "none":
        return None
    off = Offloader(placement, mode)
    for i, encoder in enumerate(model.text_encoders):
        off.add_unit(f"text_encoder_{i + 1}" if i else "text_encoder", [encoder])
    unet, vae = model.unet, model.vae
    encode, decode = _vae_halves(vae)
    if mode == "medvram":
        off.add_unit("unet", [unet])
        off.add_unit("vae", [vae], triggers=encode + decode)
    else:
        for name, child in unet.named_children():   # the small remainder stays in; the blocks are units
            if name not in ("down_blocks", "mid_block", "up_blocks"):
                placement.move(child, True)
        blocks = [("unet.down_blocks.%d" % i, b) for i, b in enumerate(unet.down_blocks)]
        blocks += [("unet.mid_block", unet.mid_block)] if unet.mid_block is not None else []
        blocks += [("unet.up_blocks.%d" % i, b) for i, b in enumerate(unet.up_blocks)]
        for name, block in blocks:
            off.add_unit(name, [block])
        off.add_unit("vae.encoder", encode)
        off.add_unit("vae.decoder", decode)
    log.info("%s: weights stay in RAM and move to %s only while they run (%d units)", mode,
             placement.accelerator, len(off.units))
    return off
