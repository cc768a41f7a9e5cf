"""Stage 2: UNet2DConditionModel + a small CLIPTextModel, trained jointly on cached autoencoder latents.

* epsilon prediction, SD 1.x noise schedule (scaled_linear, beta 0.00085 -> 0.012, 1000 steps)
* captions are tokenised exactly as the web UI does it (BOS, tokens, EOS padding to 77, no attention mask); the
  conditioning is the text encoder's last_hidden_state (final layer norm), as the SD1 loader uses it
* caption dropout to the empty prompt (classifier-free guidance), min-SNR-gamma loss weighting, EMA weights
* sample grids and a quick held-out score (pixel analysis) at every checkpoint, with the EMA weights and the web
  UI's own scheduler settings (modules/engine/samplers.py)

Files under ``training/<run>/`` (run = ``unet``): ckpt.pt (resume state incl. EMA), log.csv, eval.csv,
samples/step_XXXXXX.png (+ .txt captions). The latent cache is training/unet/latents.pt (``latents`` command).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.demo_model import analysis, common, data, models

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
LATENT_CHUNK = 10_000
COMPILE_GRAD_TOLERANCE = 1e-2  # fp32 reordering stays near 1e-5; the miscompiled step was off by up to 4


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(SCHEDULE["beta_start"] ** 0.5, SCHEDULE["beta_end"] ** 0.5,
                           SCHEDULE["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else common.REPO / p


# ----------------------------------------------------------------------------- latent cache


@torch.no_grad()
def build_latents(args) -> None:
    """Encodes n training scenes (posterior mode, fp32) in resumable chunks, then writes one latents.pt with the
    token ids and the latent scale factor (1 / std of all latents)."""
    from tqdm import tqdm

    from tools.demo_model.vae import load_vae

    device = common.setup_torch(args.threads, args.device)
    out = _resolve(args.out)
    parts = out.parent / "latent_parts"
    parts.mkdir(parents=True, exist_ok=True)
    common.cleanup_tmp(parts)
    vae_path = _resolve(args.vae)
    vae, blob = load_vae(vae_path, device)
    tok = models.load_tokenizer()
    n_chunks = -(-args.n // LATENT_CHUNK)
    bar = tqdm(total=args.n, desc="latents", unit="img", dynamic_ncols=True)
    for c in range(n_chunks):
        n = min(LATENT_CHUNK, args.n - c * LATENT_CHUNK)
        path = parts / f"part_{c:03d}.pt"
        if path.exists():
            part = common.load_checkpoint(path)
            if part["vae_step"] == blob["step"] and len(part["captions"]) == n and part.get("seed") == args.seed:
                bar.update(n)
                continue
        rng = np.random.default_rng([args.seed, c])  # each chunk has its own stream: chunks are independent
        lats, caps = [], []
        for i in range(0, n, 250):
            imgs, cap = data.make_batch(rng, min(250, n - i), "train")
            x = data.to_tensor_range(imgs).to(device)
            with common.autocast(device, args.precision):
                lats.append(vae.encode(x).latent_dist.mode().float().cpu())
            caps += cap
            bar.update(len(cap))
        common.save_atomic({"latents": torch.cat(lats).half(), "captions": caps, "vae_step": blob["step"],
                            "seed": args.seed}, path)
    bar.close()
    lat, caps = [], []
    for c in range(n_chunks):
        part = common.load_checkpoint(parts / f"part_{c:03d}.pt")
        lat.append(part["latents"])
        caps += part["captions"]
    lat = torch.cat(lat)
    ids = models.token_ids(tok, caps).to(torch.int32)
    std = float(lat.float().std())
    common.save_atomic({"latents": lat, "ids": ids, "captions": caps, "scale_factor": 1.0 / std,
                        "latent_mean": float(lat.float().mean()), "latent_std": std, "vae": str(vae_path),
                        "vae_step": blob["step"], "vae_config": blob["config"]}, out)
    print(f"wrote {out}: {tuple(lat.shape)} latents, std {std:.4f} -> scale_factor {1 / std:.4f}")


# ----------------------------------------------------------------------------- sampling


def encode_text(te, ids: torch.Tensor) -> torch.Tensor:
    return te(ids).last_hidden_state


def make_scheduler(sampler: str = "DPM++ 2M", schedule: str = "Automatic"):
    from modules.engine import samplers

    spec, sched = samplers.resolve(sampler, schedule)
    base = {**models.family_defaults("sd1")["scheduler"], "prediction_type": "epsilon"}
    return samplers.make_scheduler(spec, sched, base)


@torch.no_grad()
def sample(unet, te, vae, ids: torch.Tensor, empty_ids: torch.Tensor, scale_factor: float, seeds: list[int],
           steps: int = 20, cfg: float = 7.0, sampler: str = "DPM++ 2M", device="cpu", controlnet=None,
           hint: torch.Tensor | None = None) -> np.ndarray:
    """uint8 NHWC images; mirrors the engine (modules/engine/run.py and sampling.py: seeded CPU noise per image, CFG,
    engine schedulers). With ``controlnet`` and ``hint`` (float NCHW in [0, 1], image size), the ControlNet's residuals
    are added to the UNet for both CFG halves."""
    ctx = encode_text(te, ids.to(device))
    use_cfg = cfg != 1.0
    if use_cfg:
        ctx = torch.cat([encode_text(te, empty_ids.to(device)).expand(len(ids), -1, -1), ctx])
    if controlnet is not None:
        hint = hint.to(device)
        hint = torch.cat([hint, hint]) if use_cfg else hint
    sched = make_scheduler(sampler)
    sched.set_timesteps(steps, device=device)
    c = unet.config.in_channels
    h = unet.config.sample_size
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    lat = torch.stack([torch.randn((c, h, h), generator=g) for g in gens]).to(device) * sched.init_noise_sigma
    for t in sched.timesteps:
        x = torch.cat([lat] * 2) if use_cfg else lat
        x = sched.scale_model_input(x, t)
        extra = {}
        if controlnet is not None:
            down, mid = controlnet(x, t, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = unet(x, t, encoder_hidden_states=ctx, **extra).sample.float()
        if use_cfg:
            u, cnd = out.chunk(2)
            out = u + cfg * (cnd - u)
        lat = sched.step(out, t, lat, generator=gens, return_dict=False)[0]
    return common.to_uint8(vae.decode(lat / scale_factor).sample)


def score(images: np.ndarray, captions: list[str]) -> dict:
    """Fraction of images whose largest object has the caption's colour / position / shape / size."""
    hits = {"color": 0, "position": 0, "shape": 0, "size": 0}
    for img, cap in zip(images, captions):
        _, objs = data.parse_caption(cap)
        want = objs[0]
        res = analysis.analyze(img)
        for k in hits:
            hits[k] += int(res.found and getattr(res, k) == want[k])
    return {k: v / len(captions) for k, v in hits.items()}


