"""Shared training plumbing: device/threads, seeds, atomic checkpoints, CSV logs, progress bars, sample grids."""
from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import torch

from modules import atomic_file

REPO = Path(__file__).resolve().parents[2]
TRAINING_DIR = REPO / "training"
TOKENIZER_DIR = REPO / "cache" / "clip-tokenizer"


# ----------------------------------------------------------------------------- device, threads, precision


def setup_torch(threads: int | None, device: str = "auto") -> torch.device:
    """Pins the CPU thread count (the shared 2-core machine: training uses 1) and picks the device."""
    if threads:
        torch.set_num_threads(int(threads))
        with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
            torch.set_num_interop_threads(1)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


def resolve_precision(device: torch.device, precision: str) -> str:
    """"auto": bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16/AMX), fp32 elsewhere. Measured on an
    AVX2-only CPU (AMD EPYC, torch 2.13): a bf16 autocast autoencoder training step took 107 s against 2.5 s in fp32,
    because bf16 convolutions are emulated there."""
    if precision != "auto":
        return precision
    from modules.devices import cpu_has_bf16
    return "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """bf16 autocast (weights and optimiser stay fp32), or nothing for fp32."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be bf16 or fp32, not {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def cosine_lr(step: int, total: int, base: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def compiled_grad_error(eager, compiled, params: list[torch.nn.Parameter], inputs: tuple) -> tuple[float, int]:
    """The largest relative difference between the gradients of ``compiled`` and ``eager`` (the same loss function)
    on ``inputs``, and the index of that parameter in ``params``; the gradients are cleared afterwards.

    Why: in torch 2.13 on CPU, TorchInductor compiled the whole UNet training step with gradients up to 4x off for
    some biases of the last up block while the loss itself matched (found when a run lost its caption conditioning),
    so a compiled step is checked against eager once before it is trusted."""
    def grads(fn):
        for p in params:
            p.grad = None
        fn(*inputs).backward()
        return [None if p.grad is None else p.grad.detach().clone() for p in params]

    want, got = grads(eager), grads(compiled)
    for p in params:
        p.grad = None
    worst, where = 0.0, -1
    for i, (a, b) in enumerate(zip(want, got)):
        if a is None and b is None:
            continue
        if a is None or b is None:
            return float("inf"), i
        err = float((a - b).norm() / a.norm().clamp_min(1e-12))
        if err > worst:
            worst, where = err, i
    return worst, where


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- checkpoints


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file.replacing(path) as tmp:
        tmp.write_bytes(payload)


def save_atomic(obj, path: Path) -> None:
    """torch.save into a temporary file in the same folder, fsync, os.replace: a kill -9 leaves the old file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path):
    # weights_only: these files travel through git between sessions, so reading one must not be able to run code
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(np_rng: np.random.Generator | None = None) -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if np_rng is not None:
        state["numpy"] = np_rng.bit_generator.state
    return state


def restore_rng(state: dict, np_rng: np.random.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if np_rng is not None and "numpy" in state:
        np_rng.bit_generator.state = state["numpy"]


def cleanup_tmp(folder: Path) -> None:
    """Removes temporary files a killed process left behind."""
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


# ----------------------------------------------------------------------------- CSV log


class CsvLog:
    """Append-only CSV with a header; on resume, rows logged after the checkpoint's step are dropped first so that
    the log matches the restored state after a crash."""

    def __init__(self, path: Path, fields: list[str], resume_step: int | None):
        self.path = Path(path)
        self.fields = fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep: list[dict] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row.get("step") or 0) <= resume_step:
                            keep.append(row)
                    except ValueError:
                        continue
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in keep:
            w.writerow(row)
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8"))
        self._f = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=fields, extrasaction="ignore")

    def write(self, **row) -> None:
        self._w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_csv(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- progress, timing


def progress(total: int, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, smoothing=0.05,
                mininterval=2.0)


class Every:
    """True once every `seconds` (wall clock)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def __call__(self) -> bool:
        if time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False


# ----------------------------------------------------------------------------- images


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC (the engine's rounding)."""
    return ((x.detach().float().cpu() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: np.ndarray, path: Path, ncols: int = 8, scale: int = 2, captions: list[str] | None = None):
    """uint8 NHWC images as one PNG (nearest-neighbour upscaled); captions go to a .txt beside it."""
    from PIL import Image

    n, h, w, c = images.shape
    rows = math.ceil(n / ncols)
    grid = np.full((rows * (h + 2), ncols * (w + 2), 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, ncols)
        grid[r * (h + 2) + 1: r * (h + 2) + 1 + h, k * (w + 2) + 1: k * (w + 2) + 1 + w] = img
    im = Image.fromarray(grid)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    if captions:
        atomic_write_bytes(path.with_suffix(".txt"),
                           "\n".join(f"{i}: {c}" for i, c in enumerate(captions)).encode("utf-8") + b"\n")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)
