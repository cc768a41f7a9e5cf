"""Export: one single-file checkpoint in the original LDM key layout (fp16 .safetensors) + the LDM yaml beside it.

The yaml carries what the weights cannot tell our loader: SD1 family (FrozenCLIPEmbedder), eps parameterisation,
the UNet's head size (num_head_channels), the native resolution (image_size x 2**(len(ch_mult)-1)) and the
autoencoder's scale_factor (1 / std of its latents). After writing, the file is read back with the web UI's own
loader and every component config is compared with the trained one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from tools.demo_model import common, models
from tools.demo_model.unet import SCHEDULE, _resolve


def ldm_yaml(unet_cfg: dict, vae_cfg: dict, te_cfg: dict, scale_factor: float) -> str:
    ch = unet_cfg["block_out_channels"]
    mult = [c // ch[0] for c in ch]
    factor = models.vae_factor(vae_cfg)
    # LDM's attention_resolutions are downsampling rates (1, 2, 4, ...) of the levels with attention
    attn_res = [2 ** i for i, t in enumerate(unet_cfg["down_block_types"]) if "CrossAttn" in t]
    vch = vae_cfg["block_out_channels"]
    vmult = [c // vch[0] for c in vch]
    lines = f"""\
# Demo model (tools/train_demo_model.py): SD 1.x-style latent diffusion at {unet_cfg['sample_size'] * factor}x{unet_cfg['sample_size'] * factor}.
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: {SCHEDULE['beta_start']}
    linear_end: {SCHEDULE['beta_end']}
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: {SCHEDULE['num_train_timesteps']}
    first_stage_key: jpg
    cond_stage_key: txt
    image_size: {unet_cfg['sample_size']}
    channels: {unet_cfg['in_channels']}
    cond_stage_trainable: true
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: {scale_factor:.6f}
    parameterization: eps
    use_ema: false
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: {unet_cfg['sample_size']}
        in_channels: {unet_cfg['in_channels']}
        out_channels: {unet_cfg['out_channels']}
        model_channels: {ch[0]}
        attention_resolutions: {attn_res}
        num_res_blocks: {unet_cfg['layers_per_block']}
        channel_mult: {mult}
        num_head_channels: {models.UNET_HEAD_CHANNELS}
        use_spatial_transformer: true
        transformer_depth: 1
        context_dim: {unet_cfg['cross_attention_dim']}
        use_checkpoint: false
        legacy: false
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: {vae_cfg['latent_channels']}
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: {vae_cfg['latent_channels']}
          resolution: {unet_cfg['sample_size'] * factor}
          in_channels: {vae_cfg['in_channels']}
          out_ch: {vae_cfg['out_channels']}
          ch: {vch[0]}
          ch_mult: {vmult}
          num_res_blocks: {vae_cfg['layers_per_block']}
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      # a small CLIP text transformer trained with the UNet (real CLIP tokenizer, 49408 tokens,
      # hidden size {te_cfg['hidden_size']}, {te_cfg['num_hidden_layers']} layers); its shapes come from the weights
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""
    return lines


def load_trained(unet_ckpt: Path, vae_path: Path, use_ema: bool = True):
    """(unet, text_encoder, vae, meta) with the EMA weights of a UNet-stage checkpoint."""
    from tools.demo_model.unet import EMA
    from tools.demo_model.vae import load_vae

    ck = common.load_checkpoint(unet_ckpt)
    unet = models.build_unet(ck["unet_config"])
    te = models.build_text_encoder(ck["text_config"])
    unet.load_state_dict(ck["unet"])
    te.load_state_dict(ck["text_encoder"])
    if use_ema:
        ema = EMA([unet, te], 0.0)
        ema.load_state_dict(ck["ema"])
        ema.swap()
    vae, blob = load_vae(vae_path)
    if blob["step"] != ck["meta"]["vae_step"]:
        raise SystemExit(f"{unet_ckpt} was trained on latents of autoencoder step {ck['meta']['vae_step']}, "
                         f"but {vae_path} is step {blob['step']}")
    return unet.eval(), te.eval(), vae.eval(), {**ck["meta"], "step": ck["step"], "vae_config": blob["config"],
                                                "unet_config": ck["unet_config"], "text_config": ck["text_config"]}


