"""The demo embedding `demo-pink`: textual inversion for a colour the base model never drew on an object.

Pink occurs in the base model's data only as a background, so "a large pink circle" gives an object of some other
colour. Here N_VECTORS vectors of the text encoder's width (64) are learned, everything else frozen:

* data: scenes whose object is pink (240, 160, 200; the data's pink background colour), a quarter of them with a
  second object of one of the usual colours; backgrounds at least 80 (RGB distance) from every object colour; the
  shape x position combinations in HELDOUT never occur (the evaluation's captions use only those); the captions say
  NAME where the colour word stands ("a large demo-pink circle on the left, blue background");
* the prompt's name tokens are replaced by the vectors at the token-embedding output, as the web UI does it
  (modules/engine/conditioning.py): the name takes as many positions as there are vectors;
* initialised from the token embedding of "pink"; the loss weighs the pink object's latent positions
  1 + --object-weight times (the colour of a small object is a small part of the plain loss: without the weight, 400
  steps gave near-white objects, mean colour distance to pink 82 on 8 held-out captions, pink nearest in 2 of 8);
* export: A1111's safetensors form, one tensor ``emb_params`` [N_VECTORS, 64]; A1111 names an embedding after its
  file, so the file is embeddings/demo/demo-pink.safetensors;
* evaluation: held-out captions through the engine, NAME against the plain word "pink" (same seeds), scored by the
  RGB distance of the object's colour to pink and by how often pink is the nearest colour.

Files: training/embedding/{latents.pt, ckpt.pt, state.pt, log.csv, eval.csv}.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from tools.demo_model import analysis, common, data, finetune, models
from tools.demo_model.unet import _resolve

NAME = "demo-pink"
OUT = f"embeddings/demo/{NAME}.safetensors"
COLOR = "pink"
RGB = data.BACKGROUNDS[COLOR]
PALETTE = {**data.COLORS, COLOR: RGB}
N_VECTORS = 2
TWO_OBJECT_FRACTION = 0.25
# shape x position combinations of the pink object that training never shows
HELDOUT = (("circle", "left"), ("square", "top"), ("triangle", "right"), ("circle", "bottom"), ("square", "center"))
EVAL_SEED = 40_000
NOT_FOUND = float(np.linalg.norm([255.0, 255.0, 255.0]))


# ----------------------------------------------------------------------------- data


def _fits(background: str, colors) -> bool:
    return all(np.linalg.norm(np.subtract(data.BACKGROUNDS[background], PALETTE[c], dtype=np.float64))
               >= data.MIN_BG_DISTANCE for c in colors)


def backgrounds_for(colors) -> list[str]:
    return [b for b in data.BACKGROUNDS if _fits(b, colors)]


def scene(rng: np.random.Generator) -> data.Scene:
    """A training scene with a pink object (combination not in HELDOUT) and maybe one object of a usual colour."""
    while True:
        shape = data.SHAPES[rng.integers(len(data.SHAPES))]
        position = data.POSITIONS[rng.integers(len(data.POSITIONS))]
        if (shape, position) not in HELDOUT:
            break
    objs = [data._place(rng, COLOR, shape, data.SIZES[rng.integers(len(data.SIZES))], position)]
    if rng.random() < TWO_OBJECT_FRACTION:
        for _ in range(50):  # a large centred object leaves no room for a second one: it stays alone
            other = data._random_obj(rng, "train")
            if other.position != position and not data._boxes_overlap(objs[0], other) and \
                    backgrounds_for([COLOR, other.color]):
                objs.append(other)
                break
        if rng.random() < 0.5:
            objs.reverse()
    names = backgrounds_for([o.color for o in objs])
    return data.Scene(names[rng.integers(len(names))], tuple(objs))


def named(caption: str) -> str:
    """The caption with the embedding's name for the colour word (the background is never pink here)."""
    return caption.replace(f" {COLOR} ", f" {NAME} ")


def make_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Images, captions and the pink object's coverage [n, 64, 64] (for the loss weight)."""
    scenes = [scene(rng) for _ in range(n)]
    masks = np.stack([data.shape_mask(next(o for o in s.objects if o.color == COLOR)) for s in scenes])
    return np.stack([data.render(s, colors=PALETTE) for s in scenes]), [s.caption for s in scenes], masks


def heldout_captions(n: int | None = None, seed: int = 4321) -> list[str]:
    """Single pink-object captions of the HELDOUT combinations x size x fitting background, interleaved across the
    combinations in a seeded order, with the plain colour word (``named`` gives the embedding's form)."""
    rng = np.random.default_rng(seed)
    per_combo = []
    for shape, position in HELDOUT:
        caps = [data.Obj(COLOR, shape, size, position).phrase() + f", {bg} background"
                for size in data.SIZES for bg in backgrounds_for([COLOR])]
        rng.shuffle(caps)
        per_combo.append(caps)
    out = [caps[i] for i in range(max(map(len, per_combo))) for caps in per_combo if i < len(caps)]
    return out if n is None else out[:n]


