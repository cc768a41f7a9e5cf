"""A Canny ControlNet for the demo model: trained on the same scenes, against the shipped base checkpoint.

* control images: Canny edges (OpenCV, thresholds 100 / 200 as the ControlNet extension's canny preprocessor uses)
  of the 64x64 scene, white on black, 3 channels in [0, 1] — the size of the generated image (the hint encoder
  downsamples by the autoencoder's factor, 4);
* model: diffusers ControlNetModel initialised from the base UNet's encoder (``ControlNetModel.from_unet``), hint
  encoder widths (16, 32, 96); base UNet and text encoder frozen, read from the shipped single file with the web UI's
  loader, so the ControlNet is trained against exactly the fp16 weights users get;
* loss: the base model's epsilon loss with the ControlNet's residuals added, min-SNR-5 weighted, half of each batch at
  t >= 700 and weighted by at least min(1 / snr, 20) (the layout is decided at high noise); 50 % of captions
  replaced by the empty prompt (as the ControlNet paper does) so the control alone can carry the layout;
* data: the UNet stage's latent cache (training/unet/latents.pt); the control images are re-rendered from the same
  seeds (the captions are checked against the cache) and kept as edges in training/controlnet/edges.pt;
* the steering measurement: a held-out caption ("... on the left ...") with a control image of the same object on
  the opposite side; IoU of the generated object's mask with the control object's mask, with and without the
  ControlNet (same seed).

Files under training/controlnet/: ckpt.pt (resume: weights, optimiser, step, RNG), state.pt (weights only, small
enough to commit), log.csv, eval.csv, samples/step_*.png. Export: models/ControlNet/<name>.safetensors in the
original ControlNet key layout (modules/models/ldm_export.controlnet_to_original_state_dict), fp16.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.demo_model import analysis, common, data, models
from tools.demo_model.unet import (LATENT_CHUNK, _resolve, alphas_cumprod, encode_text, high_noise_meta, loss_weights,
                                   sample, sample_timesteps)

CANNY_LOW, CANNY_HIGH = 100, 200
HINT_WIDTHS = (16, 32, 96)
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


# ----------------------------------------------------------------------------- control images


def canny(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> uint8 [N, H, W] edge maps (0 / 255)."""
    import cv2

    return np.stack([cv2.Canny(np.ascontiguousarray(img), CANNY_LOW, CANNY_HIGH) for img in images])


