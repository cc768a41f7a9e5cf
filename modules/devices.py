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
    nan_check: bool = True      # --disable-nan-check turns A1111's NaN checks of the UNet and VAE outputs off
    upcast_sampling: bool = False

    @property
    def name(self) -> str:
        return str(self.device)


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """AVX-512 BF16 (or AMX) in /proc/cpuinfo: bf16 matmuls run natively instead of being emulated."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def from_args(args: argparse.Namespace | None) -> DeviceConfig:
    """args None (library use, tests): fp32 on the CPU. From the command line: see below."""
    import dataclasses
    config = _from_args(args)
    return dataclasses.replace(config, nan_check=not getattr(args, "disable_nan_check", False),
                               upcast_sampling=bool(getattr(args, "upcast_sampling", False))
                               and config.dtype != torch.float32)


def _from_args(args: argparse.Namespace | None) -> DeviceConfig:
    use_cpu = set(getattr(args, "use_cpu", []) or [])
    cuda = torch.cuda.is_available() and not ({"all", "sd"} & {u.lower() for u in use_cpu})
    if cuda:
        device_id = getattr(args, "device_id", None)
        device = torch.device(f"cuda:{device_id}" if device_id is not None else "cuda")
        full = getattr(args, "no_half", False) or getattr(args, "precision", "autocast") == "full"
        dtype = torch.float32 if full else torch.float16
        vae_dtype = torch.float32 if full or getattr(args, "no_half_vae", False) else dtype
        return DeviceConfig(device, dtype, vae_dtype)
    # CPU: bf16 (fp32's range, half its bits) for the UNet and text encoders where the CPU computes it natively:
    # measured 2.0x faster per SD 1.5 step than fp32 at 51 dB PSNR (docs/PERFORMANCE.md). Elsewhere fp32.
    # --no-half / --precision full force fp32; --precision half asks for bf16 even without native support.
    # The VAE runs in bf16 too unless --no-half-vae: with channels-last weights its decode takes 0.2x the fp32 time
    # (issue #21; bench/bench_speed.py reports the PSNR), and its last convolution stays fp32 (loader._cpu_layout).
    precision = getattr(args, "precision", "autocast") if args is not None else "full"
    if args is None or getattr(args, "no_half", False) or precision == "full":
        return DeviceConfig(torch.device("cpu"), torch.float32, torch.float32)
    if precision == "half" or cpu_has_bf16():
        vae = torch.float32 if getattr(args, "no_half_vae", False) else torch.bfloat16
        return DeviceConfig(torch.device("cpu"), torch.bfloat16, vae)
    return DeviceConfig(torch.device("cpu"), torch.float32, torch.float32)


def torch_gc() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- A1111's module-level names, for extensions ----------------------------------------------------------------
# `shared.bind` sets them from the runtime's DeviceConfig (`use`); before that they describe the CPU in fp32.
cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = dtype_unet = dtype_inference = torch.float32
dtype_vae = torch.float32
unet_needs_upcast = False
nan_check = True


class NansException(Exception):
    """A1111's error for a tensor of NaNs (raised by test_for_nans)."""


def use(config: DeviceConfig) -> None:
    """Make the module-level names describe the runtime's device and precisions."""
    global device, device_interrogate, device_gfpgan, device_esrgan, device_codeformer, dtype, dtype_unet
    global dtype_inference, dtype_vae, nan_check, unet_needs_upcast
    device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = config.device
    dtype = dtype_unet = dtype_inference = config.dtype
    dtype_vae = config.vae_dtype
    nan_check = config.nan_check
    # --upcast-sampling: A1111 keeps the sampler's tensors in fp32 around a half UNet. Our sampler always does
    # (latents fp32, cast at the UNet call: modules/engine/denoiser.py), so the flag only shows up here.
    unet_needs_upcast = config.upcast_sampling
    if config.upcast_sampling:
        dtype_inference = torch.float32


def get_optimal_device_name() -> str:
    return str(device) if device.type != "cpu" else ("cuda" if torch.cuda.is_available() else "cpu")


def get_optimal_device() -> torch.device:
    return device


def get_device_for(task: str) -> torch.device:
    return device


def get_cuda_device_string() -> str:
    return str(device) if device.type == "cuda" else "cuda"


def has_mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def autocast(disable: bool = False):
    """A1111 wraps sampling in torch.autocast; our engine casts explicitly, so this changes nothing."""
    import contextlib
    return contextlib.nullcontext()


def without_autocast(disable: bool = False):
    import contextlib
    return contextlib.nullcontext()


def cond_cast_unet(tensor):
    return tensor.to(dtype_unet) if tensor is not None and hasattr(tensor, "to") else tensor


def cond_cast_float(tensor):
    return tensor.float() if tensor is not None and hasattr(tensor, "float") else tensor


def is_half(dt: torch.dtype) -> bool:
    return dt in (torch.float16, torch.bfloat16)


def nan_message(where: str, half: bool | None = None) -> str:
    """A1111's message for a NaN output, whose first sentence users search for; the advice names our flags."""
    if where == "unet":
        half = is_half(dtype_unet) if half is None else half
        text = "A tensor with NaNs was produced in Unet."
        if half:
            text += (" Half precision may not be enough to represent this picture, or the GPU may not support "
                     "half-precision types: try the --no-half (or --upcast-sampling) command-line flag.")
    elif where == "vae":
        half = is_half(dtype_vae) if half is None else half
        text = "A tensor with NaNs was produced in VAE."
        if half:
            text += (" Half precision may not be enough to represent this picture: try the --no-half-vae "
                     "command-line flag.")
    else:
        text = "A tensor with NaNs was produced."
    return text + " Use --disable-nan-check to turn this check off."


def has_nans(x: torch.Tensor) -> bool:
    return bool(torch.isnan(x).any())


def test_for_nans(x, where: str, half: bool | None = None) -> None:
    """A1111: raise NansException when `x` has NaNs (`where` is "unet" or "vae"), unless --disable-nan-check.
    A1111 looks at one element only; `any` costs little next to the network that made `x` and misses nothing."""
    if not nan_check or x is None:
        return
    if has_nans(x):
        raise NansException(nan_message(where, half))
