"""ControlNet model files in the original key layout (lllyasviel/ControlNet), loaded as diffusers ControlNetModel.

What such a file holds (keys with or without the ``control_model.`` prefix; .safetensors, or a pickle read with the
restricted unpickler of safe_load):

* a copy of the base UNet's encoder: ``time_embed``, ``input_blocks``, ``middle_block``;
* ``input_hint_block``: the control-image encoder, convolutions at even indices with SiLU between them; as many
  of them have stride 2 as the autoencoder downsamples (three for SD 1.x: 0..14; two for the f4 demo model: 0..10),
  so the control image has the size of the generated image;
* ``zero_convs.N.0`` (one per input block) and ``middle_block_out.0``: the outputs added to the UNet's skip
  connections and middle block.

``load_controlnet`` takes the architecture from the base model's UNet config plus what the hint encoder's weights say
(input channels, widths); modules.controlnet.control_models reads all of it from the weights and uses the key
conversions here. Conversion of the keys is diffusers' own ``convert_controlnet_checkpoint`` (completed by
``to_diffusers_state_dict``); the reverse (export) is ``ldm_export.controlnet_to_original_state_dict``, and
``diffusers_to_original`` renames a diffusers-layout file to the original names.
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


def layers_per_block(sd: dict[str, torch.Tensor]) -> int:
    """Input blocks per level: the blocks before the first downsampler (``input_blocks.N.0.op``)."""
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    ops = [b for b in blocks if f"input_blocks.{b}.0.op.weight" in sd]
    return (ops[0] if ops else len(blocks)) - 1


def to_diffusers_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original-layout ControlNet weights (no prefix) under ControlNetModel's names: diffusers'
    ``convert_controlnet_checkpoint`` for the encoder, plus what it leaves out: any hint-encoder depth (it assumes SD's
    conv_out at index 14) and SDXL's ``label_emb``. Returns (converted, original keys nothing took), so that a
    loader can refuse unknown weights instead of dropping them."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    converted = {k: v for k, v in convert_controlnet_checkpoint(sd, {"layers_per_block": layers_per_block(sd)}).items()
                 if v is not None and not k.startswith("controlnet_cond_embedding.")}
    converted.update(_hint_to_diffusers(sd))
    for i, j in ((0, 1), (2, 2)):
        for p in ("weight", "bias"):
            if f"label_emb.0.{i}.{p}" in sd:
                converted[f"add_embedding.linear_{j}.{p}"] = sd[f"label_emb.0.{i}.{p}"]
    taken = {id(v) for v in converted.values()}
    return converted, [k for k, v in sd.items() if id(v) not in taken]


_RESNET_NAMES = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                 ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def diffusers_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers-layout ControlNet (ControlNetModel's names) under the original names (CONTROLNET-REFERENCE §2.2
    rule 3); names it does not know are kept as they are, so that loading reports them."""
    lpb = len({m.group(1) for k in sd if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))})
    n_hint = len({m.group(1) for k in sd if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))})

    def rename(k: str) -> str:
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k):
            i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            idx = i * (lpb + 1) + j + 1
            if kind == "attentions":
                return f"input_blocks.{idx}.1.{rest}"
            return f"input_blocks.{idx}.0.{_resnet(rest)}"
        if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            return f"input_blocks.{(int(m.group(1)) + 1) * (lpb + 1)}.0.op.{m.group(2)}"
        if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", k):
            return f"middle_block.{2 * int(m.group(1))}.{_resnet(m.group(2))}"
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", k):
            return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
        if m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", k):
            return f"input_hint_block.{2 * int(m.group(1)) + 2}.{m.group(2)}"
        for old, new in (("mid_block.attentions.0.", "middle_block.1."),
                         ("controlnet_mid_block.", "middle_block_out.0."),
                         ("controlnet_cond_embedding.conv_in.", "input_hint_block.0."),
                         ("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * n_hint + 2}."),
                         ("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
                         ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
                         ("conv_in.", "input_blocks.0.0.")):
            if k.startswith(old):
                return new + k[len(old):]
        return k

    return {rename(k): v for k, v in sd.items()}


def _resnet(rest: str) -> str:
    for old, new in _RESNET_NAMES:
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


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
    ``SDModel.unet.config``). Raises ModelFileError naming the file when it is not a ControlNet for that base.
    (The web UI's loader, modules.controlnet.control_models, reads the architecture from the weights and handles
    every file family; this one serves the demo model's tools.)"""
    from diffusers import ControlNetModel

    path = Path(path)
    sd = original_keys(load_state_dict(path))
    if "time_embed.0.weight" not in sd or "input_hint_block.0.weight" not in sd:
        raise ModelFileError(f"{path}: not a ControlNet file (no control_model time_embed / input_hint_block keys)")
    try:
        cfg = controlnet_config(base_unet_config, sd)
        converted, _ = to_diffusers_state_dict(sd)
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
