"""Train the demo model: a small latent diffusion model on procedural shape scenes (see docs/DEMO_MODEL.md).

Stages (each resumable: run the same command again after an interruption, even a kill -9):

  python -m tools.train_demo_model data        # preview grid + data statistics (fast)
  python -m tools.train_demo_model compare-ae  # f4 vs f8 autoencoder comparison (same budget)
  python -m tools.train_demo_model vae         # stage 1: the autoencoder
  python -m tools.train_demo_model latents     # encode the UNet training set with the finished autoencoder
  python -m tools.train_demo_model unet        # stage 2: UNet + text encoder
  python -m tools.train_demo_model export      # single-file LDM checkpoint (fp16 safetensors) + yaml
  python -m tools.train_demo_model all         # vae -> PSNR gate -> latents -> unet -> export (resumes each)
  python -m tools.train_demo_model eval        # held-out evaluation through the web UI's own loader + sampler
  python -m tools.train_demo_model bench       # UNet forward / 20-step sampling time
  python -m tools.train_demo_model controlnet  # Canny ControlNet against the shipped base model
  python -m tools.train_demo_model controlnet-export   # models/ControlNet/..., original key layout, fp16
  python -m tools.train_demo_model controlnet-eval     # IoU of the generated shape with the control's shape
  python -m tools.train_demo_model lora        # the demo LoRA (outlines) against the shipped base model
  python -m tools.train_demo_model lora-export # models/Lora/demo/demo-shapes_outline.safetensors (kohya keys, fp16)
  python -m tools.train_demo_model lora-eval   # held-out captions at LoRA weights 0, 0.5, 1 (hollowness)
  python -m tools.train_demo_model embedding   # the demo embedding demo-pink (textual inversion, 2 vectors)
  python -m tools.train_demo_model embedding-export    # embeddings/demo/demo-pink.safetensors (A1111 form)
  python -m tools.train_demo_model embedding-eval      # held-out captions: demo-pink against plain pink

All outputs go under training/. On a CPU, every training stage uses --threads (default 1) so that the other core
stays free; run long stages as `nohup nice -n 10 venv/bin/python -m tools.train_demo_model vae > training/vae.out &`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # allow `python tools/train_demo_model.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from tools.demo_model.models import VAE_VARIANTS  # noqa: E402  (light: no torch model code runs)

DEMO_CKPT = "models/Stable-diffusion/demo/demo-shapes.safetensors"
DEMO_CONTROLNET = "models/ControlNet/control_demo-shapes_canny.safetensors"
DEMO_LORA = "models/Lora/demo/demo-shapes_outline.safetensors"
DEMO_EMBEDDING = "embeddings/demo/demo-pink.safetensors"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: leave a core free)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)


def _high_noise_args(p: argparse.ArgumentParser, frac: float, weight: float) -> None:
    p.add_argument("--high-noise-frac", type=float, default=frac,
                   help="fraction of each batch drawn from timesteps >= --high-noise-min (where the layout is decided)")
    p.add_argument("--high-noise-min", type=int, default=700)
    p.add_argument("--high-noise-after", type=int, default=0, help="step from which --high-noise-frac applies")
    p.add_argument("--high-noise-weight", type=float, default=weight,
                   help="from --high-noise-after on, weight each sample's loss by max(eps weight, min(1/snr, this))")
    p.add_argument("--high-noise-weight-after", type=int, default=None,
                   help="step from which --high-noise-weight applies (default: --high-noise-after)")
    p.add_argument("--high-noise-until", type=int, default=None,
                   help="step from which timesteps are uniform and unweighted again (a final polishing phase)")


def _train_common(p: argparse.ArgumentParser, steps: int, batch: int, lr: float, warmup: int) -> None:
    _common(p)
    p.add_argument("--steps", type=int, default=steps, help="total optimiser steps (the LR schedule spans these)")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16 autocast (fp32 weights and optimiser) or full fp32; auto = bf16 only where the "
                        "hardware has it natively (CUDA, AVX-512 BF16/AMX)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint (and sample grid) interval")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (after a checkpoint) when this much wall time has passed; 0 = run to --steps")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of this run")


def _loop_args(p: argparse.ArgumentParser, steps: int, batch: int, lr: float, warmup: int) -> None:
    """The options of tools/demo_model/finetune.py's training loop (the demo LoRA and embedding)."""
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--min-snr", type=float, default=5.0, help="min-SNR loss weighting gamma (0 = off)")
    p.add_argument("--ckpt-minutes", type=float, default=3.0, help="checkpoint interval")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (after a checkpoint) when this much wall time has passed; 0 = run to --steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of this run")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.train_demo_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("data", help="write a preview grid and check the held-out split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", type=int, default=64)

    for name, helptext, steps, run in (("vae", "stage 1: train the autoencoder", 5000, "vae"),
                                       ("compare-ae", "train f4 and f8 autoencoders with the same budget", 500,
                                        None)):
        p = sub.add_parser(name, help=helptext)
        _train_common(p, steps=steps, batch=8, lr=5e-4, warmup=50)
        p.add_argument("--kl-weight", type=float, default=1e-6)
        p.add_argument("--init-logvar", type=float, default=None,
                       help="initial posterior log-variance (encoder conv_out bias); default: diffusers' init")
        if run:
            p.add_argument("--variant", choices=sorted(VAE_VARIANTS), default="f4")
            p.add_argument("--run", default=run, help="folder under training/")
            p.add_argument("--init-from", default=None,
                           help="start from these weights (a vae.pt, e.g. the compare-ae run of the same variant)")
        else:
            p.add_argument("--variants", nargs="+", default=["f4", "f8"], choices=sorted(VAE_VARIANTS))

    p = sub.add_parser("latents", help="encode the UNet training set with the trained autoencoder")
    _common(p)
    p.add_argument("--vae", default="training/vae/vae.pt")
    p.add_argument("-n", type=int, default=40_000, help="number of training scenes")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="encoder precision")
    p.add_argument("--out", default="training/unet/latents.pt")

    p = sub.add_parser("unet", help="stage 2: train the UNet and the text encoder")
    _train_common(p, steps=8000, batch=64, lr=5e-4, warmup=300)
    p.add_argument("--run", default="unet", help="folder under training/")
    p.add_argument("--latents", default="training/unet/latents.pt")
    p.add_argument("--vae", default="training/vae/vae.pt")
    p.add_argument("--unet-variant", default="s")
    p.add_argument("--text-variant", default="t64")
    p.add_argument("--cond-drop", type=float, default=0.1, help="caption dropout (for classifier-free guidance)")
    p.add_argument("--min-snr", type=float, default=5.0, help="min-SNR loss weighting gamma (0 = off)")
    p.add_argument("--partial-captions", type=float, default=0.0,
                   help="fraction of each batch whose caption leaves out the positions, the colours or the "
                        "background (one kind, at random): each word learns its own effect")
    p.add_argument("--partial-captions-after", type=int, default=0, help="step from which --partial-captions applies")
    p.add_argument("--oversample", nargs="*", default=[], metavar="COLOUR=FACTOR",
                   help="draw scenes with an object of this colour FACTOR times as often (e.g. orange=3): more "
                        "gradient for the colours the model renders least precisely")
    p.add_argument("--oversample-after", type=int, default=0, help="step from which --oversample applies")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--eval-captions", type=int, default=32, help="held-out captions scored at every checkpoint")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (TorchInductor); refused when its gradients differ from "
                        "eager ones on a probe batch (torch 2.13 on CPU: they do; eager runs 1.1 s/step there)")
    _high_noise_args(p, frac=0.0, weight=0.0)
    p.add_argument("--lr-restart-at", type=int, nargs="*", default=[],
                   help="steps where a new cosine cycle (warm restart) starts; each runs to the next one or --steps")
    p.add_argument("--lr-restart", type=float, nargs="*", default=[],
                   help="the peak learning rate of each --lr-restart-at cycle")
    p.add_argument("--lr-first-cycle", type=int, default=None,
                   help="the steps the first cosine cycle spans (default: --steps; the shipped recipe: 5000)")

    p = sub.add_parser("all", help="vae -> (PSNR gate) -> latents -> unet -> export, each resumed where it stopped")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--vae-steps", type=int, default=2500)
    p.add_argument("--vae-init-from", default=None, help="only used when training/vae has no checkpoint yet")
    p.add_argument("--unet-steps", type=int, default=12200)
    p.add_argument("--min-psnr", type=float, default=30.0,
                   help="do not start the UNet stage unless the autoencoder reaches this held-out PSNR (dB)")

    p = sub.add_parser("export", help="write the single-file LDM checkpoint + yaml")
    p.add_argument("--unet-ckpt", default="training/unet/ckpt.pt")
    p.add_argument("--vae", default="training/vae/vae.pt")
    p.add_argument("--out", default=DEMO_CKPT)
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")

    p = sub.add_parser("eval", help="held-out evaluation of an exported checkpoint (loader + sampler of the web UI)")
    _common(p)
    p.add_argument("--ckpt", default=DEMO_CKPT)
    p.add_argument("-n", type=int, default=240, help="held-out captions (>= 200 for the full evaluation)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, nargs="+", default=None,
                   help="guidance scales; the first is scored against the targets (default: the evaluation's fixed "
                        "CFG, tools/demo_model/evaluate.py EVAL_CFG, and 1 to show what guidance adds)")
    p.add_argument("--sampler", default="DPM++ 2M")
    p.add_argument("--first-seed", type=int, default=10_000,
                   help="caption i is drawn with seed FIRST_SEED + i (the evaluation: 10000; choosing settings: "
                        "other seeds, e.g. 20000)")
    p.add_argument("--out", default="training/eval")

    p = sub.add_parser("controlnet", help="train the Canny ControlNet against the shipped base model")
    _train_common(p, steps=1800, batch=32, lr=3e-4, warmup=100)
    p.add_argument("--run", default="controlnet", help="folder under training/")
    p.add_argument("--base", default=DEMO_CKPT, help="the base checkpoint (single file + yaml)")
    p.add_argument("--latents", default="training/unet/latents.pt")
    p.add_argument("-n", type=int, default=40_000, help="training scenes (the first n of the latent cache)")
    p.add_argument("--data-seed", type=int, default=0, help="the seed the latent cache was drawn with")
    p.add_argument("--cond-drop", type=float, default=0.5, help="captions replaced by the empty prompt")
    p.add_argument("--min-snr", type=float, default=5.0)
    p.add_argument("--eval-cases", type=int, default=16, help="steering cases measured at every checkpoint")
    # the layout is decided at high noise, where the epsilon loss hardly sees it (the UNet stage's lesson): at
    # uniform timesteps the control had no effect after 540 steps (loss flat, IoU 0 with and without)
    _high_noise_args(p, frac=0.5, weight=20.0)
    # consistent captions only: with a control image on the other side the base model drew the caption's object too
    # (and CFG amplified it), so part of each batch gets captions that name other positions than the control shows
    p.add_argument("--conflict-frac", type=float, default=0.25,
                   help="fraction of each batch whose caption names other positions than the scene (and control)")
    p.add_argument("--conflict-after", type=int, default=878,
                   help="step from which --conflict-frac applies (the shipped run: 878)")

    p = sub.add_parser("controlnet-export", help="write the ControlNet in the original key layout (fp16)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--state", default="training/controlnet/state.pt")
    p.add_argument("--out", default=DEMO_CONTROLNET)

    p = sub.add_parser("controlnet-eval", help="measure how the ControlNet steers the shape (IoU)")
    _common(p)
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--controlnet", default=DEMO_CONTROLNET)
    p.add_argument("-n", type=int, default=64, help="held-out captions with a control image on the opposite side")
    p.add_argument("--out", default="training/eval/controlnet")

    p = sub.add_parser("lora", help="train the demo LoRA (outlines) against the shipped base model")
    _common(p)
    _loop_args(p, steps=600, batch=16, lr=1e-3, warmup=30)
    p.add_argument("--run", default="lora", help="folder under training/")
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("-n", type=int, default=4000, help="outline scenes in the latent cache")
    p.add_argument("--data-seed", type=int, default=7)
    p.add_argument("--eval-captions", type=int, default=8, help="held-out captions scored at every checkpoint")

    p = sub.add_parser("lora-export", help="write the demo LoRA (kohya keys, fp16) to models/Lora/demo/")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run", default="lora")
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--out", default=DEMO_LORA)

    p = sub.add_parser("lora-eval", help="held-out captions with the demo LoRA at weights 0, 0.5, 1 (hollowness)")
    _common(p)
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--lora", default=DEMO_LORA)
    p.add_argument("-n", type=int, default=48)
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--via", choices=["auto", "own", "engine"], default="auto",
                   help="own: our reading of the file as weight patches; engine: <lora:...> in the prompt, handled "
                        "by the web UI's LoRA loader; auto: engine once it exists")
    p.add_argument("--crosscheck", type=int, default=4,
                   help="with --via engine: also draw this many captions at weight 1 with our own reading of the "
                        "file and report the largest pixel difference")
    p.add_argument("--out", default="training/eval_lora")
    p.add_argument("--preview", default=None, help="also write the 2x2 preview image here")

    p = sub.add_parser("embedding", help="train the demo embedding (textual inversion) against the shipped model")
    _common(p)
    _loop_args(p, steps=500, batch=16, lr=1e-2, warmup=20)
    p.add_argument("--run", default="embedding", help="folder under training/")
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--vectors", type=int, default=2)
    p.add_argument("--object-weight", type=float, default=4.0,
                   help="the pink object's latent positions weigh 1 + this in the loss")
    p.add_argument("-n", type=int, default=2000, help="scenes in the latent cache")
    p.add_argument("--data-seed", type=int, default=11)
    p.add_argument("--eval-captions", type=int, default=8, help="held-out captions scored at every checkpoint")

    p = sub.add_parser("embedding-export", help="write the demo embedding (A1111 safetensors) to embeddings/demo/")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run", default="embedding")
    p.add_argument("--out", default=DEMO_EMBEDDING)

    p = sub.add_parser("embedding-eval", help="held-out captions: the embedding's word against the plain colour word")
    _common(p)
    p.add_argument("--base", default=DEMO_CKPT)
    p.add_argument("--embedding", default=DEMO_EMBEDDING)
    p.add_argument("-n", type=int, default=48)
    p.add_argument("--via", choices=["auto", "own", "engine"], default="auto",
                   help="own: the vectors put on the job's patch set by us; engine: the web UI's embedding loader "
                        "reads the folder; auto: engine once it exists")
    p.add_argument("--out", default="training/eval_embedding")
    p.add_argument("--preview", default=None, help="also write the preview image here")

    p = sub.add_parser("bench", help="time UNet forward passes and a 20-step CFG sample")
    _common(p)
    p.add_argument("--unet-variant", default="s")
    p.add_argument("--text-variant", default="t64")
    p.add_argument("--latent", type=int, default=16, help="latent side (16 for f4, 8 for f8)")
    return ap


