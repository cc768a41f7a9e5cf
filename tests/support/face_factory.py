"""Random-weight face-restoration files in the published layouts:

- `GFPGANv1.4.pth`: `{"params_ema": …}` with GFPGANv1Clean's keys (made by spandrel's own class; the size is fixed
  by the 512×512 input, so the file is real-size: 87 M parameters, ~350 MB).
- `codeformer-v0.1.0.pth`: `{"params_ema": …}` with CodeFormer's keys; the transformer part is small (64-wide, one
  layer, 32 codes), the VQGAN encoder/decoder are fixed by the architecture (~300 MB).
- `detection_Resnet50_Final.pth`: facexlib's RetinaFace keys (torchvision's ResNet names under `body.`, `fpn.`,
  `ssh1..3`, `ClassHead/BboxHead/LandmarkHead.N.conv1x1`), written from a key list here (not from our network), with
  small widths.
"""
from __future__ import annotations

from pathlib import Path

import torch


def write_gfpgan(path: Path, seed: int = 0) -> Path:
    from modules.models import spandrel_models
    spandrel_models.import_spandrel()
    from spandrel.architectures.GFPGAN import GFPGAN
    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def write_codeformer(path: Path, seed: int = 0) -> Path:
    from modules.models import spandrel_models
    spandrel_models.import_spandrel(extra_arches=True)
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
    torch.manual_seed(seed)
    net = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=32, latent_size=256,
                     connect_list=["32", "64", "128", "256"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def _conv_bn(sd: dict, prefix: str, conv: str, bn: str, inp: int, out: int, k: int, gen) -> None:
    sd[f"{prefix}{conv}.weight"] = torch.randn(out, inp, k, k, generator=gen) * (2.0 / (inp * k * k)) ** 0.5
    sd[f"{prefix}{bn}.weight"] = 1 + 0.1 * torch.randn(out, generator=gen)
    sd[f"{prefix}{bn}.bias"] = 0.1 * torch.randn(out, generator=gen)
    sd[f"{prefix}{bn}.running_mean"] = 0.1 * torch.randn(out, generator=gen)
    sd[f"{prefix}{bn}.running_var"] = 1 + 0.1 * torch.rand(out, generator=gen)
    sd[f"{prefix}{bn}.num_batches_tracked"] = torch.tensor(100)


def retinaface_state_dict(stem: int = 8, widths=(4, 8, 16, 32), blocks=(1, 2, 1, 1), out: int = 16,
                          seed: int = 0, no_faces: bool = True) -> dict[str, torch.Tensor]:
    """facexlib's RetinaFace (ResNet) keys with the given widths; (64, (64,128,256,512), (3,4,6,3), 256) is the
    published file's. Plain random weights find "faces" in a face-like picture now and then (each one a 512×512
    restorer pass, seconds to a minute here); `no_faces` makes the detector answer "background" everywhere."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv_bn(sd, "body.", "conv1", "bn1", 3, stem, 7, gen)
    inplanes = stem
    for n, (width, count) in enumerate(zip(widths, blocks), start=1):
        for b in range(count):
            p = f"body.layer{n}.{b}."
            _conv_bn(sd, p, "conv1", "bn1", inplanes, width, 1, gen)
            _conv_bn(sd, p, "conv2", "bn2", width, width, 3, gen)
            _conv_bn(sd, p, "conv3", "bn3", width, width * 4, 1, gen)
            if b == 0:
                _conv_bn(sd, p, "downsample.0", "downsample.1", inplanes, width * 4, 1, gen)
            inplanes = width * 4
    stage_out = [w * 4 for w in widths[1:]]
    for i, inp in enumerate(stage_out, start=1):
        _conv_bn(sd, f"fpn.output{i}.", "0", "1", inp, out, 1, gen)
    for i in (1, 2):
        _conv_bn(sd, f"fpn.merge{i}.", "0", "1", out, out, 3, gen)
    for s in (1, 2, 3):
        p = f"ssh{s}."
        _conv_bn(sd, p + "conv3X3.", "0", "1", out, out // 2, 3, gen)
        _conv_bn(sd, p + "conv5X5_1.", "0", "1", out, out // 4, 3, gen)
        _conv_bn(sd, p + "conv5X5_2.", "0", "1", out // 4, out // 4, 3, gen)
        _conv_bn(sd, p + "conv7X7_2.", "0", "1", out // 4, out // 4, 3, gen)
        _conv_bn(sd, p + "conv7x7_3.", "0", "1", out // 4, out // 4, 3, gen)
    for head, per_anchor in (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)):
        for i in range(3):
            sd[f"{head}.{i}.conv1x1.weight"] = 0.1 * torch.randn(2 * per_anchor, out, 1, 1, generator=gen)
            sd[f"{head}.{i}.conv1x1.bias"] = 0.1 * torch.randn(2 * per_anchor, generator=gen)
    if no_faces:   # background wins everywhere by a wide margin: a detector that reliably finds nothing
        for i in range(3):
            sd[f"ClassHead.{i}.conv1x1.weight"] *= 0.01
            sd[f"ClassHead.{i}.conv1x1.bias"] = torch.tensor([8.0, -8.0, 8.0, -8.0])
    return sd


def write_retinaface(path: Path, seed: int = 0, **widths) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(retinaface_state_dict(seed=seed, **widths), path)
    return path
