"""reference_only / reference_adain / reference_adain+attn: the image steers the generation through the UNet's own
features, no ControlNet model (CONTROLNET-REFERENCE §4.8).

At every UNet call inside a unit's window, before the real call, the UNet runs once more in "write" mode on the
reference latent noised to the call's σ (fresh noise, seeded from the batch's seed and the step, so a request is
reproducible), with the same timestep and text. Then the real call runs in "read" mode:

* attention (reference_only, adain+attn): every self-attention (attn1 of a BasicTransformerBlock), ordered as the
  LDM UNet lists them (input, middle, output) and then widest first, gets the threshold j/n. Written when
  weight > threshold: the layer's input tokens. Read: keys/values = [own tokens ‖ written tokens].
* AdaIN (reference_adain, adain+attn): the middle block (threshold 0), the input blocks of every level but the
  first (thresholds 1 − k/n) and the first two thirds of the output blocks (k/n), all thresholds doubled — for SD1
  input blocks 4, 5, 7, 8, 10, 11 and output blocks 0–7, for SDXL 4, 5, 7, 8 and 0–5, the extension's lists.
  Written: per-channel mean and variance of the block's output; read: the output renormalised to them (ε 1e-6).

Style fidelity f (threshold_a; cubed on SDXL; 1 in "ControlNet is more important", 0 in "My prompt is more
important" and in the hires pass) mixes: f·(negative rows plain, prompt rows with reference) + (1 − f)·(all rows
with reference). Several units write into the same banks; f is their mean.

Unlike the extension, a layer the current unit does not write to is left alone during that unit's write call (the
extension let it read, and so empty, the banks an earlier unit had just filled).

Everything hooks in through the engine's seams: the attention processors and forward hooks go on p.patches (on the
model while a batch runs, removed after), the write call runs from a `before_unet` hook.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from modules.controlnet.apply import ActiveUnit, ControlNetHook
from modules.controlnet.effects import clamp01, encode_map, noise_levels, slider_values

# module → (attention, AdaIN)
MODULES = {"reference_only": (True, False), "reference_adain": (False, True), "reference_adain+attn": (True, True)}
EPS = 1e-6


@dataclass
class Machine:
    """What the reference layers do in the current UNet call."""
    mode: str | None = None            # None: plain; "write"; "read"
    attention: bool = False            # write mode: the unit being written uses attention
    adain: bool = False                # … and AdaIN
    weight: float = 0.0
    fidelity: float = 0.0
    uncond_rows: list[int] = field(default_factory=list)


class Bank:
    def __init__(self, machine: Machine, threshold: float):
        self.machine, self.threshold = machine, threshold
        self.items: list = []
        self.fidelities: list[float] = []

    def clear(self) -> None:
        self.items, self.fidelities = [], []

    def fidelity(self) -> float:
        return sum(self.fidelities) / len(self.fidelities)

    def mix(self, plain, referenced: torch.Tensor) -> torch.Tensor:
        """f·(negative rows plain, others referenced) + (1 − f)·referenced; `plain(rows)` computes the plain
        result of those rows only when it is needed."""
        f = self.fidelity()
        rows = self.machine.uncond_rows
        if not rows or f <= 1e-5:
            return referenced
        styled = referenced.clone()
        styled[rows] = plain(rows).to(styled.dtype)
        return f * styled + (1.0 - f) * referenced


class ReferenceAttention(Bank):
    """Attention processor for one attn1 layer, wrapping the processor the layer had."""

    def __init__(self, inner, machine: Machine, threshold: float):
        super().__init__(machine, threshold)
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        m = self.machine
        if m.mode == "write" and m.attention and m.weight > self.threshold:
            self.items.append(hidden_states.detach().clone())
            self.fidelities.append(m.fidelity)
        elif m.mode == "read" and self.items:
            context = torch.cat([hidden_states, *self.items], dim=1)
            referenced = self.inner(attn, hidden_states, context, attention_mask, temb)
            out = self.mix(lambda rows: self.inner(attn, hidden_states[rows], None, None, temb), referenced)
            self.clear()
            return out
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceAdain(Bank):
    """Forward hook on one UNet block: AdaIN of its output towards the written statistics."""

    def __call__(self, module, inputs, output):
        h = output[0] if isinstance(output, tuple) else output
        m = self.machine
        if m.mode == "write" and m.adain and m.weight > self.threshold:
            var, mean = torch.var_mean(h.float(), dim=(2, 3), keepdim=True, correction=0)
            self.items.append((mean, var))
            self.fidelities.append(m.fidelity)
        elif m.mode == "read" and self.items:
            x = h.float()
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            mean_ref = sum(i[0] for i in self.items) / len(self.items)
            var_ref = sum(i[1] for i in self.items) / len(self.items)
            std, std_ref = var.clamp_min(EPS).sqrt(), var_ref.clamp_min(EPS).sqrt()
            referenced = (x - mean) / std * std_ref + mean_ref
            y = self.mix(lambda rows: x[rows], referenced).to(h.dtype)
            self.clear()
            return (y, *output[1:]) if isinstance(output, tuple) else y
        return None


# --- which layers -----------------------------------------------------------------------------------------------------
def _section(name: str) -> int:
    return {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}.get(name.split(".", 1)[0], 3)


def attention_layers(unet) -> list[str]:
    """Processor names of the self-attention layers, in threshold order: LDM order (input, middle, output), then
    widest first (a stable sort, as the extension's)."""
    names = [n for n in unet.attn_processors if n.endswith("attn1.processor") and ".transformer_blocks." in n]
    names.sort(key=_section)                  # diffusers lists down, up, mid; the LDM UNet input, middle, output

    def width(name: str) -> int:
        return unet.get_submodule(name[:-len(".processor")]).to_q.in_features
    return sorted(names, key=lambda n: -width(n))


def ldm_blocks(unet) -> tuple[list[str], list[str]]:
    """The diffusers module whose output is each LDM input block's (after conv_in) and output block's output."""
    inputs = []
    for i, block in enumerate(unet.down_blocks):
        level = []
        for j in range(len(block.resnets)):
            level.append(f"down_blocks.{i}.attentions.{j}" if getattr(block, "attentions", None) is not None
                         else f"down_blocks.{i}.resnets.{j}")
        inputs.append(level)
    outputs = []
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        for j in range(n):
            if j == n - 1 and getattr(block, "upsamplers", None):
                outputs.append(f"up_blocks.{i}.upsamplers.0")
            elif getattr(block, "attentions", None) is not None:
                outputs.append(f"up_blocks.{i}.attentions.{j}")
            else:
                outputs.append(f"up_blocks.{i}.resnets.{j}")
    return [name for level in inputs[1:] for name in level], outputs


def adain_layers(unet) -> list[tuple[str, float]]:
    """(module path under the UNet, threshold) of the AdaIN blocks."""
    inputs, outputs = ldm_blocks(unet)
    outputs = outputs[:round(len(outputs) * 2 / 3)]
    layers = [("mid_block", 0.0)]
    layers += [(name, 1.0 - k / len(inputs)) for k, name in enumerate(inputs)]
    layers += [(name, k / len(outputs)) for k, name in enumerate(outputs)]
    return [(name, 2.0 * t) for name, t in layers]


# --- the write call ---------------------------------------------------------------------------------------------------
class ReferenceHook(ControlNetHook):
    """The `before_unet` hook: empties the banks, runs the write call of each reference unit in its window, and
    leaves the layers in read mode for the real call."""

    def __init__(self, units: list[ActiveUnit], vae_factor: int, hires_enabled: bool, machine: Machine,
                 banks: list[Bank]):
        super().__init__(units, vae_factor, hires_enabled)
        self.machine, self.banks = machine, banks
        self.latents: dict[tuple, torch.Tensor] = {}

    def fidelity(self, au: ActiveUnit, call) -> float:
        mode = au.unit.control_mode
        if mode == "ControlNet is more important":
            return 1.0
        if mode == "My prompt is more important" or call.step.pass_name == "hires":
            return 0.0
        f = clamp01(slider_values(au)[0])
        return f ** 3 if call.model.is_sdxl else f

    def __call__(self, call) -> None:
        m = self.machine
        for bank in self.banks:
            bank.clear()
        m.mode = None
        units = [au for au in self.units if self.active(au, call.step)]
        if not units:
            return
        height, width = call.x.shape[-2] * self.factor, call.x.shape[-1] * self.factor
        a, b = noise_levels(float(call.step.sigma))
        for au in units:
            latent = self._latent(au, call.model, width, height)
            rows = call.x.shape[0]
            noise = torch.randn((rows, *latent.shape[1:]), generator=self._generator(au, call)).to(latent.device)
            ref = a * latent + b * noise
            if call.x.shape[1] == 9:          # inpainting UNet: nothing masked, the reference as the masked image
                ref = torch.cat([ref, torch.zeros_like(ref[:, :1]), latent.expand_as(ref)], dim=1)
            elif call.x.shape[1] > 4:
                ref = torch.cat([ref, call.x[:, 4:].to(ref.dtype)], dim=1)
            m.attention, m.adain = MODULES[au.pre.name]
            m.mode, m.weight, m.fidelity = "write", float(au.unit.weight), self.fidelity(au, call)
            self._unet(call, ref)
        m.mode, m.uncond_rows = "read", list(call.uncond_rows)

    def _unet(self, call, x: torch.Tensor) -> None:
        model = call.model
        with torch.no_grad():
            model.unet(x.to(model.dtype), call.timestep, encoder_hidden_states=call.context.to(model.dtype),
                       added_cond_kwargs=call.added_cond, return_dict=False)

    def _latent(self, au: ActiveUnit, model, width: int, height: int) -> torch.Tensor:
        key = (au.number, height, width)
        if key not in self.latents:
            self.latents[key] = encode_map(model, au.control.map_at(width, height))
        return self.latents[key]

    @staticmethod
    def _generator(au: ActiveUnit, call) -> torch.Generator:
        seeds = getattr(call.p, "seeds", None) or [0]
        key = hash((int(seeds[0]), au.number, call.step.index, int(call.step.pass_name == "hires")))
        return torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)


def attach(p, active: list[ActiveUnit], hires_enabled: bool) -> None:
    """Puts the reference layers on p.patches and the write hook on p.hooks, when a unit is a reference one."""
    units = [au for au in active if au.pre.name in MODULES]
    if not units:
        return
    model = p.sd_model
    unet = model.unet
    machine = Machine()
    banks: list[Bank] = []
    if any(MODULES[au.pre.name][0] for au in units):
        names = attention_layers(unet)
        current = unet.attn_processors
        for j, name in enumerate(names):
            inner = p.patches.attention_processors.get(name, current[name])   # another feature's, if any
            proc = ReferenceAttention(inner, machine, j / len(names))
            p.patches.attention_processors[name] = proc
            banks.append(proc)
    if any(MODULES[au.pre.name][1] for au in units):
        for name, threshold in adain_layers(unet):
            hook = ReferenceAdain(machine, threshold)
            p.patches.forward_hooks.append((f"unet.{name}", hook))
            banks.append(hook)
    p.hooks.add("before_unet", ReferenceHook(units, model.vae_scale_factor, hires_enabled, machine, banks))