def hint_tensor(edges: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N, H, W] uint8 edges -> float [N, 3, H, W] in [0, 1] (the control image as the model sees it)."""
    e = torch.as_tensor(edges).float().div(255.0)
    return e[:, None].expand(-1, 3, -1, -1).contiguous()


def build_edges(cache: dict, seed: int, n: int, out: Path) -> torch.Tensor:
    """Canny edges of the first n scenes of the latent cache, re-rendered exactly as `latents` drew them (chunk c:
    numpy Generator([seed, c]), batches of 250); the captions must come out identical to the cache's."""
    from tqdm import tqdm

    if out.exists():
        blob = common.load_checkpoint(out)
        if blob["n"] == n and blob["seed"] == seed and blob["vae_step"] == cache["vae_step"]:
            return blob["edges"]
    edges = []
    bar = tqdm(total=n, desc="control images", unit="img", dynamic_ncols=True)
    for c in range(-(-n // LATENT_CHUNK)):
        rng = np.random.default_rng([seed, c])
        m = min(LATENT_CHUNK, n - c * LATENT_CHUNK)
        for i in range(0, m, 250):
            imgs, caps = data.make_batch(rng, min(250, m - i), "train")
            start = c * LATENT_CHUNK + i
            if caps != cache["captions"][start:start + len(caps)]:
                raise SystemExit(f"re-rendered scenes {start}.. do not match the latent cache's captions: "
                                 f"run `latents` again with --seed {seed}")
            edges.append(torch.from_numpy(canny(imgs)))
            bar.update(len(caps))
    bar.close()
    edges = torch.cat(edges)
    common.save_atomic({"edges": edges, "n": n, "seed": seed, "vae_step": cache["vae_step"]}, out)
    return edges


def steering_cases(n: int) -> list[tuple[str, data.Scene]]:
    """(held-out caption, control scene): the caption's object on the opposite side (captions 'in the center' are
    skipped: every other anchor overlaps a large centred object)."""
    cases = []
    for cap in data.heldout_captions():
        bg, objs = data.parse_caption(cap)
        o = objs[0]
        if o["position"] not in OPPOSITE:
            continue
        ctrl = data.Scene(bg, (data._place(None, o["color"], o["shape"], o["size"], OPPOSITE[o["position"]],
                                           jitter=False),))
        cases.append((cap, ctrl))
        if len(cases) == n:
            break
    return cases


def object_mask(img: np.ndarray) -> np.ndarray:
    """The largest foreground component of an image (the evaluation's pixel analysis)."""
    bg = analysis.background_rgb(img)
    fg = np.linalg.norm(img.astype(np.float32) - bg[None, None], axis=2) > analysis.FG_THRESHOLD
    return analysis.largest_component(fg)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def steering(images_ctrl: np.ndarray, images_free: np.ndarray, cases) -> dict:
    """Mean IoU with the control object's mask, with and without the ControlNet, and per-case values."""
    with_c, without = [], []
    for (cap, scene), a, b in zip(cases, images_ctrl, images_free):
        target = data.shape_mask(scene.objects[0]) > 0.5
        with_c.append(iou(object_mask(a), target))
        without.append(iou(object_mask(b), target))
    return {"iou_control": float(np.mean(with_c)), "iou_without": float(np.mean(without)),
            "per_case_control": with_c, "per_case_without": without}


def misplaced_caption(caption: str, r: int) -> str:
    """The caption with every position phrase replaced by another one (``r`` picks which of the other four)."""
    words = list(data.POSITION_WORDS.values())

    def swap(m: re.Match) -> str:
        others = [w for w in words if w != m.group(0)]
        return others[r % len(others)]
    return re.sub("|".join(map(re.escape, words)), swap, caption)


# ----------------------------------------------------------------------------- model


def load_base(ckpt: Path, device: torch.device):
    """The shipped base model (SDModel) through the web UI's loader, all components frozen."""
    from tools.demo_model.evaluate import load_model

    model, _ = load_model(ckpt, device)
    for m in (model.unet, model.text_encoders[0], model.vae):
        m.requires_grad_(False).eval()
    return model


def new_controlnet(unet):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=HINT_WIDTHS)


def run_steering(model, controlnet, cases, cfg: float = 7.0, steps: int = 20, device="cpu") -> tuple[dict, np.ndarray]:
    tok = model.tokenizers[0]
    ids = models.token_ids(tok, [c for c, _ in cases])
    empty = models.token_ids(tok, [""])
    hint = hint_tensor(canny(np.stack([data.render(s) for _, s in cases])))
    seeds = list(range(2000, 2000 + len(cases)))
    scale = float(model.vae.config.scaling_factor)
    te = model.text_encoders[0]
    ctrl = sample(model.unet, te, model.vae, ids, empty, scale, seeds, steps, cfg, device=device,
                  controlnet=controlnet, hint=hint)
    free = sample(model.unet, te, model.vae, ids, empty, scale, seeds, steps, cfg, device=device)
    return steering(ctrl, free, cases), np.concatenate([ctrl, free])


# ----------------------------------------------------------------------------- training


def train(args) -> dict:
    device = common.setup_torch(args.threads, args.device)
    out = common.TRAINING_DIR / args.run
    out.mkdir(parents=True, exist_ok=True)
    common.cleanup_tmp(out)
    ckpt_path = out / "ckpt.pt"
    base_path = _resolve(args.base)
    model = load_base(base_path, device)
    unet, te = model.unet, model.text_encoders[0]
    scale = float(model.vae.config.scaling_factor)

    cache = common.load_checkpoint(_resolve(args.latents))
    n_data = min(args.n, len(cache["latents"]))
    latents = cache["latents"][:n_data]
    ids_all = cache["ids"][:n_data].long()
    if abs(float(cache["scale_factor"]) - scale) > 1e-3:
        raise SystemExit(f"{args.latents} has scale factor {cache['scale_factor']:.4f}, the base model "
                         f"{base_path.name} {scale:.4f}: not the same autoencoder")
    edges = build_edges(cache, args.data_seed, n_data, out / "edges.pt")

    torch.manual_seed(args.seed)
    cn = new_controlnet(unet).to(device)
    opt = torch.optim.AdamW(cn.parameters(), lr=args.lr, weight_decay=0.0)
    empty_ids = models.token_ids(model.tokenizers[0], [""]).to(device)
    ac = alphas_cumprod().to(device)
    meta = {"base": base_path.name, "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "cond_drop": args.cond_drop, "min_snr": args.min_snr, "n_data": n_data, "hint_widths": HINT_WIDTHS,
            "canny": [CANNY_LOW, CANNY_HIGH],
            "high_noise": high_noise_meta(args),
            "conflict": [args.conflict_frac, args.conflict_after]}
    step, elapsed0, rewarm_from = 0, 0.0, 0
    if ckpt_path.exists() and not args.restart:
        ck = common.load_checkpoint(ckpt_path)
        cn.load_state_dict(ck["controlnet"])
        opt.load_state_dict(ck["opt"])
        step, elapsed0 = ck["step"], float(ck.get("elapsed", 0.0))
        common.restore_rng(ck["rng"])
        print(f"resumed {ckpt_path} at step {step}")
    elif (out / "state.pt").exists() and not args.restart:
        st = common.load_checkpoint(out / "state.pt")  # weights only: fresh optimiser, LR warmed up again
        cn.load_state_dict(st["controlnet"])
        step = rewarm_from = int(st["step"])
        elapsed0 = float(st.get("elapsed", 0.0))
        torch.manual_seed(args.seed * 1_000_003 + step)
        print(f"resumed the weights of {out / 'state.pt'} at step {step} (fresh optimiser)")
    (out / "config.json").write_text(json.dumps({"controlnet": dict(cn.config), "meta": meta,
                                                 "params": common.param_count(cn)}, indent=1, default=list))
    log = common.CsvLog(out / "log.csv", ["step", "loss", "lr", "sec_per_step", "elapsed_min"], step)
    elog = common.CsvLog(out / "eval.csv", ["step", "iou_control", "iou_without", "eval_sec", "elapsed_min"], step)
    cases = steering_cases(args.eval_cases)

    def checkpoint() -> dict:
        t0 = time.monotonic()
        elapsed = elapsed0 + (time.monotonic() - t_start)
        state = {"controlnet": cn.state_dict(), "step": step, "meta": meta, "elapsed": elapsed}
        common.save_atomic({**state, "opt": opt.state_dict(), "rng": common.rng_state()}, ckpt_path)
        common.save_atomic(state, out / "state.pt")
        cn.eval()
        try:
            res, imgs = run_steering(model, cn, cases, device=device)
        finally:
            cn.train()
        common.save_grid(imgs, out / "samples" / f"step_{step:06d}.png", ncols=len(cases),
                         captions=[c for c, _ in cases])
        row = {"iou_control": res["iou_control"], "iou_without": res["iou_without"],
               "eval_sec": time.monotonic() - t0, "elapsed_min": elapsed / 60}
        elog.write(step=step, **row)
        bar.write(f"[controlnet] step {step}: IoU with the control's shape {res['iou_control']:.2f} "
                  f"(without ControlNet {res['iou_without']:.2f}) on {len(cases)} cases")
        return row

    cn.train()
    t_start = time.monotonic()
    every = common.Every(args.ckpt_minutes * 60)
    stop_at = t_start + args.max_minutes * 60 if args.max_minutes else None
    bar = common.progress(args.steps, step, "controlnet")
    acc, n_acc, t_log = 0.0, 0, time.monotonic()
    res: dict = {}
    while step < args.steps:
        lr = common.cosine_lr(step, args.steps, args.lr, args.warmup)
        if rewarm_from:
            lr *= min(1.0, (step - rewarm_from + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n_data, (args.batch,))
        x0 = latents[idx].float().to(device) * scale
        ids = ids_all[idx].to(device)
        if args.conflict_frac > 0 and step >= args.conflict_after:
            # the control image is the authority on layout: some captions name other positions than the scene's
            k = int(round(args.batch * args.conflict_frac))
            r = torch.randint(0, 4, (k,)).tolist()
            caps = [misplaced_caption(cache["captions"][int(i)], ri) for i, ri in zip(idx[:k], r)]
            ids[:k] = models.token_ids(model.tokenizers[0], caps).to(device)
        ids[(torch.rand(args.batch) < args.cond_drop).to(device)] = empty_ids
        hint = hint_tensor(edges[idx]).to(device)
        noise = torch.randn_like(x0)
        t = sample_timesteps(args, step, device)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.no_grad():
            ctx = encode_text(te, ids)
        down, mid = cn(xt, t, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
        pred = unet(xt, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample.float()
        per = F.mse_loss(pred, noise, reduction="none").flatten(1).mean(1)
        loss = (per * loss_weights(args, step, ac[t])).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
        opt.step()
        step += 1
        loss_value = loss.item()
        acc += loss_value
        n_acc += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.1e}")
        if step % args.log_every == 0 or step == args.steps:
            now = time.monotonic()
            log.write(step=step, loss=acc / n_acc, lr=lr, sec_per_step=(now - t_log) / n_acc,
                      elapsed_min=(elapsed0 + now - t_start) / 60)
            acc, n_acc, t_log = 0.0, 0, now
        if step == args.steps:
            break
        if every():
            res = checkpoint()
        if stop_at and time.monotonic() >= stop_at:
            bar.write(f"[controlnet] --max-minutes reached at step {step}; resume with the same command")
            break
    res = checkpoint()
    bar.close()
    log.close()
    elog.close()
    return {"step": step, **res}


# ----------------------------------------------------------------------------- export, evaluation


def export(args) -> None:
    from modules.models.controlnet import load_controlnet
    from modules.models.ldm_export import controlnet_to_original_state_dict, save_checkpoint

    device = common.setup_torch(args.threads, "cpu")
    model = load_base(_resolve(args.base), device)
    st = common.load_checkpoint(_resolve(args.state))
    cn = new_controlnet(model.unet)
    cn.load_state_dict(st["controlnet"])
    out = _resolve(args.out)
    save_checkpoint(controlnet_to_original_state_dict(cn), out, dtype=torch.float16,
                    metadata={"demo_controlnet_step": str(st["step"]), "base": st["meta"]["base"],
                              "preprocessor": f"canny {CANNY_LOW} {CANNY_HIGH}"})
    back = load_controlnet(out, model.unet.config)
    worst = max(float((a.float() - b.half().float()).abs().max())
                for a, b in zip(back.state_dict().values(), cn.state_dict().values()))
    print(json.dumps({"path": str(out), "mb": out.stat().st_size / 1e6, "step": st["step"],
                      "max_abs_diff_after_reload_vs_fp16": worst}, indent=1))
    if worst > 0:
        raise SystemExit("the exported ControlNet does not read back as written")


def evaluate(args) -> None:
    from modules.models.controlnet import load_controlnet

    device = common.setup_torch(args.threads, args.device)
    model = load_base(_resolve(args.base), device)
    cn = load_controlnet(_resolve(args.controlnet), model.unet.config, device)
    cases = steering_cases(args.n)
    t0 = time.perf_counter()
    res, imgs = run_steering(model, cn, cases, device=device)
    res["seconds"] = time.perf_counter() - t0
    res["n"] = len(cases)
    res["passed"] = res["iou_control"] >= 0.6 and res["iou_without"] <= 0.3
    out = _resolve(args.out)
    common.save_grid(imgs, out / "grid.png", ncols=min(16, len(cases)), captions=[c for c, _ in cases])
    common.atomic_write_bytes(out / "results.json", json.dumps(res, indent=1).encode())
    print(f"IoU with the control's shape: {res['iou_control']:.3f} with the ControlNet, {res['iou_without']:.3f} "
          f"without, on {len(cases)} held-out captions; {'PASS' if res['passed'] else 'FAIL'} (>= 0.6 / <= 0.3)")
