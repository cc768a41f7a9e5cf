"""ControlNet files in the original key layout: export from diffusers, read back through diffusers' own converter,
and the clear errors for files that are not a ControlNet for the loaded model."""
from __future__ import annotations

import pickle

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from modules.models.controlnet import hint_channels, load_controlnet, original_keys
from modules.models.ldm_export import controlnet_to_original_state_dict, save_checkpoint
from modules.models.safe_load import ModelFileError
from tests.support.model_factory import _perturb_, tiny_unet_config


def _controlnet(hint_widths, seed=0):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config("sd1"))
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint_widths)
    _perturb_(cn)  # zero convolutions start at 0: give every tensor its own values so swapped keys are caught
    return unet, cn


@pytest.mark.parametrize("hint_widths, last_hint", [((16, 32, 96, 256), 14), ((16, 32, 96), 10)])
def test_original_layout_round_trip(tmp_path, hint_widths, last_hint):
    """SD's 8x hint encoder (input_hint_block 0..14) and the demo model's 4x one (0..10)."""
    unet, cn = _controlnet(hint_widths)
    sd = controlnet_to_original_state_dict(cn)
    assert all(k.startswith("control_model.") for k in sd)
    keys = original_keys(sd)
    # the original ControlNet names
    for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "middle_block.1.proj_in.weight",
              f"input_hint_block.{last_hint}.weight", "zero_convs.0.0.weight", "middle_block_out.0.weight"):
        assert k in keys, k
    assert f"input_hint_block.{last_hint + 2}.weight" not in keys
    assert hint_channels(keys) == (3, hint_widths)
    path = tmp_path / "control_tiny_canny.safetensors"
    save_checkpoint(sd, path)
    back = load_controlnet(path, unet.config)
    src, dst = cn.state_dict(), back.state_dict()
    assert src.keys() == dst.keys()
    for k in src:
        assert torch.equal(src[k], dst[k]), k

    x = torch.randn(1, 4, 8, 8)
    hint = torch.rand(1, 3, 8 * 2 ** (len(hint_widths) - 1), 8 * 2 ** (len(hint_widths) - 1))
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        a = cn(x, 10, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
        b = back(x, 10, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
    assert torch.equal(a[1], b[1]) and all(torch.equal(p, q) for p, q in zip(a[0], b[0]))


def test_file_without_prefix_and_pickle_file(tmp_path):
    """ControlNet 1.1 .pth files have no control_model. prefix; pickles go through the restricted unpickler."""
    unet, cn = _controlnet((16, 32, 96))
    sd = {k[len("control_model."):]: v for k, v in controlnet_to_original_state_dict(cn).items()}
    path = tmp_path / "control_v11p_tiny_canny.pth"
    torch.save({k: v.clone() for k, v in sd.items()}, path)
    back = load_controlnet(path, unet.config)
    assert torch.equal(back.controlnet_mid_block.weight, cn.controlnet_mid_block.weight)


def test_bad_controlnet_files_are_named(tmp_path):
    unet, cn = _controlnet((16, 32, 96))
    # a checkpoint that is not a ControlNet
    not_cn = tmp_path / "some_lora.safetensors"
    save_checkpoint({"lora_unet_down.alpha": torch.ones(1)}, not_cn)
    with pytest.raises(ModelFileError, match="some_lora.safetensors: not a ControlNet file"):
        load_controlnet(not_cn, unet.config)
    # a ControlNet for another base model (wider UNet)
    other_cfg = dict(tiny_unet_config("sd1"), block_out_channels=[64, 64])
    with pytest.raises(ModelFileError, match="does not fit the loaded model's UNet"):
        path = tmp_path / "control_other.safetensors"
        save_checkpoint(controlnet_to_original_state_dict(cn), path)
        load_controlnet(path, other_cfg)

    # a pickle that would run code when loaded
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = tmp_path / "control_evil.pth"
    evil.write_bytes(pickle.dumps({"time_embed.0.weight": Evil()}))
    with pytest.raises(ModelFileError, match="control_evil.pth"):
        load_controlnet(evil, unet.config)
    assert not (tmp_path / "pwned").exists()