# ----------------------------------------------------------------------------- training


def sample_timesteps(args, step: int, device) -> torch.Tensor:
    """Uniform over the 1000 training timesteps; from step ``--high-noise-after`` on, a fraction ``--high-noise-frac``
    of each batch is drawn from [``--high-noise-min``, 999] instead.

    Why: where the layout is decided (the first sampler steps, t >= ~700, alpha_bar <= 0.08) the caption's share of
    the epsilon target is tiny (sqrt(alpha_bar) of the image), so with uniform timesteps the UNet learned colours and
    shapes (decided later) but ignored the position words: held-out position accuracy stayed at 9-25 % (chance 20 %)
    for 2,500 steps while colour reached 88 %, and its x0 estimate at t = 999 was the same for every caption."""
    n = SCHEDULE["num_train_timesteps"]
    t = torch.randint(0, n, (args.batch,), device=device)
    if args.high_noise_frac > 0 and _high_noise_phase(args, args.high_noise_after, step):
        k = int(round(args.batch * args.high_noise_frac))
        t[:k] = torch.randint(args.high_noise_min, n, (k,), device=device)
    return t


def _high_noise_phase(args, start: int, step: int) -> bool:
    return start <= step < (args.high_noise_until or step + 1)


def high_noise_meta(args) -> dict:
    """The high-noise options as a run's config.json records them."""
    return {k: getattr(args, f"high_noise_{k}") for k in ("frac", "min", "after", "weight", "weight_after", "until")}


