"""Shared plumbing of the small recipes trained against the shipped base model with the base frozen (the demo LoRA,
tools/demo_model/lora.py, and the demo embedding, tools/demo_model/embedding.py):

* the base checkpoint read with the web UI's own loader (what users get: fp16 weights, run in fp32 here);
* a latent cache of rendered scenes, encoded once with the base model's autoencoder (posterior mode);
* one resumable training loop (AdamW, cosine schedule, atomic checkpoints, CSV log, --max-minutes);
* generation through the engine (modules.processing.process) with per-job patches added by a setup function.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tools.demo_model import common, data
from tools.demo_model.unet import SCHEDULE, _resolve, alphas_cumprod

CACHE_CHUNK = 500


def load_frozen_base(path: str, device: torch.device):
    """The shipped base model (SDModel) through the web UI's loader, every weight frozen."""
    from tools.demo_model.evaluate import load_model

    model, _ = load_model(_resolve(path), device)
    for m in (model.unet, model.text_encoders[0], model.vae):
        m.requires_grad_(False).eval()
    return model


@torch.no_grad()
def latent_cache(path: Path, model, make_batch: Callable, n: int, seed: int) -> dict:
    """{"latents": fp16 [n, 4, 16, 16] (unscaled), "captions": [...], "seed", "n"} of n scenes from
    ``make_batch(rng, k) -> (uint8 images, captions)``; chunk c draws from numpy Generator([seed, c]). When
    make_batch also returns masks (float [k, 64, 64]), "masks" holds them at the latents' size (area mean). Reused
    while n, seed and the presence of masks match."""
    from tqdm import tqdm

    if path.exists():
        blob = common.load_checkpoint(path)
        with_masks = len(make_batch(np.random.default_rng(0), 1)) == 3
        if blob["n"] == n and blob["seed"] == seed and ("masks" in blob) == with_masks:
            return blob
    lats, caps, masks = [], [], []
    bar = tqdm(total=n, desc="latents", unit="img", dynamic_ncols=True)
    for c in range(-(-n // CACHE_CHUNK)):
        rng = np.random.default_rng([seed, c])
        images, captions, *mask = make_batch(rng, min(CACHE_CHUNK, n - c * CACHE_CHUNK))
        if mask:
            m = torch.from_numpy(np.asarray(mask[0], dtype=np.float32))[:, None]
            masks.append(torch.nn.functional.avg_pool2d(m, 4)[:, 0].half())
        for i in range(0, len(images), 50):
            x = data.to_tensor_range(images[i:i + 50]).to(model.device)
            lats.append(model.vae.encode(x).latent_dist.mode().float().cpu().half())
        caps += captions
        bar.update(len(captions))
    bar.close()
    blob = {"latents": torch.cat(lats), "captions": caps, "seed": seed, "n": n}
    if masks:
        blob["masks"] = torch.cat(masks)
    common.save_atomic(blob, path)
    return blob


class Diffusion:
    """Noised latents and loss weights of the base model's training objective (epsilon, SD1 schedule)."""

    def __init__(self, device, min_snr: float):
        self.ac = alphas_cumprod().to(device)
        self.min_snr = min_snr

    def noised(self, x0: torch.Tensor):
        noise = torch.randn_like(x0)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (x0.shape[0],), device=x0.device)
        a = self.ac[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, t, noise

    def loss(self, pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """min-SNR weighted epsilon MSE; ``weight`` [batch, h, w] weighs the latent positions (normalised to mean 1
        per sample)."""
        err = (pred.float() - noise).pow(2)
        if weight is not None:
            weight = weight / weight.flatten(1).mean(1).view(-1, 1, 1)
            err = err * weight[:, None]
        per = err.flatten(1).mean(1)
        if self.min_snr > 0:
            snr = self.ac[t] / (1 - self.ac[t])
            per = per * torch.clamp(snr, max=self.min_snr) / snr
        return per.mean()


def train_loop(args, out: Path, params: list[torch.nn.Parameter], step_fn: Callable[[int], torch.Tensor],
               meta: dict, on_checkpoint: Callable[[int], dict] | None = None, name: str = "train") -> dict:
    """Optimises ``params`` with AdamW on ``step_fn(step) -> loss`` for args.steps steps (cosine schedule after
    args.warmup); out/ckpt.pt (params, optimiser, RNG) resumes it, out/state.pt holds the params alone, out/log.csv
    the loss. ``on_checkpoint(step)`` may measure something; its dict goes into out/eval.csv."""
    out.mkdir(parents=True, exist_ok=True)
    common.cleanup_tmp(out)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ckpt_path = out / "ckpt.pt"
    step, elapsed0 = 0, 0.0
    if ckpt_path.exists() and not args.restart:
        ck = common.load_checkpoint(ckpt_path)
        changed = {k for k in meta if k != "steps" and ck["meta"].get(k) != meta[k]}
        if changed:  # a higher --steps continues the run (the schedule stretches); anything else starts over
            raise SystemExit(f"{ckpt_path} was trained with other settings ({', '.join(sorted(changed))}): "
                             f"use --restart or another --run")
        with torch.no_grad():
            for p, v in zip(params, ck["params"]):
                p.copy_(v)
        opt.load_state_dict(ck["opt"])
        step, elapsed0 = ck["step"], float(ck["elapsed"])
        common.restore_rng(ck["rng"])
        print(f"resumed {ckpt_path} at step {step}")
    log = common.CsvLog(out / "log.csv", ["step", "loss", "lr", "sec_per_step", "elapsed_min"], step)
    eval_rows = common.CsvLog(out / "eval.csv", ["step", "result", "elapsed_min"], step)
    t_start = time.monotonic()

    def checkpoint() -> dict:
        elapsed = elapsed0 + time.monotonic() - t_start
        state = {"params": [p.detach().clone() for p in params], "step": step, "meta": meta, "elapsed": elapsed}
        common.save_atomic({**state, "opt": opt.state_dict(), "rng": common.rng_state()}, ckpt_path)
        common.save_atomic(state, out / "state.pt")
        res = on_checkpoint(step) if on_checkpoint else {}
        if res:
            eval_rows.write(step=step, result=" ".join(f"{k}={v:.3g}" for k, v in res.items()),
                            elapsed_min=elapsed / 60)
            bar.write(f"[{name}] step {step}: " + ", ".join(f"{k} {v:.3g}" for k, v in res.items()))
        return {"step": step, "elapsed_min": elapsed / 60, **res}

    every = common.Every(args.ckpt_minutes * 60)
    stop_at = t_start + args.max_minutes * 60 if args.max_minutes else None
    bar = common.progress(args.steps, step, name)
    acc, n_acc, t_log = 0.0, 0, time.monotonic()
    while step < args.steps:
        lr = common.cosine_lr(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        acc += float(loss)
        n_acc += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.1e}")
        if step % args.log_every == 0 or step == args.steps:
            now = time.monotonic()
            log.write(step=step, loss=acc / n_acc, lr=lr, sec_per_step=(now - t_log) / n_acc,
                      elapsed_min=(elapsed0 + now - t_start) / 60)
            acc, n_acc, t_log = 0.0, 0, now
        if step == args.steps:
            break
        if every():
            checkpoint()
        if stop_at and time.monotonic() >= stop_at:
            bar.write(f"[{name}] --max-minutes reached at step {step}; resume with the same command")
            break
    res = checkpoint()
    bar.close()
    log.close()
    eval_rows.close()
    return res


def load_state(out: Path) -> dict:
    path = out / "state.pt"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: train first")
    return common.load_checkpoint(path)


@torch.no_grad()
def generate(model, prompt: str, seed: int, cfg: float, setup=None, embeddings=None, steps: int = 20,
             sampler: str = "DPM++ 2M") -> np.ndarray:
    """One image through the engine (modules.processing.process); ``setup(p)`` may add patches to p.patches or
    register network handlers, ``embeddings`` is a textual-inversion database's job view."""
    from modules import processing
    from modules.engine.params import GenerationParams

    side = model.spec.native_resolution
    p = GenerationParams(prompt=prompt, negative_prompt="", seed=seed, steps=steps, cfg_scale=cfg, width=side,
                         height=side, sampler_name=sampler, batch_size=1, do_not_save_samples=True,
                         do_not_save_grid=True)
    res = processing.process(model, p, setup=setup, embeddings=embeddings)
    return np.asarray(res.images[0].convert("RGB"))
