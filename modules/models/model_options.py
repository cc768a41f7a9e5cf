"""What A1111's speed and memory flags do to a loaded model: attention kernel, memory format, torch.compile, the
UNet's NaN check and (memory_offload.py) --medvram / --lowvram. Applied by the model manager after every load, so a
checkpoint switch gets them too.

Attention flags map onto diffusers' attention processors:
  --xformers / --force-enable-xformers   XFormersAttnProcessor (CUDA with xformers importable; else SDPA, said once)
  (no flag: A1111's "Automatic")         on CUDA as --opt-sdp-attention; on the CPU cpu_attention.CpuAttnProcessor
                                         (SDPA, with bf16 self-attention computed in blocks: 1.7-3.5x faster there)
  --opt-sdp-attention                    AttnProcessor2_0, torch's scaled_dot_product_attention
  --opt-sdp-no-mem-attention             SDPA with its memory-efficient kernel off (flash or math only)
  --opt-split-attention[-v1|-invokeai], --opt-sub-quad-attention
                                         SlicedAttnProcessor: attention computed a slice of heads at a time
  --disable-opt-split-attention          AttnProcessor, the classic matmul-softmax-matmul
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from modules import devices
from modules.models.memory_offload import MemoryFlags, Placement, install as install_offload

log = logging.getLogger("sd.models")

ATTENTION_CHOICES = ("auto", "sdp", "sdp-no-mem", "xformers", "sliced", "classic", "cpu-chunked")


@dataclass(frozen=True)
class ModelOptions:
    attention: str = "auto"                # the choice asked for on the command line
    channels_last: bool | None = None      # None: on CUDA only
    compile: bool = False
    memory: MemoryFlags = field(default_factory=MemoryFlags)
    # where offloaded weights wait and how they move; None: RAM and Module.to (tests pass a recording stand-in)
    placement: Placement | None = None

    @classmethod
    def from_args(cls, args) -> "ModelOptions":
        return cls(attention=attention_from_args(args),
                   channels_last=True if getattr(args, "opt_channelslast", False) else None,
                   compile=bool(getattr(args, "compile", False)), memory=MemoryFlags.from_args(args))


def attention_from_args(args) -> str:
    """The attention asked for, in A1111's order of precedence (no optimisation wins, then xformers, then SDPA)."""
    flag = lambda name: bool(getattr(args, name, False))  # noqa: E731
    if flag("disable_opt_split_attention"):
        return "classic"
    if flag("xformers") or flag("force_enable_xformers"):
        return "xformers"
    if flag("opt_sdp_no_mem_attention"):
        return "sdp-no-mem"
    if flag("opt_sdp_attention"):
        return "sdp"
    if any(flag(n) for n in ("opt_split_attention", "opt_split_attention_v1", "opt_split_attention_invokeai",
                             "opt_sub_quad_attention")):
        return "sliced"
    return "auto"   # A1111's "Automatic": the best kernel for the device (resolve_attention)


def xformers_importable() -> bool:
    return importlib.util.find_spec("xformers") is not None


def resolve_attention(asked: str, device: torch.device, xformers_available: bool | None = None) -> tuple[str, str]:
    """(what will run, a console line when it is not what was asked)."""
    if asked not in ATTENTION_CHOICES:
        raise ValueError(f"attention {asked!r}: choose one of {ATTENTION_CHOICES}")
    if asked == "auto":     # no flag: SDPA, and on the CPU its bf16 long attention blocked (cpu_attention.py)
        return ("cpu-chunked" if device.type == "cpu" else "sdp"), ""
    if asked == "xformers":
        if device.type != "cuda":
            return "sdp", f"--xformers: xformers runs on CUDA only and this model runs on {device.type}; " \
                          f"using PyTorch's scaled-dot-product attention (SDPA) instead"
        available = xformers_importable() if xformers_available is None else xformers_available
        if not available:
            return "sdp", "--xformers: the xformers package is not installed; using PyTorch's scaled-dot-product " \
                          "attention (SDPA) instead (launch.py installs xformers when --xformers is given)"
    return asked, ""


