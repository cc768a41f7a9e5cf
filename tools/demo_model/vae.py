"""Stage 1: the KL autoencoder (diffusers AutoencoderKL), trained on freshly generated scenes.

Loss = L1 + MSE on pixels in [-1, 1] + kl_weight * KL (diffusers' KL: summed over latent dims, mean over batch).
Scenes come from the training split only (held-out combinations never seen); PSNR is measured on held-out scenes.

Files under ``training/<run>/`` (run = ``vae`` by default):
  ckpt.pt        full state for resuming (model, optimiser, step, RNG), written atomically
  vae.pt         the weights + config + latent statistics of the last checkpoint (what the UNet stage uses)
  log.csv        step, loss terms, lr, seconds/step (every --log-every steps)
  eval.csv       step, held-out PSNR, latent mean/std (every checkpoint)
  samples/step_XXXXXX.png   held-out scenes (odd rows) and their reconstructions (even rows)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.demo_model import common, data, models

EVAL_SCENES = 256
GRID_SCENES = 16


def heldout_eval_images() -> torch.Tensor:
    scenes = data.heldout_scenes(EVAL_SCENES)
    return data.to_tensor_range(np.stack([data.render(s) for s in scenes]))


@torch.no_grad()
def evaluate(vae, device, images: torch.Tensor, batch: int = 64) -> dict:
    """Held-out PSNR (posterior mode, fp32), latent statistics, and how often the evaluation's pixel analysis still
    reads the right colour / shape from the reconstruction (the ceiling for the diffusion model's scores)."""
    from tools.demo_model import analysis

    vae.eval()
    ps, zs, recs = [], [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device)
        z = vae.encode(x).latent_dist.mode()
        y8 = common.to_uint8(vae.decode(z).sample)
        # the engine rounds to uint8: measure what a user would see
        y = torch.from_numpy(y8).permute(0, 3, 1, 2).float() / 127.5 - 1
        ps.append(common.psnr(y, x.cpu()))
        zs.append(z.float().cpu())
        recs.append(y8)
    vae.train()
    z = torch.cat(zs)
    out = {"psnr": float(torch.cat(ps).mean()), "psnr_min": float(torch.cat(ps).min()),
           "latent_mean": float(z.mean()), "latent_std": float(z.std()), "scale_factor": float(1.0 / z.std())}
    if len(images) == EVAL_SCENES:
        scenes = data.heldout_scenes(EVAL_SCENES)
        hits = {"color": 0, "position": 0, "shape": 0, "size": 0}
        for scene, img in zip(scenes, np.concatenate(recs)):
            res = analysis.analyze(img)
            for k in hits:
                hits[k] += int(res.found and getattr(res, k) == getattr(scene.objects[0], k))
        out.update({f"rec_{k}": v / EVAL_SCENES for k, v in hits.items()})
    return out


@torch.no_grad()
def reconstruction_grid(vae, device, images: torch.Tensor, path: Path) -> None:
    vae.eval()
    x = images[:GRID_SCENES].to(device)
    y = vae.decode(vae.encode(x).latent_dist.mode()).sample
    vae.train()
    orig, rec = common.to_uint8(x), common.to_uint8(y)
    rows = []
    for k in range(0, GRID_SCENES, 8):
        rows += [orig[k:k + 8], rec[k:k + 8]]
    common.save_grid(np.concatenate(rows), path)


@torch.no_grad()
def timing(vae, device, repeats: int = 5) -> dict:
    """Seconds for encode (posterior mode) and decode of one 64x64 image and of a batch of 16 (fp32)."""
    vae.eval()
    out = {}
    for bs in (1, 16):
        x = torch.zeros(bs, 3, data.IMAGE_SIZE, data.IMAGE_SIZE, device=device)
        z = vae.encode(x).latent_dist.mode()
        vae.decode(z)
        t0 = time.perf_counter()
        for _ in range(repeats):
            z = vae.encode(x).latent_dist.mode()
        t1 = time.perf_counter()
        for _ in range(repeats):
            vae.decode(z)
        t2 = time.perf_counter()
        out[f"encode_b{bs}_ms"] = (t1 - t0) / repeats * 1000
        out[f"decode_b{bs}_ms"] = (t2 - t1) / repeats * 1000
    vae.train()
    return out


def init_logvar_(vae, value: float) -> None:
    """Start with a small posterior std: with diffusers' default init (logvar ~ 0, std ~ 1) the sampled latent is
    mostly noise while the means are still ~0.2, and the decoder learns nothing until the encoder has shrunk the
    variance (measured: PSNR ~13 dB after 180 steps).  The KL term is unchanged; it can raise the variance later."""
    if value is None:
        return
    conv = vae.encoder.conv_out
    half = conv.out_channels // 2
    with torch.no_grad():
        conv.bias[half:].fill_(value)
        conv.weight[half:].mul_(0.1)


def load_vae(path: Path, device="cpu"):
    """(AutoencoderKL in eval mode, info dict) from a vae.pt written by this stage."""
    blob = common.load_checkpoint(path)
    vae = models.build_vae(blob["config"])
    vae.load_state_dict(blob["state_dict"])
    return vae.to(device).eval().requires_grad_(False), blob


def train(args) -> dict:
    device = common.setup_torch(args.threads, args.device)
    out = common.TRAINING_DIR / args.run
    out.mkdir(parents=True, exist_ok=True)
    common.cleanup_tmp(out)
    ckpt_path = out / "ckpt.pt"

    cfg = models.vae_config(args.variant)
    torch.manual_seed(args.seed)
    vae = models.build_vae(cfg)
    init_logvar_(vae, args.init_logvar)
    if getattr(args, "init_from", None):
        blob = common.load_checkpoint(Path(args.init_from))
        if blob["config"]["block_out_channels"] != cfg["block_out_channels"]:
            raise SystemExit(f"{args.init_from} is not a {args.variant} autoencoder")
        vae.load_state_dict(blob["state_dict"])
    vae = vae.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    np_rng = np.random.default_rng(args.seed)
    step = rewarm_from = 0
    elapsed0 = 0.0
    meta = {"variant": args.variant, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "init_logvar": args.init_logvar, "init_from": getattr(args, "init_from", None),
            "kl_weight": args.kl_weight, "seed": args.seed, "precision": args.precision}
    if ckpt_path.exists() and not args.restart:
        ck = common.load_checkpoint(ckpt_path)
        if ck["meta"]["variant"] != args.variant:
            raise SystemExit(f"{ckpt_path} is a {ck['meta']['variant']} run; use another --run or --restart")
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed0 = ck["step"], float(ck.get("elapsed", 0.0))
        common.restore_rng(ck["rng"], np_rng)
        print(f"resumed {ckpt_path} at step {step}")
    elif (out / "vae.pt").exists() and not args.restart:
        # Only the weights travel between sessions (vae.pt, committed to git: 13 MB instead of the 39 MB of ckpt.pt
        # with the optimiser). Resume from them with a fresh optimiser, warmed up again, and a data stream seeded by
        # the step, so the same command still continues the run instead of overwriting it with a new one.
        blob = common.load_checkpoint(out / "vae.pt")
        if blob["meta"]["variant"] != args.variant:
            raise SystemExit(f"{out / 'vae.pt'} is a {blob['meta']['variant']} autoencoder; use --restart")
        vae.load_state_dict(blob["state_dict"])
        step = rewarm_from = int(blob["step"])
        elapsed0 = float(blob.get("elapsed", 0.0))
        np_rng = np.random.default_rng([args.seed, step])
        print(f"resumed the weights of {out / 'vae.pt'} at step {step} (fresh optimiser)")
    log = common.CsvLog(out / "log.csv", ["step", "loss", "l1", "mse", "kl", "lr", "sec_per_step", "elapsed_min"],
                        step)
    elog = common.CsvLog(out / "eval.csv", ["step", "psnr", "psnr_min", "latent_mean", "latent_std", "scale_factor",
                                            "rec_color", "rec_position", "rec_shape", "rec_size", "elapsed_min"],
                         step)
    (out / "config.json").write_text(json.dumps({"vae": cfg, "meta": meta,
                                                 "params": common.param_count(vae)}, indent=1))
    eval_images = heldout_eval_images()

    def checkpoint(final: bool = False) -> dict:
        metrics = evaluate(vae, device, eval_images)
        reconstruction_grid(vae, device, eval_images, out / "samples" / f"step_{step:06d}.png")
        elapsed = elapsed0 + (time.monotonic() - t_start)
        common.save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                            "rng": common.rng_state(np_rng), "meta": meta, "elapsed": elapsed}, ckpt_path)
        common.save_atomic({"config": cfg, "state_dict": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
                            "step": step, "metrics": metrics, "meta": meta, "elapsed": elapsed}, out / "vae.pt")
        elog.write(step=step, elapsed_min=elapsed / 60, **metrics)
        bar.write(f"[vae] step {step}: held-out PSNR {metrics['psnr']:.2f} dB (min {metrics['psnr_min']:.2f}), "
                  f"latent std {metrics['latent_std']:.3f}" + (" (final)" if final else ""))
        return metrics

    vae.train()
    t_start = time.monotonic()
    every = common.Every(args.ckpt_minutes * 60)
    stop_at = t_start + args.max_minutes * 60 if args.max_minutes else None
    bar = common.progress(args.steps, step, f"vae-{args.variant}")
    acc = {"loss": 0.0, "l1": 0.0, "mse": 0.0, "kl": 0.0}
    n_acc, t_log = 0, time.monotonic()
    metrics = None
    while step < args.steps:
        lr = common.cosine_lr(step, args.steps, args.lr, args.warmup)
        if rewarm_from:
            lr *= min(1.0, (step - rewarm_from + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        imgs, _ = data.make_batch(np_rng, args.batch, "train")
        x = data.to_tensor_range(imgs).to(device)
        with common.autocast(device, args.precision):
            post = vae.encode(x).latent_dist
            z = post.sample()
            y = vae.decode(z).sample.float()
        l1 = (y - x).abs().mean()
        mse = F.mse_loss(y, x)
        kl = post.kl().float().mean()
        loss = l1 + mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in (("loss", loss), ("l1", l1), ("mse", mse), ("kl", kl)):
            acc[k] += float(v)
        n_acc += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}", l1=f"{float(l1):.4f}", lr=f"{lr:.1e}")
        if step % args.log_every == 0 or step == args.steps:
            now = time.monotonic()
            log.write(step=step, lr=lr, sec_per_step=(now - t_log) / n_acc,
                      elapsed_min=(elapsed0 + now - t_start) / 60, **{k: v / n_acc for k, v in acc.items()})
            acc = dict.fromkeys(acc, 0.0)
            n_acc, t_log = 0, now
        if step == args.steps:
            break
        if every():
            metrics = checkpoint()
        if stop_at and time.monotonic() >= stop_at:
            bar.write(f"[vae] --max-minutes reached at step {step}; resume with the same command")
            break
    metrics = checkpoint(final=step >= args.steps)
    bar.close()
    log.close()
    elog.close()
    return {"step": step, **metrics}


def compare(args) -> dict:
    """f4 vs f8: same steps, batch, lr, seed, threads; PSNR on held-out scenes and encode/decode time."""
    results = {}
    for variant in args.variants:
        a = _copy_args(args, variant=variant, run=f"ae_compare/{variant}", init_from=None)
        t0 = time.monotonic()
        res = train(a)
        train_min = (time.monotonic() - t0) / 60
        device = common.setup_torch(args.threads, args.device)
        vae, _ = load_vae(common.TRAINING_DIR / a.run / "vae.pt", device)
        rows = common.read_csv(common.TRAINING_DIR / a.run / "log.csv")
        sec = [float(r["sec_per_step"]) for r in rows[1:]] or [float(rows[0]["sec_per_step"])]
        results[variant] = {**res, "train_minutes": train_min, "sec_per_step": float(np.median(sec)),
                            "params": common.param_count(vae), **timing(vae, device),
                            "latent_shape": [vae.config.latent_channels, 64 // models.vae_factor(dict(vae.config)),
                                             64 // models.vae_factor(dict(vae.config))]}
        print(json.dumps({variant: results[variant]}, indent=1))
    path = common.TRAINING_DIR / "ae_compare" / "results.json"
    if path.exists():  # keep the other variants' results
        results = {**json.loads(path.read_text()), **results}
    common.atomic_write_bytes(path, json.dumps(results, indent=1).encode())
    print(f"wrote {path}")
    return results


def _copy_args(args, **kw):
    import argparse

    d = dict(vars(args))
    d.update(kw)
    return argparse.Namespace(**d)