def loss_weights(args, step: int, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of the epsilon loss: min-SNR (--min-snr), and from --high-noise-weight-after (default
    --high-noise-after) until --high-noise-until at least min(1 / snr, --high-noise-weight), i.e. x0-space weighting
    at high noise, capped: there the caption's (or the control's) share of the target counts as much as the image's."""
    snr = alpha_bar / (1 - alpha_bar)
    weight = torch.clamp(snr, max=args.min_snr) / snr if args.min_snr > 0 else torch.ones_like(snr)
    after = args.high_noise_after if args.high_noise_weight_after is None else args.high_noise_weight_after
    if args.high_noise_weight > 0 and _high_noise_phase(args, after, step):
        weight = torch.maximum(weight, torch.clamp(1.0 / snr, max=args.high_noise_weight))
    return weight


def learning_rate(args, step: int) -> float:
    """Cosine from --lr (after --warmup) to 10 % over --lr-first-cycle steps (default --steps); each
    --lr-restart-at step starts a new cosine cycle from its --lr-restart peak (50 warm-up steps: Adam's moments are
    already warm) that runs to the next restart or --steps."""
    starts = args.lr_restart_at
    for i in reversed(range(len(starts))):
        if step >= starts[i]:
            end = starts[i + 1] if i + 1 < len(starts) else args.steps
            return common.cosine_lr(step - starts[i], end - starts[i], args.lr_restart[i], 50)
    return common.cosine_lr(step, args.lr_first_cycle or args.steps, args.lr, args.warmup)


class EMA:
    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    def state_dict(self) -> list[torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: list[torch.Tensor]) -> None:
        for s, v in zip(self.shadow, shadow):
            s.copy_(v)

    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to restore)."""
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)


def grid_captions() -> list[str]:
    held = data.heldout_captions(8)
    rng = np.random.default_rng(99)
    train = [data.random_scene(rng, "train", n_objects=1 if i < 5 else 2).caption for i in range(8)]
    return held + train


def partial_caption_ids(tok, captions: list[str]) -> torch.Tensor:
    """[len(data.PARTIAL_KINDS), n, 77] int32 token ids of every caption with one kind of attribute left out."""
    unique = sorted(set(captions))
    where = {c: i for i, c in enumerate(unique)}
    rows = torch.tensor([where[c] for c in captions])
    return torch.stack([models.token_ids(tok, [data.partial_caption(c, kind) for c in unique]).to(torch.int32)[rows]
                        for kind in data.PARTIAL_KINDS])


def oversample_weights(captions: list[str], factors: list[str]) -> torch.Tensor | None:
    """Per-scene sampling weights for ``--oversample orange=3 ...``: a scene weighs the largest factor among its
    objects' colours (1 for none); None when no factor is given (plain uniform draws)."""
    if not factors:
        return None
    table = {}
    for item in factors:
        color, sep, factor = item.partition("=")
        if not sep or color not in data.COLORS:
            raise SystemExit(f"--oversample takes COLOUR=FACTOR with COLOUR one of {', '.join(data.COLORS)}; "
                             f"got {item!r}")
        try:
            table[color] = float(factor)
        except ValueError:
            raise SystemExit(f"--oversample {item!r}: FACTOR must be a number") from None
        if table[color] <= 0:
            raise SystemExit(f"--oversample {item!r}: FACTOR must be above 0")
    weights = [max([table.get(o["color"], 1.0) for o in data.parse_caption(c)[1]]) for c in captions]
    return torch.tensor(weights, dtype=torch.float64)


