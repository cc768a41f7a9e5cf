"""Which model family a single-file LDM checkpoint is, and the component configs that fit its weights.

The family (SD1.x, SD2.x eps/v, inpainting, SDXL base) comes from the key layout, or from a `<name>.yaml` LDM config
beside the file. Shapes (channels, depths, context size) are read from the weights themselves, so fine-tunes, pruned
models and the tiny test models all load; only what weights cannot tell (attention heads, v-prediction) comes from the
family defaults in configs/*.json or the yaml.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).parent / "configs"
UNET = "model.diffusion_model."
VAE = "first_stage_model."


class ArchitectureError(ValueError):
    pass


@dataclass
class ModelSpec:
    family: str                      # "sd1", "sd2", "sdxl"
    inpainting: bool = False
    prediction_type: str = "epsilon"
    native_resolution: int = 512
    unet: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    text_encoders: list[dict] = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        name = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}[self.family]
        if self.inpainting:
            name += " inpainting"
        if self.prediction_type == "v_prediction":
            name += " v-prediction"
        return name


@lru_cache(maxsize=None)
def _family_defaults(family: str) -> dict:
    return json.loads((CONFIG_DIR / f"{family}.json").read_text(encoding="utf-8"))


def family_defaults(family: str) -> dict:
    return copy.deepcopy(_family_defaults(family))


def detect_family(sd: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("conditioner.embedders.1.model.") for k in sd):
        if not any(k.startswith("conditioner.embedders.0.transformer.") for k in sd):
            raise ArchitectureError("this looks like an SDXL refiner, which is not supported yet")
        return "sdxl"
    if any(k.startswith("conditioner.embedders.0.model.") for k in sd):
        raise ArchitectureError("this looks like an SDXL refiner, which is not supported yet")
    if any(k.startswith("cond_stage_model.model.") for k in sd):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in sd):
        return "sd1"
    if not any(k.startswith(UNET) for k in sd):
        raise ArchitectureError("no Stable Diffusion UNet weights (model.diffusion_model.*) in this file; "
                                "is it a VAE, LoRA or ControlNet file?")
    raise ArchitectureError("it has a UNet but no known text encoder (SD1 CLIP, SD2 OpenCLIP or SDXL)")


def _indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def infer_unet_config(sd: dict, base: dict, heads: dict | None) -> dict:
    """UNet2DConditionModel config from LDM UNet weights. `heads` = {"num_heads": n} or {"num_head_channels": c}."""
    cfg = dict(base)
    conv_in = sd[UNET + "input_blocks.0.0.weight"]
    model_channels, cfg["in_channels"] = conv_in.shape[0], conv_in.shape[1]
    cfg["out_channels"] = sd[UNET + "out.2.weight"].shape[0]

    blocks = _indices(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.")
    levels: list[list[int]] = [[]]
    for b in blocks[1:]:
        if UNET + f"input_blocks.{b}.0.op.weight" in sd:
            levels.append([])
        else:
            levels[-1].append(b)
    layers = len(levels[0])
    channels, attn, depth = [], [], []
    for level in levels:
        first = level[0]
        channels.append(sd[UNET + f"input_blocks.{first}.0.out_layers.3.weight"].shape[0])
        has_attn = UNET + f"input_blocks.{first}.1.proj_in.weight" in sd
        attn.append(has_attn)
        depth.append(len(_indices(sd, re.escape(UNET + f"input_blocks.{first}.1.transformer_blocks.") + r"(\d+)\."))
                     if has_attn else 1)
    cfg["block_out_channels"] = channels
    cfg["layers_per_block"] = layers
    cfg["down_block_types"] = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    cfg["up_block_types"] = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    mid_depth = len(_indices(sd, re.escape(UNET + "middle_block.1.transformer_blocks.") + r"(\d+)\."))
    cfg["transformer_layers_per_block"] = depth if len(set(depth + [mid_depth])) > 1 else depth[0]
    if isinstance(cfg["transformer_layers_per_block"], list) and mid_depth != depth[-1]:
        raise ArchitectureError("unusual UNet: middle block depth differs from the last level's")

    attn_level = next(i for i, a in enumerate(attn) if a)
    first_attn = levels[attn_level][0]
    proj_in = sd[UNET + f"input_blocks.{first_attn}.1.proj_in.weight"]
    cfg["use_linear_projection"] = proj_in.ndim == 2
    cfg["cross_attention_dim"] = sd[UNET + f"input_blocks.{first_attn}.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]

    heads = heads or {}
    if heads.get("num_heads", -1) not in (-1, None):
        cfg["attention_head_dim"] = int(heads["num_heads"])
    else:
        head_channels = heads.get("num_head_channels") or 64
        if isinstance(base.get("attention_head_dim"), int) and not heads:
            cfg["attention_head_dim"] = base["attention_head_dim"]  # SD1: a fixed number of heads
        else:
            cfg["attention_head_dim"] = [max(1, c // head_channels) for c in channels]

    label = UNET + "label_emb.0.0.weight"
    if label in sd:
        cfg["addition_embed_type"] = "text_time"
        cfg["addition_time_embed_dim"] = base.get("addition_time_embed_dim", 256)
        cfg["projection_class_embeddings_input_dim"] = sd[label].shape[1]
    cfg["sample_size"] = base.get("sample_size", 64)
    del model_channels
    return cfg


def infer_vae_config(sd: dict, base: dict, prefix: str = VAE) -> dict:
    cfg = dict(base)
    levels = _indices(sd, re.escape(prefix + "encoder.down.") + r"(\d+)\.")
    if not levels:
        raise ArchitectureError("no VAE weights (first_stage_model.encoder.*)")
    cfg["block_out_channels"] = [sd[prefix + f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    cfg["layers_per_block"] = len(_indices(sd, re.escape(prefix + "encoder.down.0.block.") + r"(\d+)\."))
    cfg["in_channels"] = sd[prefix + "encoder.conv_in.weight"].shape[1]
    cfg["out_channels"] = sd[prefix + "decoder.conv_out.weight"].shape[0]
    cfg["latent_channels"] = sd[prefix + "decoder.conv_in.weight"].shape[1]
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * len(levels)
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(levels)
    return cfg


def heads_for(hidden: int) -> int:
    # CLIP models use 64-dim heads (768/12, 1024/16, 1280/20); tiny test encoders use 8-dim heads.
    return hidden // 64 if hidden >= 64 else max(1, hidden // 8)


def infer_text_config(sd: dict, enc: dict) -> dict:
    cfg = dict(enc["config"])
    p = enc["prefix"]
    if enc["layout"] == "hf":
        tok = sd[p + "embeddings.token_embedding.weight"]
        pos = sd[p + "embeddings.position_embedding.weight"]
        layers = _indices(sd, re.escape(p + "encoder.layers.") + r"(\d+)\.")
        fc1 = sd[p + "encoder.layers.0.mlp.fc1.weight"]
    else:
        tok = sd[p + "token_embedding.weight"]
        pos = sd[p + "positional_embedding"]
        layers = _indices(sd, re.escape(p + "transformer.resblocks.") + r"(\d+)\.")
        fc1 = sd[p + "transformer.resblocks.0.mlp.c_fc.weight"]
        if p + "text_projection" in sd:
            cfg["projection_dim"] = sd[p + "text_projection"].shape[1]
    cfg["vocab_size"], cfg["hidden_size"] = tok.shape
    cfg["max_position_embeddings"] = pos.shape[0]
    cfg["intermediate_size"] = fc1.shape[0]
    cfg["num_attention_heads"] = heads_for(cfg["hidden_size"])
    cfg["num_hidden_layers"] = len(layers) - (1 if enc.get("drop_last_layer") else 0)
    return cfg


def read_yaml_config(path: Path) -> dict:
    import yaml
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise ArchitectureError(f"{path}: not a readable LDM yaml config: {exc}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ArchitectureError(f"{path}: not an LDM config (no 'model' section)")
    return data


def _yaml_facts(cfg: dict) -> dict:
    """The few things an LDM yaml says that weights cannot: family, v-prediction, heads, image size, VAE scale."""
    params = (cfg.get("model") or {}).get("params") or {}
    unet = (params.get("unet_config") or params.get("network_config") or {}).get("params") or {}
    cond_target = str((params.get("cond_stage_config") or {}).get("target", ""))
    facts: dict = {}
    if "conditioner" in params or "network_config" in params:
        facts["family"] = "sdxl"
    elif "OpenCLIP" in cond_target:
        facts["family"] = "sd2"
    elif "CLIP" in cond_target:
        facts["family"] = "sd1"
    if params.get("parameterization") == "v":
        facts["prediction_type"] = "v_prediction"
    elif params.get("parameterization") == "eps":
        facts["prediction_type"] = "epsilon"
    heads = {k: unet[k] for k in ("num_heads", "num_head_channels") if k in unet and unet[k] not in (None, -1)}
    if heads:
        facts["heads"] = heads
    ddconfig = ((params.get("first_stage_config") or {}).get("params") or {}).get("ddconfig") or {}
    if "image_size" in unet and "ch_mult" in ddconfig:
        facts["native_resolution"] = int(unet["image_size"]) * 2 ** (len(ddconfig["ch_mult"]) - 1)
    if "scale_factor" in params:
        facts["scaling_factor"] = float(params["scale_factor"])
    return facts


def build_spec(sd: dict[str, torch.Tensor], yaml_cfg: dict | None = None, v_pred_probe=None) -> ModelSpec:
    """Everything needed to instantiate the components of this checkpoint.

    v_pred_probe(spec) -> bool is asked for SD2 models without a yaml (A1111 also tests the UNet's output there)."""
    facts = _yaml_facts(yaml_cfg) if yaml_cfg else {}
    family = facts.get("family") or detect_family(sd)
    d = family_defaults(family)
    unet = infer_unet_config(sd, d["unet"], facts.get("heads"))
    vae = infer_vae_config(sd, d["vae"])
    if "scaling_factor" in facts:
        vae["scaling_factor"] = facts["scaling_factor"]
    encoders = []
    for enc in d["text_encoders"]:
        enc = dict(enc)
        enc["config"] = infer_text_config(sd, enc)
        encoders.append(enc)
    spec = ModelSpec(family=family, inpainting=unet["in_channels"] == 9,
                     prediction_type=facts.get("prediction_type", d["prediction_type"]),
                     native_resolution=d["native_resolution"], unet=unet, vae=vae, text_encoders=encoders,
                     scheduler=d["scheduler"])
    if family == "sd2" and "prediction_type" not in facts and v_pred_probe is not None and v_pred_probe(spec):
        spec.prediction_type = "v_prediction"
    if spec.prediction_type == "v_prediction" and family == "sd2":
        spec.native_resolution = 768
    if "native_resolution" in facts:
        spec.native_resolution = facts["native_resolution"]
    spec.unet["sample_size"] = spec.native_resolution // 2 ** (len(vae["block_out_channels"]) - 1)
    return spec