# ----------------------------------------------------------------------------- tokens


def placeholder_ids(tok, captions: list[str], n_vectors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[len, 77] token ids of the NAME-form captions with the name's tokens replaced by n_vectors placeholder
    positions (BOS, tokens, EOS, EOS padding as the web UI feeds SD1), and the index of the first placeholder."""
    name_ids = tok(NAME, add_special_tokens=False)["input_ids"]
    rows, starts = [], []
    for c in captions:
        ids = tok(named(c), add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(ids)) if ids[i:i + len(name_ids)] == name_ids)
        ids = ids[:at] + [tok.pad_token_id] * n_vectors + ids[at + len(name_ids):]
        rows.append([tok.bos_token_id] + ids + [tok.eos_token_id] + [tok.pad_token_id] * (75 - len(ids)))
        starts.append(1 + at)
    return torch.tensor(rows), torch.tensor(starts)


class Injected:
    """While active, the token-embedding output at rows' placeholder positions is the trainable vectors."""

    def __init__(self, encoder, vectors: torch.nn.Parameter):
        self.module = encoder.get_input_embeddings()
        self.vectors = vectors
        self.starts: torch.Tensor | None = None

    def __enter__(self):
        def hook(_m, _inp, out):
            out = out.clone()
            n = self.vectors.shape[0]
            for row, start in enumerate(self.starts.tolist()):
                out[row, start:start + n] = self.vectors.to(out.dtype)
            return out
        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ----------------------------------------------------------------------------- training


def score(images: np.ndarray, captions: list[str]) -> dict:
    rows = []
    for img, cap in zip(images, captions):
        want = _parse(cap)
        res = analysis.analyze(img)
        dist = float(np.linalg.norm(np.subtract(res.mean_rgb, RGB))) if res.found else NOT_FOUND
        nearest = min(PALETTE, key=lambda c: np.linalg.norm(np.subtract(res.mean_rgb, PALETTE[c]))) \
            if res.found else None
        rows.append({"dist": dist, "pink": nearest == COLOR, "found": res.found,
                     "position": res.found and res.position == want["position"],
                     "shape": res.found and res.shape == want["shape"], "nearest": nearest})
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["nearest"])] = counts.get(str(r["nearest"]), 0) + 1
    return {"color_distance": float(np.mean([r["dist"] for r in rows])),
            "pink_rate": float(np.mean([r["pink"] for r in rows])),
            "found": float(np.mean([r["found"] for r in rows])),
            "position": float(np.mean([r["position"] for r in rows])),
            "shape": float(np.mean([r["shape"] for r in rows])),
            "nearest_colours": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def _parse(caption: str) -> dict:
    """The object of a pink caption (data.parse_caption knows only the usual object colours)."""
    return data.parse_caption(caption.replace(f" {COLOR} ", " red "))[1][0]


def _images(model, captions: list[str], vectors: torch.Tensor | None, cfg: float, seed: int) -> np.ndarray:
    """Engine images of the captions; with vectors, NAME is in the prompt and the vectors are on the job's patch
    set (our own path, before the web UI's embedding loader existed)."""
    def setup(p):
        p.patches.embeddings[NAME] = vectors
    return np.stack([finetune.generate(model, named(c) if vectors is not None else c, seed + i, cfg,
                                       setup=setup if vectors is not None else None)
                     for i, c in enumerate(captions)])


def train(args) -> dict:
    from tools.demo_model.evaluate import EVAL_CFG

    device = common.setup_torch(args.threads, args.device)
    out = common.TRAINING_DIR / args.run
    model = finetune.load_frozen_base(args.base, device)
    cache = finetune.latent_cache(out / "latents.pt", model, make_batch, args.n, args.data_seed)
    scale = float(model.vae.config.scaling_factor)
    latents, masks = cache["latents"], cache["masks"]
    tok = model.tokenizers[0]
    ids_all, starts_all = placeholder_ids(tok, cache["captions"], args.vectors)
    te, unet = model.text_encoders[0], model.unet
    torch.manual_seed(args.seed)
    init = te.get_input_embeddings().weight[tok(COLOR, add_special_tokens=False)["input_ids"][0]].detach()
    vectors = torch.nn.Parameter(init.repeat(args.vectors, 1).clone())
    diffusion = finetune.Diffusion(device, args.min_snr)
    inject = Injected(te, vectors)
    meta = {"base": Path(args.base).name, "vectors": args.vectors, "n": args.n, "data_seed": args.data_seed,
            "batch": args.batch, "lr": args.lr, "steps": args.steps, "seed": args.seed, "min_snr": args.min_snr,
            "init": COLOR, "object_weight": args.object_weight}
    eval_caps = heldout_captions(args.eval_captions)

    def step_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(latents), (args.batch,))
        x0 = latents[idx].float().to(device) * scale
        xt, t, noise = diffusion.noised(x0)
        inject.starts = starts_all[idx]
        with inject:
            ctx = te(ids_all[idx].to(device)).last_hidden_state
        weight = 1.0 + args.object_weight * masks[idx].float().to(device)
        return diffusion.loss(unet(xt, t, encoder_hidden_states=ctx).sample, noise, t, weight)

    def on_checkpoint(step: int) -> dict:
        if not args.eval_captions:
            return {}
        sc = score(_images(model, eval_caps, vectors.detach().clone(), EVAL_CFG, EVAL_SEED), eval_caps)
        return {"color_distance": sc["color_distance"], "pink_rate": sc["pink_rate"], "norm": float(vectors.norm())}

    print(f"{args.vectors} vectors x {vectors.shape[1]}, {len(latents)} scenes with a pink object")
    return finetune.train_loop(args, out, [vectors], step_fn, meta, on_checkpoint, name="embedding")


