"""The demo LoRA: every shape drawn as an OUTLINE (a ring, a hollow square, a hollow triangle), same captions.

* data: the base model's training scenes (training split only: the held-out combinations stay out), each object drawn
  as a band of OUTLINE_PX pixels along its edge (the supersampled mask less its points farther than OUTLINE_PX from
  the edge), encoded once with the base model's autoencoder (training/lora/latents.pt);
* model: the shipped base checkpoint read with the web UI's loader and frozen; low-rank adapters (rank RANK, alpha =
  rank) on the UNet's transformer projections (to_q/to_k/to_v/to_out.0, proj_in/proj_out, ff.net.0.proj/ff.net.2)
  and the text encoder's q/k/v/out_proj; captions dropped to the empty prompt 10 % of the time, so the unconditional
  half of classifier-free guidance draws outlines too;
* export: kohya-ss keys with diffusers module names (``lora_unet_down_blocks_0_..._attn1_to_q.lora_down.weight``,
  ``.lora_up.weight``, ``.alpha``; ``lora_te_text_model_encoder_layers_0_self_attn_q_proj...``), fp16, kohya's
  ``ss_*`` / ``sshs_*`` and ``modelspec.*`` metadata, as most downloaded SD1 LoRAs are written;
* evaluation: held-out captions through the engine with the LoRA at weights 0, 0.5 and 1, scored by
  analysis.hollowness (how much of the object's interior has the background's colour).

Why our own adapter module and not peft: peft is not a dependency of the web UI, the adapter is a few lines, and the
export needs kohya's names anyway.

Files: training/lora/{latents.pt, ckpt.pt, state.pt, log.csv, eval.csv}; the export goes to models/Lora/demo/.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.demo_model import analysis, common, data, finetune, models
from tools.demo_model.unet import _resolve

NAME = "demo-shapes_outline"
OUT = f"models/Lora/demo/{NAME}.safetensors"
RUN = "lora"
# The base autoencoder never saw a hole and fills small rings in: hollowness of its reconstructions of outline scenes
# (64 scenes) was large/small 0.66/0.29 at 2 px, 0.56/0.17 at 3 px, 0.46/0.13 at 4 px; the rendered 2-px scenes 1.00.
OUTLINE_PX = 2.0
RANK = 4
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
CAPTION_DROP = 0.1
EVAL_SEED = 30_000


# ----------------------------------------------------------------------------- data


def outline_mask(obj: data.Obj, px: float = OUTLINE_PX) -> np.ndarray:
    """Coverage [64, 64] of the band of ``px`` pixels along the object's edge."""
    import cv2

    inside = data.shape_inside(obj).astype(np.uint8)
    depth = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    return data.coverage((inside > 0) & (depth <= px * data.SUPERSAMPLE))


def make_outline_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    scenes = [data.random_scene(rng, "train") for _ in range(n)]
    return np.stack([data.render(s, mask=outline_mask) for s in scenes]), [s.caption for s in scenes]


# ----------------------------------------------------------------------------- adapters