# The shipped UNet's schedule (docs/DEMO_MODEL.md, "Recipe"): uniform timesteps to step 2,804; then half of each
# batch from t >= 700 with the x0-space loss weighting (cap 20) under a 2e-4 warm restart, which teaches position;
# from step 5,000 uniform timesteps again in 1e-4 cycles (5,000, 7,400, 9,800) with a quarter of each batch on
# partial captions and the least precisely drawn colours (orange, purple, black) drawn more often.
UNET_RECIPE = ["--high-noise-frac", "0.5", "--high-noise-min", "700", "--high-noise-after", "2804",
               "--high-noise-weight", "20", "--high-noise-until", "5000",
               "--lr-first-cycle", "5000", "--lr-restart-at", "2804", "5000", "7400", "9800",
               "--lr-restart", "2e-4", "1e-4", "1e-4", "1e-4",
               "--partial-captions", "0.25", "--partial-captions-after", "5000",
               "--oversample", "orange=3", "purple=2", "black=2", "--oversample-after", "5000"]


def run_all(args) -> int:
    """The whole pipeline with the default settings; every stage resumes from its own checkpoint."""
    from tools.demo_model import export, unet, vae

    parser = build_parser()
    common = ["--threads", str(args.threads), "--device", args.device]
    # fp32 as the shipped autoencoder (auto would pick bf16 autocast on AVX-512 BF16 CPUs)
    vae_argv = ["vae", "--variant", "f4", "--steps", str(args.vae_steps), "--precision", "fp32", *common]
    if args.vae_init_from:
        vae_argv += ["--init-from", args.vae_init_from]
    res = vae.train(parser.parse_args(vae_argv))
    if res["step"] < args.vae_steps:
        return 0  # stopped early (--max-minutes is not offered here, but be safe)
    if res["psnr"] < args.min_psnr:
        print(f"autoencoder held-out PSNR {res['psnr']:.2f} dB < {args.min_psnr} dB: not starting the UNet stage; "
              f"train the autoencoder longer (vae --steps N) or lower --min-psnr")
        return 1
    unet.build_latents(parser.parse_args(["latents", *common]))
    res = unet.train(parser.parse_args(["unet", "--steps", str(args.unet_steps), *UNET_RECIPE, *common]))
    if res["step"] >= args.unet_steps:
        export.main(parser.parse_args(["export"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "data":
        from tools.demo_model import data

        data.cli(args)
    elif args.cmd == "vae":
        from tools.demo_model import vae

        print(json.dumps(vae.train(args), indent=1))
    elif args.cmd == "compare-ae":
        from tools.demo_model import vae

        vae.compare(args)
    elif args.cmd == "latents":
        from tools.demo_model import unet

        unet.build_latents(args)
    elif args.cmd == "unet":
        from tools.demo_model import unet

        print(json.dumps(unet.train(args), indent=1))
    elif args.cmd == "all":
        return run_all(args)
    elif args.cmd == "export":
        from tools.demo_model import export

        export.main(args)
    elif args.cmd == "eval":
        from tools.demo_model import evaluate

        evaluate.main(args)
    elif args.cmd in ("controlnet", "controlnet-export", "controlnet-eval"):
        from tools.demo_model import controlnet

        if args.cmd == "controlnet":
            print(json.dumps(controlnet.train(args), indent=1))
        elif args.cmd == "controlnet-export":
            controlnet.export(args)
        else:
            controlnet.evaluate(args)
    elif args.cmd in ("lora", "lora-export", "lora-eval"):
        from tools.demo_model import lora

        print(json.dumps({"lora": lora.train, "lora-export": lora.export, "lora-eval": lora.evaluate}[args.cmd](args),
                         indent=1, default=str))
    elif args.cmd in ("embedding", "embedding-export", "embedding-eval"):
        from tools.demo_model import embedding

        fn = {"embedding": embedding.train, "embedding-export": embedding.export,
              "embedding-eval": embedding.evaluate}[args.cmd]
        print(json.dumps(fn(args), indent=1, default=str))
    elif args.cmd == "bench":
        from tools.demo_model import unet

        unet.bench(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