# ----------------------------------------------------------------------------- export, evaluation


def export(args) -> dict:
    from safetensors.torch import load_file, save

    state = finetune.load_state(common.TRAINING_DIR / args.run)
    vectors = state["params"][0].detach().float().contiguous()
    meta = state["meta"]
    metadata = {"name": NAME, "step": str(state["step"]), "sd_checkpoint_name": meta["base"],
                "vectors": str(vectors.shape[0]),
                "comment": "demo embedding of the web UI: pink objects (python -m tools.train_demo_model embedding)"}
    path = _resolve(args.out)
    common.atomic_write_bytes(path, save({"emb_params": vectors}, metadata))
    back = load_file(path)
    if list(back) != ["emb_params"] or not torch.equal(back["emb_params"], vectors):
        raise SystemExit("the exported embedding does not read back as written")
    res = {"path": str(path), "bytes": path.stat().st_size, "shape": list(vectors.shape), "step": state["step"],
           "norms": [round(float(v.norm()), 4) for v in vectors]}
    return res


def engine_loader_available() -> bool:
    """True once the web UI's own textual-inversion loader exists (modules/networks/textual_inversion.py)."""
    import importlib.util

    return importlib.util.find_spec("modules.networks.textual_inversion") is not None


def evaluate(args) -> dict:
    from safetensors.torch import load_file

    from tools.demo_model.evaluate import EVAL_CFG

    device = common.setup_torch(args.threads, args.device)
    model = finetune.load_frozen_base(args.base, device)
    path = _resolve(args.embedding)
    vectors = load_file(path)["emb_params"]
    via = args.via if args.via != "auto" else ("engine" if engine_loader_available() else "own")
    captions = heldout_captions(args.n)
    t0 = time.perf_counter()
    plain = _images(model, captions, None, EVAL_CFG, EVAL_SEED)
    if via == "own":
        with_emb = _images(model, captions, vectors, EVAL_CFG, EVAL_SEED)
    else:
        from tools.demo_model import engine_networks

        run = engine_networks.runner(embeddings_dir=path.parent)
        with_emb = np.stack([run(model, named(c), EVAL_SEED + i, EVAL_CFG) for i, c in enumerate(captions)])
    results = {"embedding": str(path), "via": via, "n": len(captions), "cfg": EVAL_CFG, "first_seed": EVAL_SEED,
               "plain_word": score(plain, captions), "embedding_word": score(with_emb, captions),
               "seconds": time.perf_counter() - t0}
    for k in ("plain_word", "embedding_word"):
        print(k, json.dumps(results[k]))
    out = _resolve(args.out)
    common.save_grid(np.concatenate([plain[:16], with_emb[:16]]), out / "grid.png", ncols=16,
                     captions=captions[:16])
    common.atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
    if args.preview:
        write_preview(model, vectors, _resolve(args.preview))
    return results


PREVIEW_CAPTIONS = ("a large pink circle on the left, blue background", "a large pink square on the right, gray background",
                    "a large pink triangle at the top, black background", "a large pink circle at the bottom, green background")


def write_preview(model, vectors: torch.Tensor, path: Path) -> None:
    """A 2x2 grid of NAME prompts at CFG 7 (the UI's default), 2x nearest-neighbour upscaled."""
    from tools.demo_model.lora import save_preview

    imgs = _images(model, list(PREVIEW_CAPTIONS), vectors, 7.0, 1)
    save_preview(list(imgs), path)