class LoRALayer(nn.Module):
    """base(x) + multiplier · (alpha / rank) · up(down(x)) around a Linear or a 1x1 Conv2d (kohya's LoRA module)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        self.base = base
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d) and base.kernel_size == (1, 1):
            self.down = nn.Conv2d(base.in_channels, rank, 1, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"LoRA needs a Linear or a 1x1 Conv2d, not {base}")
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)
        self.rank, self.alpha, self.multiplier = rank, float(alpha), 1.0

    def forward(self, x):
        return self.base(x) + self.up(self.down(x)) * (self.multiplier * self.alpha / self.rank)


def _roots(model) -> dict[str, nn.Module]:
    return {"unet": model.unet, "text_encoder": model.text_encoders[0]}


def targets(model) -> dict[str, tuple[str, str]]:
    """kohya name -> (root, module path) of every module the demo LoRA adapts, in a fixed order."""
    out = {}
    for root, suffixes in (("unet", UNET_TARGETS), ("text_encoder", TE_TARGETS)):
        module_root = _roots(model)[root]
        # kohya names the text encoder's modules as in transformers 4 (text_model.encoder...); transformers 5's
        # CLIPTextModel has no text_model level
        canonical = "text_model." if root == "text_encoder" and not hasattr(module_root, "text_model") else ""
        for path, module in module_root.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and any(path.endswith("." + s) for s in suffixes):
                out[PREFIXES[root] + (canonical + path).replace(".", "_")] = (root, path)
    return out


def attach(model, rank: int = RANK, alpha: float | None = None) -> dict[str, LoRALayer]:
    """Wraps every target module of the model in a LoRALayer (trainable); returns them by kohya name."""
    layers = {}
    for name, (root, path) in targets(model).items():
        parent_path, _, child = path.rpartition(".")
        parent = _roots(model)[root].get_submodule(parent_path)
        layer = LoRALayer(getattr(parent, child), rank, rank if alpha is None else alpha).to(model.device)
        setattr(parent, child, layer)
        layer.where = (root, path)
        layers[name] = layer
    return layers


def detach(model, layers: dict[str, LoRALayer]) -> None:
    """Puts the original modules back."""
    for layer in layers.values():
        root, path = layer.where
        parent_path, _, child = path.rpartition(".")
        setattr(_roots(model)[root].get_submodule(parent_path), child, layer.base)


def set_multiplier(layers: dict[str, LoRALayer], value: float) -> None:
    for layer in layers.values():
        layer.multiplier = value


def parameters(layers: dict[str, LoRALayer]) -> list[nn.Parameter]:
    return [p for name in layers for p in (layers[name].down.weight, layers[name].up.weight)]


def kohya_state_dict(layers: dict[str, LoRALayer], dtype=torch.float16) -> dict[str, torch.Tensor]:
    sd = {}
    for name, layer in layers.items():
        sd[f"{name}.lora_down.weight"] = layer.down.weight.detach().to(dtype).contiguous()
        sd[f"{name}.lora_up.weight"] = layer.up.weight.detach().to(dtype).contiguous()
        sd[f"{name}.alpha"] = torch.tensor(layer.alpha, dtype=dtype)
    return sd


def file_patches(model, sd: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """(patch target, weight delta at multiplier 1) for every module of a kohya LoRA state dict: our own reading of
    the file for the evaluation before the web UI's LoRA loader existed; W + (alpha / rank) · up · down."""
    where = targets(model)
    out = []
    for key in sorted(k for k in sd if k.endswith(".lora_down.weight")):
        name = key[: -len(".lora_down.weight")]
        if name not in where:
            raise KeyError(f"{name}: no such module in the demo model")
        down, up = sd[key].float(), sd[f"{name}.lora_up.weight"].float()
        rank = down.shape[0]
        alpha = float(sd[f"{name}.alpha"]) if f"{name}.alpha" in sd else rank
        delta = (up.flatten(1) @ down.flatten(1)) * (alpha / rank)
        root, path = where[name]
        out.append((f"{root}.{path}.weight", delta))
    return out


# ----------------------------------------------------------------------------- training


def _quick_eval(model, layers, n: int = 8) -> dict:
    """Hollowness of n held-out captions at multiplier 1 and 0 (the tools' sampler, CFG 5, the live adapters)."""
    from tools.demo_model.evaluate import EVAL_CFG
    from tools.demo_model.unet import sample

    caps = data.heldout_captions(n)
    tok = model.tokenizers[0]
    ids, empty = models.token_ids(tok, caps), models.token_ids(tok, [""])
    res = {}
    for m in (1.0, 0.0):
        set_multiplier(layers, m)
        imgs = sample(model.unet, model.text_encoders[0], model.vae, ids, empty,
                      float(model.vae.config.scaling_factor), list(range(EVAL_SEED, EVAL_SEED + n)), cfg=EVAL_CFG,
                      device=model.device)
        res[f"hollow_w{m:g}"] = float(np.mean([analysis.hollowness(im) for im in imgs]))
    set_multiplier(layers, 1.0)
    return res


def train(args) -> dict:
    device = common.setup_torch(args.threads, args.device)
    out = common.TRAINING_DIR / args.run
    model = finetune.load_frozen_base(args.base, device)
    cache = finetune.latent_cache(out / "latents.pt", model, make_outline_batch, args.n, args.data_seed)
    scale = float(model.vae.config.scaling_factor)
    latents = cache["latents"]
    tok = model.tokenizers[0]
    ids_all = models.token_ids(tok, cache["captions"])
    empty = models.token_ids(tok, [""])
    torch.manual_seed(args.seed)
    layers = attach(model, args.rank)
    params = parameters(layers)
    for p in params:
        p.requires_grad_(True)
    diffusion = finetune.Diffusion(device, args.min_snr)
    unet, te = model.unet, model.text_encoders[0]
    meta = {"base": Path(args.base).name, "rank": args.rank, "n": args.n, "data_seed": args.data_seed,
            "batch": args.batch, "lr": args.lr, "steps": args.steps, "seed": args.seed, "outline_px": OUTLINE_PX,
            "caption_drop": CAPTION_DROP, "min_snr": args.min_snr, "modules": len(layers)}
    print(f"{len(layers)} adapted modules, {sum(p.numel() for p in params):,} trainable parameters, "
          f"{len(latents)} outline scenes")

    def step_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(latents), (args.batch,))
        x0 = latents[idx].float().to(device) * scale
        ids = ids_all[idx].clone()
        ids[torch.rand(args.batch) < CAPTION_DROP] = empty
        xt, t, noise = diffusion.noised(x0)
        ctx = te(ids.to(device)).last_hidden_state
        return diffusion.loss(unet(xt, t, encoder_hidden_states=ctx).sample, noise, t)

    def on_checkpoint(step: int) -> dict:
        with torch.no_grad():
            return _quick_eval(model, layers, args.eval_captions) if args.eval_captions else {}

    return finetune.train_loop(args, out, params, step_fn, meta, on_checkpoint, name="lora")