def train(args) -> dict:
    from tools.demo_model.vae import load_vae

    device = common.setup_torch(args.threads, args.device)
    out = common.TRAINING_DIR / args.run
    out.mkdir(parents=True, exist_ok=True)
    common.cleanup_tmp(out)
    ckpt_path = out / "ckpt.pt"

    cache = common.load_checkpoint(_resolve(args.latents))
    latents = cache["latents"]
    ids_all = cache["ids"].long()
    scale = float(cache["scale_factor"])
    n_data = len(latents)
    vae, vae_blob = load_vae(_resolve(args.vae), device)
    if vae_blob["step"] != cache["vae_step"]:
        raise SystemExit(f"{args.latents} was encoded with the autoencoder of step {cache['vae_step']}, but "
                         f"{args.vae} is step {vae_blob['step']}: run the `latents` command again")

    if len(args.lr_restart_at) != len(args.lr_restart):
        raise SystemExit("--lr-restart-at and --lr-restart need one value each per cycle")
    te_cfg = models.text_config(args.text_variant)
    unet_cfg = models.unet_config(args.unet_variant, te_cfg["hidden_size"], latent_channels=latents.shape[1],
                                  sample_size=latents.shape[-1])
    torch.manual_seed(args.seed)
    unet = models.build_unet(unet_cfg).to(device)
    te = models.build_text_encoder(te_cfg).to(device)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    ema = EMA([unet, te], args.ema)
    tok = models.load_tokenizer()
    empty_ids = models.token_ids(tok, [""])
    ac = alphas_cumprod().to(device)
    meta = {"unet_variant": args.unet_variant, "text_variant": args.text_variant, "steps": args.steps,
            "batch": args.batch, "lr": args.lr, "seed": args.seed, "cond_drop": args.cond_drop,
            "min_snr": args.min_snr, "ema": args.ema, "precision": args.precision, "scale_factor": scale,
            "partial_captions": args.partial_captions, "partial_captions_after": args.partial_captions_after,
            "oversample": args.oversample, "oversample_after": args.oversample_after,
            "high_noise": high_noise_meta(args),
            "lr_cycles": {"first": args.lr_first_cycle or args.steps, "restart_at": args.lr_restart_at,
                          "peaks": args.lr_restart},
            "vae_step": vae_blob["step"], "n_data": n_data}
    step, elapsed0, rewarm_from = 0, 0.0, 0
    if ckpt_path.exists() and not args.restart:
        ck = common.load_checkpoint(ckpt_path)
        for k in ("unet_variant", "text_variant", "vae_step"):
            if ck["meta"][k] != meta[k]:
                raise SystemExit(f"{ckpt_path} was trained with {k}={ck['meta'][k]}; use another --run or --restart")
        unet.load_state_dict(ck["unet"])
        te.load_state_dict(ck["text_encoder"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, elapsed0 = ck["step"], float(ck.get("elapsed", 0.0))
        common.restore_rng(ck["rng"])
        print(f"resumed {ckpt_path} at step {step}")
    elif (out / "state.pt").exists() and not args.restart:
        # Weights only (state.pt, small enough to commit between sessions; ckpt.pt adds the optimiser and the EMA):
        # fresh optimiser with the learning rate warmed up again, EMA restarted from the weights (its horizon is
        # 1 / (1 - 0.999) = 1000 steps, so it has caught up long before the export), step-seeded randomness.
        st = common.load_checkpoint(out / "state.pt")
        for k in ("unet_variant", "text_variant", "vae_step"):
            if st["meta"][k] != meta[k]:
                raise SystemExit(f"{out / 'state.pt'} was trained with {k}={st['meta'][k]}; use --restart")
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["text_encoder"])
        ema = EMA([unet, te], args.ema)
        step = rewarm_from = int(st["step"])
        elapsed0 = float(st.get("elapsed", 0.0))
        torch.manual_seed(args.seed * 1_000_003 + step)
        print(f"resumed the weights of {out / 'state.pt'} at step {step} (fresh optimiser and EMA)")
    (out / "config.json").write_text(json.dumps({"unet": unet_cfg, "text_encoder": te_cfg, "meta": meta,
                                                 "params": {"unet": common.param_count(unet),
                                                            "text_encoder": common.param_count(te),
                                                            "vae": common.param_count(vae)}}, indent=1))
    log = common.CsvLog(out / "log.csv", ["step", "loss", "lr", "sec_per_step", "elapsed_min"], step)
    elog = common.CsvLog(out / "eval.csv", ["step", "color", "position", "shape", "size", "color_cfg1",
                                            "position_cfg1", "shape_cfg1", "eval_sec", "elapsed_min"], step)
    partial_ids = partial_caption_ids(tok, cache["captions"]) if args.partial_captions > 0 else None
    draw_weights = oversample_weights(cache["captions"], args.oversample)
    g_caps = grid_captions()
    g_ids = models.token_ids(tok, g_caps)
    e_caps = data.heldout_captions(args.eval_captions)
    e_ids = models.token_ids(tok, e_caps)

    def checkpoint() -> dict:
        t0 = time.monotonic()
        elapsed = elapsed0 + (time.monotonic() - t_start)
        common.save_atomic({"unet": unet.state_dict(), "text_encoder": te.state_dict(), "ema": ema.state_dict(),
                            "opt": opt.state_dict(), "step": step, "rng": common.rng_state(), "meta": meta,
                            "unet_config": unet_cfg, "text_config": te_cfg, "elapsed": elapsed}, ckpt_path)
        common.save_atomic({"unet": unet.state_dict(), "text_encoder": te.state_dict(), "step": step, "meta": meta,
                            "elapsed": elapsed}, out / "state.pt")
        ema.swap()
        unet.eval(), te.eval()
        try:
            imgs = sample(unet, te, vae, g_ids, empty_ids, scale, list(range(len(g_caps))), cfg=7.0, device=device)
            common.save_grid(imgs, out / "samples" / f"step_{step:06d}.png", captions=g_caps)
            res = {}
            for cfg, suffix in ((7.0, ""), (1.0, "_cfg1")):
                ev = sample(unet, te, vae, e_ids, empty_ids, scale, list(range(1000, 1000 + len(e_caps))), cfg=cfg,
                            device=device)
                sc = score(ev, e_caps)
                res.update({k + suffix: v for k, v in sc.items()})
        finally:
            ema.swap()
            unet.train(), te.train()
        res["eval_sec"] = time.monotonic() - t0
        elog.write(step=step, elapsed_min=elapsed / 60, **res)
        bar.write(f"[unet] step {step}: held-out ({len(e_caps)}, EMA, cfg 7) colour {res['color']:.0%} position "
                  f"{res['position']:.0%} shape {res['shape']:.0%} size {res['size']:.0%} | cfg 1: colour "
                  f"{res['color_cfg1']:.0%} position {res['position_cfg1']:.0%} shape {res['shape_cfg1']:.0%}")
        return res

    # resolved here, not inside the compiled step: a call out to the CPU check there broke the graph, and the
    # fresh context object it returned made TorchDynamo recompile the rest of the step every time (35 s/step)
    bf16 = common.resolve_precision(device, args.precision) == "bf16"

    def loss_fn(xt, t, ids, noise, weight):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            ctx = encode_text(te, ids)
            pred = unet(xt, t, encoder_hidden_states=ctx).sample.float()
        return (F.mse_loss(pred, noise, reduction="none").flatten(1).mean(1) * weight).mean()

    if args.compile:
        # TorchInductor fuses the many small element-wise ops of this narrow UNet; it is used only when its
        # gradients match eager ones on a probe batch (its own random stream: the run's randomness is unchanged)
        compiled = torch.compile(loss_fn)
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randint(0, n_data, (args.batch,), generator=g)
        x0 = latents[idx].float().to(device) * scale
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (args.batch,), generator=g).to(device)
        a = ac[t].view(-1, 1, 1, 1)
        probe = (a.sqrt() * x0 + (1 - a).sqrt() * noise, t, ids_all[idx].to(device), noise, torch.ones(args.batch,
                                                                                                       device=device))
        names = [n for n, _ in unet.named_parameters()] + [f"text_encoder.{n}" for n, _ in te.named_parameters()]
        err, where = common.compiled_grad_error(loss_fn, compiled, params, probe)
        if err > COMPILE_GRAD_TOLERANCE:
            raise SystemExit(f"--compile: TorchInductor's gradients differ from eager ones on a probe batch "
                             f"(relative error {err:.3g} in {names[where]}); train without --compile")
        print(f"--compile: gradients checked against eager (largest relative difference {err:.1e})")
        loss_fn = compiled

    unet.train(), te.train()
    t_start = time.monotonic()
    every = common.Every(args.ckpt_minutes * 60)
    stop_at = t_start + args.max_minutes * 60 if args.max_minutes else None
    bar = common.progress(args.steps, step, f"unet-{args.unet_variant}")
    acc, n_acc, t_log = 0.0, 0, time.monotonic()
    res: dict = {}
    while step < args.steps:
        lr = learning_rate(args, step)
        if rewarm_from:
            lr *= min(1.0, (step - rewarm_from + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        if draw_weights is not None and step >= args.oversample_after:
            idx = torch.multinomial(draw_weights, args.batch, replacement=True)
        else:
            idx = torch.randint(0, n_data, (args.batch,))
        x0 = latents[idx].float().to(device) * scale
        ids = ids_all[idx]
        if partial_ids is not None and step >= args.partial_captions_after:
            part = torch.nonzero(torch.rand(args.batch) < args.partial_captions).flatten()
            kinds = torch.randint(0, len(partial_ids), (len(part),))
            ids[part] = partial_ids[kinds, idx[part]].long()
        ids = ids.to(device)
        drop = torch.rand(args.batch) < args.cond_drop
        ids[drop.to(device)] = empty_ids.to(device)
        noise = torch.randn_like(x0)
        t = sample_timesteps(args, step, device)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = loss_fn(xt, t, ids, noise, loss_weights(args, step, ac[t]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
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
            res = checkpoint()
        if stop_at and time.monotonic() >= stop_at:
            bar.write(f"[unet] --max-minutes reached at step {step}; resume with the same command")
            break
    res = checkpoint()
    bar.close()
    log.close()
    elog.close()
    return {"step": step, **res}


# ----------------------------------------------------------------------------- speed check


@torch.no_grad()
def bench(args) -> None:
    """Random-weight timing of the chosen sizes: UNet forward at batch 2 and a full 20-step CFG sample (text encoder
    + 20 UNet passes at batch 2 + VAE decode), at the given thread count."""
    device = common.setup_torch(args.threads, args.device)
    te_cfg = models.text_config(args.text_variant)
    vae_variant = "f4" if args.latent == 16 else "f8"
    unet = models.build_unet(models.unet_config(args.unet_variant, te_cfg["hidden_size"],
                                                sample_size=args.latent)).to(device).eval()
    te = models.build_text_encoder(te_cfg).to(device).eval()
    vae = models.build_vae(models.vae_config(vae_variant)).to(device).eval()
    x = torch.randn(2, 4, args.latent, args.latent, device=device)
    ctx = torch.randn(2, 77, te_cfg["hidden_size"], device=device)
    t = torch.tensor([500, 500], device=device)
    for _ in range(3):
        unet(x, t, encoder_hidden_states=ctx)
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        unet(x, t, encoder_hidden_states=ctx)
    fwd = (time.perf_counter() - t0) / n
    tok = models.load_tokenizer()
    ids = models.token_ids(tok, ["a large red circle on the left, blue background"])
    empty = models.token_ids(tok, [""])
    sample(unet, te, vae, ids, empty, 1.0, [0], steps=2, device=device)
    t0 = time.perf_counter()
    sample(unet, te, vae, ids, empty, 1.0, [0], steps=20, cfg=7.0, device=device)
    full = time.perf_counter() - t0
    sizes = {"unet": common.param_count(unet), "text_encoder": common.param_count(te), "vae": common.param_count(vae)}
    total = sum(sizes.values())
    print(json.dumps({"threads": torch.get_num_threads(), "unet_variant": args.unet_variant,
                      "latent": args.latent, "unet_forward_b2_ms": fwd * 1000, "sample_20_steps_cfg_s": full,
                      "params": sizes, "fp16_mb": total * 2 / 1e6}, indent=1))
