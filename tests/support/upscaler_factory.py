"""Tiny upscaler model files with random weights in the real key layouts of the files users download.

The networks are spandrel's own architecture classes built small (a few features, one block), so every key name and
tensor role is the real one and spandrel detects them from the weights as it does the full-size files:

- ESRGAN, old layout (`model.0.weight`, `model.1.sub.N.RDB1.conv1.0.weight`, `model.3.weight` …): the layout of
  ESRGAN.pth / ESRGAN_4x.pth, which spandrel's RRDBNet keeps;
- Real-ESRGAN RRDBNet (`conv_first`, `body.N.rdb1.conv1`, `conv_body`, `conv_up1`, `conv_up2`, `conv_hr`,
  `conv_last`) inside `{"params_ema": ...}`, as RealESRGAN_x4plus.pth is stored: renamed here from the old layout
  (the same renaming basicsr's conversion documents, the other way);
- Real-ESRGAN SRVGGNetCompact (`body.N.weight`, PReLU `body.N.weight` of one dimension) in `{"params": ...}`;
- SwinIR, DAT, HAT, SCUNet: their classes' state dicts (SwinIR in `{"params_ema": ...}` as its releases are).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from modules.models import spandrel_models


def _arch(path: str):
    spandrel_models.import_spandrel()
    module = __import__(f"spandrel.architectures.{path}", fromlist=["x"])
    return module


def _randomize(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random parameters, scaled by fan-in so that activations keep a sensible range (the image is neither black
    nor white); biases are small noise, other 1-D parameters (norms, PReLU slopes) keep their initial value plus a
    little noise; the same seed gives the same file. Buffers
    (relative position indices, DAT's rpe_biases, masks) stay as the class built them: detection reads them."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    sd = {}
    for k, v in model.state_dict().items():
        if k in params and v.dtype.is_floating_point and v.numel():
            if v.ndim > 1:
                fan_in = v[0].numel()
                sd[k] = (torch.randn(v.shape, generator=gen) / fan_in ** 0.5).to(v.dtype)
            elif k.endswith("bias"):    # conv/linear biases start random in torch: replaced, so files repeat
                sd[k] = 0.01 * torch.randn(v.shape, generator=gen).to(v.dtype)
            else:                       # norm weights (ones), PReLU slopes (0.25): fixed starting values
                sd[k] = v + 0.01 * torch.randn(v.shape, generator=gen).to(v.dtype)
        else:
            sd[k] = v.clone()
    return sd


def esrgan_old_state_dict(scale: int = 4, num_filters: int = 8, num_blocks: int = 1, seed: int = 0) -> dict:
    RRDB = _arch("ESRGAN.__arch.RRDB")
    model = RRDB.RRDBNet(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale)
    return _randomize(model, seed)


def realesrgan_rrdb_state_dict(scale: int = 4, num_filters: int = 8, num_blocks: int = 1, seed: int = 0) -> dict:
    """basicsr's RRDBNet key names (Real-ESRGAN's x4plus files), from the old layout."""
    old = esrgan_old_state_dict(scale, num_filters, num_blocks, seed)
    new = {}
    for k, v in old.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k)
        if m:
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            continue
        m = re.fullmatch(r"model\.(\d+)(?:\.sub\.(\d+))?\.(weight|bias)", k)
        assert m, k
        index, sub, kind = int(m[1]), m[2], m[3]
        if index == 0:
            name = "conv_first"
        elif index == 1 and sub is not None and int(sub) == num_blocks:
            name = "conv_body"
        elif index % 3 == 0:
            name = f"conv_up{index // 3}"
        else:
            name = {index: None, max_index(old) - 2: "conv_hr", max_index(old): "conv_last"}[index]
        new[f"{name}.{kind}"] = v
    return new


def max_index(sd: dict) -> int:
    return max(int(k.split(".")[1]) for k in sd)


def compact_state_dict(scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0) -> dict:
    SRVGG = _arch("Compact.__arch.SRVGG")
    model = SRVGG.SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale,
                                  act_type="prelu")
    return _randomize(model, seed)


def swinir_state_dict(scale: int = 2, seed: int = 0) -> dict:
    SwinIR = _arch("SwinIR.__arch.SwinIR")
    model = SwinIR.SwinIR(upscale=scale, in_chans=3, img_size=16, window_size=4, img_range=1.0, depths=[1],
                          embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler="nearest+conv",
                          resi_connection="1conv")
    return _randomize(model, seed)


def dat_state_dict(scale: int = 2, seed: int = 0) -> dict:
    DAT = _arch("DAT.__arch.DAT")
    model = DAT.DAT(upscale=scale, in_chans=3, img_size=16, img_range=1.0, split_size=[2, 4], depth=[1],
                    embed_dim=32, num_heads=[2], expansion_factor=2, resi_connection="1conv",
                    upsampler="pixelshuffle")
    return _randomize(model, seed)


def hat_state_dict(scale: int = 2, seed: int = 0) -> dict:
    HAT = _arch("HAT.__arch.HAT")
    model = HAT.HAT(upscale=scale, in_chans=3, img_size=16, window_size=4, compress_ratio=3, squeeze_factor=4,
                    conv_scale=0.01, overlap_ratio=0.5, img_range=1.0, depths=[1], embed_dim=12, num_heads=[2],
                    mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv")
    return _randomize(model, seed)


def scunet_state_dict(seed: int = 0) -> dict:
    SCUNet = _arch("SCUNet.__arch.SCUNet")
    model = SCUNet.SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64)
    return _randomize(model, seed)


KINDS = {
    "esrgan": lambda **kw: esrgan_old_state_dict(**kw),
    "realesrgan": lambda **kw: {"params_ema": realesrgan_rrdb_state_dict(**kw)},
    "compact": lambda **kw: {"params": compact_state_dict(**kw)},
    "swinir": lambda **kw: {"params_ema": swinir_state_dict(**kw)},
    "dat": lambda **kw: {"params": dat_state_dict(**kw)},
    "hat": lambda **kw: {"params_ema": hat_state_dict(**kw)},
    "scunet": lambda **kw: scunet_state_dict(**kw),
}


def write(path: str | Path, kind: str, **kwargs) -> Path:
    """A tiny model file of `kind` (see KINDS) at `path` (.pth: a zip pickle of tensors; .safetensors: flat)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = KINDS[kind](**kwargs)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        flat = next(iter(sd.values())) if len(sd) == 1 and isinstance(next(iter(sd.values())), dict) else sd
        save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    else:
        torch.save(sd, str(path))
    return path