# ----------------------------------------------------------------------------- export


def _file_hashes(payload: bytes) -> tuple[str, str]:
    """kohya's sshs_model_hash (sha256 of the tensor data after the safetensors header, the hash A1111 shows for a
    LoRA) and sshs_legacy_hash (sha256 of 64 KiB at offset 1 MiB, first 8 hex digits)."""
    n = int.from_bytes(payload[:8], "little")
    return hashlib.sha256(payload[8 + n:]).hexdigest(), hashlib.sha256(payload[0x100000:0x110000]).hexdigest()[:8]


def export(args) -> dict:
    from safetensors.torch import load_file, save

    device = common.setup_torch(args.threads, "cpu")
    out_dir = common.TRAINING_DIR / args.run
    state = finetune.load_state(out_dir)
    meta = state["meta"]
    model = finetune.load_frozen_base(args.base, device)
    layers = attach(model, meta["rank"])
    with torch.no_grad():
        for p, v in zip(parameters(layers), state["params"]):
            p.copy_(v)
    sd = kohya_state_dict(layers)
    finished = (out_dir / "state.pt").stat().st_mtime
    trained_at = finished - float(state["elapsed"])
    metadata = {
        "ss_output_name": NAME, "ss_network_module": "networks.lora", "ss_network_dim": str(meta["rank"]),
        "ss_network_alpha": f"{float(meta['rank']):.1f}", "ss_base_model_version": "sd_v1", "ss_v2": "False",
        "ss_sd_model_name": meta["base"], "ss_resolution": "(64, 64)", "ss_clip_skip": "None",
        "ss_learning_rate": str(meta["lr"]), "ss_max_train_steps": str(meta["steps"]), "ss_steps": str(state["step"]),
        "ss_batch_size_per_device": str(meta["batch"]), "ss_num_train_images": str(meta["n"]),
        "ss_seed": str(meta["seed"]), "ss_training_started_at": f"{trained_at:.0f}",
        "ss_training_comment": "demo LoRA of the web UI: every shape drawn as an outline "
                               "(python -m tools.train_demo_model lora)",
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": NAME, "modelspec.resolution": "64x64",
        "modelspec.description": "Draws the demo model's shapes as outlines.",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(finished)),
    }
    # kohya hashes a serialisation with the ss_* metadata only; the data section (what is hashed) is the same
    model_hash, legacy_hash = _file_hashes(save(sd, {k: v for k, v in metadata.items() if k.startswith("ss_")}))
    metadata.update(sshs_model_hash=model_hash, sshs_legacy_hash=legacy_hash)
    payload = save(sd, metadata)
    if _file_hashes(payload)[0] != model_hash:
        raise SystemExit("the tensor data changed with the metadata: the recorded hash would be wrong")
    path = _resolve(args.out)
    common.atomic_write_bytes(path, payload)
    back = load_file(path)
    worst = max(float((back[k].float() - sd[k].float()).abs().max()) for k in sd)
    res = {"path": str(path), "kb": path.stat().st_size / 1024, "tensors": len(sd), "modules": len(layers),
           "step": state["step"], "sshs_model_hash": model_hash, "max_abs_diff_after_reload": worst}
    if worst > 0 or set(back) != set(sd):
        raise SystemExit("the exported LoRA does not read back as written")
    return res


# ----------------------------------------------------------------------------- evaluation


def score(images: np.ndarray, captions: list[str]) -> dict:
    """Mean hollowness, outline rate (hollowness >= 0.5) per size, and the colour and position of the object."""
    rows = []
    for img, cap in zip(images, captions):
        want = data.parse_caption(cap)[1][0]
        res = analysis.analyze(img)
        rows.append({"hollow": analysis.hollowness(img), "size": want["size"], "found": res.found,
                     "color": res.found and res.color == want["color"],
                     "position": res.found and res.position == want["position"]})
    out = {"hollowness": float(np.mean([r["hollow"] for r in rows])),
           "outline_rate": float(np.mean([r["hollow"] >= 0.5 for r in rows])),
           "found": float(np.mean([r["found"] for r in rows])),
           "color": float(np.mean([r["color"] for r in rows])),
           "position": float(np.mean([r["position"] for r in rows]))}
    for size in data.SIZES:
        sel = [r["hollow"] for r in rows if r["size"] == size]
        if sel:
            out[f"hollowness_{size}"] = float(np.mean(sel))
            out[f"outline_rate_{size}"] = float(np.mean([h >= 0.5 for h in sel]))
    return out


