"""Loading a diffusers-format model folder (model_index.json with unet/, vae/, text_encoder/ ... sub-folders).

Components load with diffusers/transformers from_pretrained on the LOCAL folder (never a hub name), safetensors only
so that no pickle is read; the tokenizer is our offline CLIP tokenizer, as for single-file checkpoints.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from modules.models.architecture import ModelSpec, family_defaults
from modules.models.registry import CheckpointInfo
from modules.models.safe_load import ModelFileError


def _family(folder: Path) -> str:
    if (folder / "text_encoder_2").is_dir():
        return "sdxl"
    config = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    return "sd2" if config.get("hidden_act") == "gelu" else "sd1"


def load_folder(info: CheckpointInfo, tokenizer_for, device: torch.device, dtype: torch.dtype,
                vae_dtype: torch.dtype):
    from modules.models.loader import SDModel, _place  # the same model object as single files

    folder = info.filename
    try:
        family = _family(folder)
        kw = {"local_files_only": True, "use_safetensors": True}
        unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", **kw)
        encoders = [CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", **kw)]
        if family == "sdxl":
            encoders.append(CLIPTextModelWithProjection.from_pretrained(str(folder), subfolder="text_encoder_2",
                                                                        **kw))
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
        scheduler = json.loads(scheduler_file.read_text(encoding="utf-8")) if scheduler_file.is_file() else {}
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        raise ModelFileError(f"{folder}: not a loadable diffusers model folder: {str(exc).splitlines()[0][:300]}") \
            from None
    d = family_defaults(family)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    spec = ModelSpec(family=family, inpainting=unet.config.in_channels == 9,
                     prediction_type=scheduler.get("prediction_type", d["prediction_type"]),
                     native_resolution=int(unet.config.sample_size) * factor, unet=dict(unet.config),
                     vae=dict(vae.config), text_encoders=d["text_encoders"],
                     scheduler={k: scheduler.get(k, v) for k, v in d["scheduler"].items()})
    tokenizers = [tokenizer_for(enc.get("pad_token", "<|endoftext|>")) for enc in spec.text_encoders]
    models = [m.eval().requires_grad_(False) for m in (unet, vae, *encoders)]
    return SDModel(info, spec, _place(models[0], device, dtype), _place(models[1], device, vae_dtype),
                   [_place(e, device, dtype) for e in models[2:]], tokenizers, device, dtype)