def export(unet, te, vae, unet_cfg: dict, vae_cfg: dict, te_cfg: dict, scale_factor: float, out: Path,
           metadata: dict | None = None) -> dict:
    from modules.models.ldm_export import save_checkpoint, to_ldm_state_dict

    sd = to_ldm_state_dict(unet, vae, te, arch="sd1")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(sd, out, dtype=torch.float16,
                    metadata={k: str(v) for k, v in (metadata or {}).items()})
    yaml_path = out.with_suffix(".yaml")
    common.atomic_write_bytes(yaml_path, ldm_yaml(unet_cfg, vae_cfg, te_cfg, scale_factor).encode("utf-8"))
    return {"path": str(out), "yaml": str(yaml_path), "mb": out.stat().st_size / 1e6,
            "params": sum(v.numel() for v in sd.values())}


def verify(out: Path, unet_cfg: dict, vae_cfg: dict, te_cfg: dict, scale_factor: float) -> dict:
    """Reads the file back with the web UI's loader and checks it rebuilds the trained configs."""
    from modules.models.loader import read_checkpoint
    from modules.models.registry import CheckpointInfo

    info = CheckpointInfo(filename=out.resolve(), name=out.name, config=out.with_suffix(".yaml").resolve())
    t0 = time.perf_counter()
    sd, spec = read_checkpoint(info)
    problems = []
    for key, want in unet_cfg.items():
        if key in spec.unet and _norm(spec.unet[key]) != _norm(want):
            problems.append(f"unet.{key}: loader {spec.unet[key]!r} vs trained {want!r}")
    for key, want in vae_cfg.items():
        # sample_size only sizes diffusers' tiling; the scale factor is checked below (from the yaml)
        if key in ("sample_size", "scaling_factor"):
            continue
        if key in spec.vae and _norm(spec.vae[key]) != _norm(want):
            problems.append(f"vae.{key}: loader {spec.vae[key]!r} vs trained {want!r}")
    tcfg = spec.text_encoders[0]["config"]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "hidden_act", "max_position_embeddings"):
        if tcfg[key] != te_cfg[key]:
            problems.append(f"text_encoder.{key}: loader {tcfg[key]!r} vs trained {te_cfg[key]!r}")
    if abs(spec.vae["scaling_factor"] - scale_factor) > 1e-4:
        problems.append(f"scaling_factor: loader {spec.vae['scaling_factor']} vs {scale_factor}")
    factor = models.vae_factor(vae_cfg)
    if spec.native_resolution != unet_cfg["sample_size"] * factor:
        problems.append(f"native resolution {spec.native_resolution}")
    return {"family": spec.family, "native_resolution": spec.native_resolution, "problems": problems,
            "read_s": time.perf_counter() - t0}


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def main(args) -> None:
    unet, te, vae, meta = load_trained(_resolve(args.unet_ckpt), _resolve(args.vae), use_ema=not args.no_ema)
    out = _resolve(args.out)
    res = export(unet, te, vae, meta["unet_config"], meta["vae_config"], meta["text_config"], meta["scale_factor"],
                 out, metadata={"demo_model_unet_step": meta["step"], "demo_model_vae_step": meta["vae_step"],
                                "ema": not args.no_ema})
    res["verify"] = verify(out, meta["unet_config"], meta["vae_config"], meta["text_config"], meta["scale_factor"])
    print(json.dumps(res, indent=1))
    if res["verify"]["problems"]:
        raise SystemExit("the exported file does not load back as trained: " + "; ".join(res["verify"]["problems"]))