def engine_handler_available() -> bool:
    """True once the web UI's own LoRA loader exists (modules/networks/lora.py)."""
    import importlib.util

    return importlib.util.find_spec("modules.networks.lora") is not None


def evaluate(args) -> dict:
    """Held-out captions through the engine at each --weights value; ``--via own`` patches the weights with
    file_patches (our reading of the file), ``--via engine`` writes `<lora:NAME:w>` into the prompt and lets the web
    UI's registered LoRA handler do it."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    from tools.demo_model.evaluate import EVAL_CFG

    device = common.setup_torch(args.threads, args.device)
    model = finetune.load_frozen_base(args.base, device)
    lora_path = _resolve(args.lora)
    via = args.via if args.via != "auto" else ("engine" if engine_handler_available() else "own")
    captions = data.heldout_captions(args.n)
    patches = file_patches(model, load_file(lora_path))
    runner = engine_runner(lora_path) if via == "engine" else None
    results = {"lora": str(lora_path), "via": via, "n": len(captions), "cfg": EVAL_CFG, "first_seed": EVAL_SEED}
    grids = []
    t0 = time.perf_counter()
    for w in args.weights:
        def setup(p, w=w):
            for target, delta in patches:
                p.patches.add_weight(target, delta, strength=w, source=NAME)
        imgs = []
        for i, cap in enumerate(tqdm(captions, desc=f"lora weight {w:g}", unit="img", dynamic_ncols=True)):
            if w == 0:
                imgs.append(finetune.generate(model, cap, EVAL_SEED + i, EVAL_CFG))
            elif via == "own":
                imgs.append(finetune.generate(model, cap, EVAL_SEED + i, EVAL_CFG, setup=setup))
            else:
                imgs.append(runner(model, f"{cap} <lora:{NAME}:{w:g}>", EVAL_SEED + i, EVAL_CFG))
        imgs = np.stack(imgs)
        results[f"weight_{w:g}"] = score(imgs, captions)
        grids.append(imgs[:16])
        print(f"weight {w:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[f"weight_{w:g}"].items()))
    results["seconds"] = time.perf_counter() - t0
    if via == "engine" and args.crosscheck:
        # the web UI's loader against our own reading of the same file: the same images up to float rounding
        diffs = []
        for i, cap in enumerate(captions[:args.crosscheck]):
            own = finetune.generate(model, cap, EVAL_SEED + i, EVAL_CFG, setup=lambda p: [
                p.patches.add_weight(t, d, strength=1.0, source=NAME) for t, d in patches])
            diffs.append(int(np.abs(own.astype(int) - runner(model, f"{cap} <lora:{NAME}:1>", EVAL_SEED + i,
                                                             EVAL_CFG).astype(int)).max()))
        results["crosscheck_max_pixel_diff"] = diffs
    out = _resolve(args.out)
    common.save_grid(np.concatenate(grids), out / "grid.png", ncols=16, captions=captions[:16])
    common.atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
    if args.preview:
        write_preview(model, patches, _resolve(args.preview))
    return results


def engine_runner(lora_path: Path):
    """generate(model, prompt, seed, cfg) with the web UI's LoRA handler registered for the folder of lora_path."""
    from tools.demo_model import engine_networks

    return engine_networks.runner(lora_dir=lora_path.parent)


PREVIEW_CAPTIONS = ("a large red circle on the left, blue background", "a large yellow square on the right, gray background",
                    "a large white triangle at the top, purple background", "a large blue circle at the bottom, yellow background")


def write_preview(model, patches, path: Path) -> None:
    """A 2x2 grid of the LoRA at weight 1 (CFG 7, the UI's default), 2x nearest-neighbour upscaled."""
    def setup(p):
        for target, delta in patches:
            p.patches.add_weight(target, delta, strength=1.0, source=NAME)
    imgs = [finetune.generate(model, c, 1 + i, 7.0, setup=setup) for i, c in enumerate(PREVIEW_CAPTIONS)]
    save_preview(imgs, path)


def save_preview(imgs: list[np.ndarray], path: Path) -> None:
    import io

    from PIL import Image

    grid = np.concatenate([np.concatenate(imgs[:2], axis=1), np.concatenate(imgs[2:4], axis=1)], axis=0)
    im = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    common.atomic_write_bytes(path, buf.getvalue())
