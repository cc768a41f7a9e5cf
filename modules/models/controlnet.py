"""ControlNet model files in the original key layout (lllyasviel/ControlNet), loaded as diffusers ControlNetModel.

What such a file holds (keys with or without the ``control_model.`` prefix; .safetensors, or a pickle read with the
restricted unpickler of safe_load):

* a copy of the base UNet's encoder: ``time_embed``, ``input_blocks``, ``middle_block``;
* ``input_hint_block``: the control-image encoder, convolutions at even indices with SiLU between them; as many
  of them have stride 2 as the autoencoder downsamples (three for SD 1.x: 0..14; two for the f4 demo model: 0..10),
  so the control image has the size of the generated image;
* ``zero_convs.N.0`` (one per input block) and ``middle_block_out.0``: the outputs added to the UNet's skip
  connections and middle block.

The architecture is not stored in the file; it is the base model's UNet config plus what the hint encoder's weights
say (input channels, widths). Conversion of the keys is diffusers' own ``convert_controlnet_checkpoint``; the
reverse (export) is ``ldm_export.controlnet_to_original_state_dict``.
"""
from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import torch

from modules.models.safe_load import ModelFileError, load_state_dict

PREFIX = "control_model."


def original_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ControlNet part of a file's state dict, without the ``control_model.`` prefix."""
    if any(k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return dict(sd)


def hint_channels(sd: dict[str, torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    """(control image channels, conditioning_embedding_out_channels) read from ``input_hint_block``."""
    idx = _hint_indices(sd)
    # conv_in (0), then per width a same-width conv and a stride-2 conv to the next width, then conv_out
    widths = [sd["input_hint_block.0.weight"].shape[0]]
    widths += [sd[f"input_hint_block.{i}.weight"].shape[0] for i in idx[2:-1:2]]
    return int(sd["input_hint_block.0.weight"].shape[1]), tuple(int(w) for w in widths)


def _hint_indices(sd: dict[str, torch.Tensor]) -> list[int]:
    idx = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_hint_block\.(\d+)\.weight$", k))})
    if len(idx) < 4 or len(idx) % 2 or idx != list(range(0, 2 * len(idx), 2)):
        raise ValueError(f"input_hint_block has convolutions at {idx}, expected 0, 2, 4, ..., 4k + 2")
    return idx


def _hint_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    idx = _hint_indices(sd)
    names = ["conv_in"] + [f"blocks.{i}" for i in range(len(idx) - 2)] + ["conv_out"]
    return {f"controlnet_cond_embedding.{n}.{p}": sd[f"input_hint_block.{i}.{p}"]
            for n, i in zip(names, idx) for p in ("weight", "bias")}


def controlnet_config(base_unet_config: dict, sd: dict[str, torch.Tensor]) -> dict:
    """ControlNetModel arguments: the base UNet's architecture + the hint encoder read from the weights."""
    from diffusers import ControlNetModel

    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    cfg = {k: v for k, v in dict(base_unet_config).items() if k in accepted}
    channels, widths = hint_channels(sd)
    cfg.update(conditioning_channels=channels, conditioning_embedding_out_channels=widths)
    return cfg


def load_controlnet(path: str | os.PathLike, base_unet_config: dict, device="cpu",
                    dtype: torch.dtype = torch.float32):
    """A ControlNetModel from an original-layout file for a base model with ``base_unet_config`` (e.g.
    ``SDModel.unet.config``). Raises ModelFileError naming the file when it is not a ControlNet for that base."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    path = Path(path)
    sd = original_keys(load_state_dict(path))
    if "time_embed.0.weight" not in sd or "input_hint_block.0.weight" not in sd:
        raise ModelFileError(f"{path}: not a ControlNet file (no control_model time_embed / input_hint_block keys)")
    try:
        cfg = controlnet_config(base_unet_config, sd)
        # diffusers' converter assumes SD's 8x hint encoder (conv_out at index 14); the hint encoder is mapped here
        # for any depth, the rest by diffusers
        converted = {k: v for k, v in convert_controlnet_checkpoint(sd, cfg).items()
                     if not k.startswith("controlnet_cond_embedding.")}
        converted.update(_hint_to_diffusers(sd))
        model = ControlNetModel(**cfg)
        missing, unexpected = model.load_state_dict(converted, strict=False)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{path}: does not fit the loaded model's UNet: {str(exc).splitlines()[0][:300]}") from None
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:6])
        raise ModelFileError(f"{path}: does not fit the loaded model's UNet ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected weights: {shown})")
    model.to(device)
    if dtype != torch.float32:
        model.to(dtype)
    return model.eval()