class _SDPANoMemEfficient:
    """SDPA with the memory-efficient kernel left out (A1111's --opt-sdp-no-mem-attention): the flash kernel or the
    math one, both deterministic."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.inner = AttnProcessor2_0()

    def __call__(self, *args, **kwargs):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            return self.inner(*args, **kwargs)


def attention_processor(kind: str, slice_size: int = 2):
    from diffusers.models import attention_processor as ap
    if kind == "sdp":
        return ap.AttnProcessor2_0()
    if kind == "sdp-no-mem":
        return _SDPANoMemEfficient()
    if kind == "xformers":
        return ap.XFormersAttnProcessor()
    if kind == "cpu-chunked":
        from modules.models.cpu_attention import CpuAttnProcessor
        return CpuAttnProcessor()
    if kind == "sliced":
        return ap.SlicedAttnProcessor(slice_size)
    return ap.AttnProcessor()


def set_attention(model, kind: str) -> None:
    """One processor object for every attention of the UNet and the VAE (processors keep no per-layer state)."""
    proc = attention_processor(kind)
    for net in (model.unet, model.vae):
        if hasattr(net, "set_attn_processor"):
            net.set_attn_processor(proc)
    model.extra["attention"] = kind


def nan_check_hook(_module, _args, output):
    """A1111 checks every UNet output for NaNs (devices.test_for_nans; --disable-nan-check turns it off)."""
    out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
    if isinstance(out, torch.Tensor):
        devices.test_for_nans(out, "unet", half=devices.is_half(out.dtype))


_said: set[str] = set()   # console notes already given: each once per process, not again on every checkpoint load


def _say_once(note: str) -> None:
    if note not in _said:
        _said.add(note)
        log.warning(note)


def apply(model, options: ModelOptions, device: devices.DeviceConfig) -> None:
    """Applies the options to a freshly loaded model (its weights already in their dtype)."""
    kind, note = resolve_attention(options.attention, device.device)
    if note:
        _say_once(note)
    set_attention(model, kind)
    if options.channels_last if options.channels_last is not None else device.device.type == "cuda":
        model.unet.to(memory_format=torch.channels_last)
        model.extra["channels_last"] = True
    previous = model.extra.pop("nan_check_handle", None)
    if previous is not None:
        previous.remove()
    if device.nan_check:
        model.extra["nan_check_handle"] = model.unet.register_forward_hook(nan_check_hook)
    mode = options.memory.mode_for(model.is_sdxl)
    if mode != "none":
        placement = options.placement
        if placement is None and device.device.type == "cpu":
            log.info("--%s: the model runs on the CPU, in RAM already; nothing to move", mode)
        else:
            placement = placement or Placement(device.device)
            model.extra["offloader"] = install_offload(model, mode, placement)
    if options.compile:
        if model.extra.get("offloader") is not None:
            log.warning("--compile is not used with --%s: weights that move between devices on every call would "
                        "make the compiled graph recompile", mode)
        else:
            # compiles on the first call (a minute or more), then each step runs the compiled graph
            model.unet.compile(dynamic=False)
            model.extra["compiled"] = True


@dataclass
class VaePolicy:
    """What the VAE codec (modules/engine/vae_codec.py) reads about the session: NaN check and A1111's automatic
    fall-back to 32-bit floats, tiling. Settings are read when a decode happens, so a change applies at once."""
    nan_check: bool = True
    auto_precision: Callable[[], bool] = lambda: True          # A1111's auto_vae_precision (default on)
    auto_precision_bf16: Callable[[], bool] = lambda: False    # A1111's auto_vae_precision_bfloat16 (default off)
    tiled: Callable[[], bool] = lambda: False                  # --tiled-vae or the tiled_vae setting
    on_upcast: Callable[[torch.dtype], None] = lambda _dtype: None   # the manager keeps that VAE dtype from now on


def vae_policy(model) -> VaePolicy:
    return model.extra.get("vae_policy") or VaePolicy()
