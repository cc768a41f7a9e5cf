"""Tiny random-weight control model files in the layouts users have (CONTROLNET-REFERENCE §2.2, §2.3), made for the
tiny UNets of model_factory (sd1, sd2, sdxl).

The tiny VAE downsamples 2x, so these hint encoders have one stride-2 convolution (SD's have three, the demo
model's two), and T2I-Adapters pixel-unshuffle by 2 (SD-style) or 4 (SDXL-style) instead of 8 or 16.

Every writer saves a real file in the real key layout (names, prefixes, pickle or safetensors, dtypes) and returns the
diffusers module that holds exactly what the file means (a ControlNetModel or a T2IAdapter), so that tests compare
what the loader built with something the loader did not build. The original-layout names come from
modules.models.ldm_export (the ControlNet) or are written here (T2I-Adapters, style adapter, Control-LoRA).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import torch
from diffusers import ControlNetModel, T2IAdapter
from safetensors.torch import save_file

from modules.models.ldm_export import controlnet_to_original_state_dict, to_ldm_state_dict, unet_to_original_state_dict
from tests.support.model_factory import _perturb_

HINT_WIDTHS = (16, 32)          # hint encoder of a 2x VAE: conv_in, (16 → 16, 16 → 32 stride 2), conv_out
PREFIX = "control_model."


def _save(sd: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    """safetensors for .safetensors, torch.save (a pickle, read back through the restricted unpickler) otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().clone()
          for k, v in sd.items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path


# --------------------------------------------------------------------------------------------------- ControlNets

def tiny_controlnet(unet, seed: int = 0, variant: str = "full", hint_channels: int = 3) -> ControlNetModel:
    """A ControlNet for `unet` with every tensor perturbed (zero convolutions included). `variant` for SDXL-style
    UNets: "full" (the UNet's encoder), "mid" (like diffusers' -mid: attention with zero transformer blocks on the
    first level, one block on the last and in the middle), "small" (no attention; a middle block with zero)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if variant == "full":
            cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=HINT_WIDTHS,
                                           conditioning_channels=hint_channels)
        else:
            types, depth = {"mid": (("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), (0, 1)),
                            "small": (("DownBlock2D", "DownBlock2D"), (0, 0))}[variant]
            keep = set(inspect.signature(ControlNetModel.__init__).parameters)
            cfg = {k: v for k, v in unet.config.items() if k in keep}
            cfg.update(down_block_types=types, transformer_layers_per_block=depth, conditioning_channels=hint_channels,
                       conditioning_embedding_out_channels=HINT_WIDTHS)
            cn = ControlNetModel(**cfg)
        _perturb_(cn)
    return cn.eval()


def original_state_dict(cn: ControlNetModel, prefix: bool = True) -> dict[str, torch.Tensor]:
    sd = controlnet_to_original_state_dict(cn)
    return sd if prefix else {k[len(PREFIX):]: v for k, v in sd.items()}


def write_pth(path, cn) -> Path:
    """ControlNet 1.1 .pth: a pickle, keys with the control_model. prefix, fp32."""
    return _save(original_state_dict(cn), path)


def write_pruned(path, cn, dtype=torch.float16) -> Path:
    """Pruned community safetensors (control_*-fp16.safetensors): no prefix, fp16."""
    return _save(original_state_dict(cn, prefix=False), path, dtype)


def write_full_10(path, cn, components: dict, arch: str = "sd1") -> Path:
    """ControlNet 1.0 full file (control_sd15_*.pth): the whole SD model (model.diffusion_model.*,
    first_stage_model.*, cond_stage_model.*) plus control_model.*, one pickle."""
    sd = to_ldm_state_dict(components["unet"], components["vae"], components["text_encoder"],
                           components.get("text_encoder_2"), arch=arch)
    sd.update(original_state_dict(cn))
    return _save(sd, path)


def write_diffusers_file(path, cn) -> Path:
    """A diffusers-layout ControlNet as one file (ControlNetModel's own names)."""
    return _save(cn.state_dict(), path)


def write_diffusers_folder(folder, cn) -> Path:
    """A diffusers model folder: config.json + diffusion_pytorch_model.safetensors."""
    cn.save_pretrained(str(folder))
    return Path(folder)


def _shared(cn_sd: dict, base: dict) -> list[str]:
    return [k for k in cn_sd if k in base and cn_sd[k].shape == base[k].shape]


def write_difference(path, cn, unet, unchanged: int = 3) -> Path:
    """A difference model (diff_control_sd15_*): a `difference` marker, (ControlNet − UNet) for every encoder weight
    the UNet also has, the hint encoder and zero convolutions as they are. The first `unchanged` shared weights are
    made equal to the UNet's in `cn` and left out of the file, as the exporter leaves out zero differences."""
    cn_sd, base = original_state_dict(cn, prefix=False), unet_to_original_state_dict(unet)
    out: dict[str, torch.Tensor] = {"difference": torch.tensor([])}
    with torch.no_grad():
        for n, k in enumerate(_shared(cn_sd, base)):
            if n < unchanged:
                cn_sd[k].copy_(base[k])          # a view of cn's parameter
            else:
                out[PREFIX + k] = cn_sd[k] - base[k]
    for k, v in cn_sd.items():
        if k not in base:
            out[PREFIX + k] = v
    return _save(out, path)


def write_control_lora(path, unet, seed: int = 0, rank: int = 2, omitted: int = 3) -> tuple[Path, ControlNetModel]:
    """A Control-LoRA file (control-lora-*-rank*.safetensors) against `unet`, and the ControlNet it means: every
    matrix/convolution weight shared with the UNet is the UNet's + up @ down (rank `rank`), stored as `<layer>.up` and
    `<layer>.down`; shared 1-D tensors and the ControlNet's own layers in full; the first `omitted` shared matrices
    are not in the file (they are the UNet's); the `lora_controlnet` marker."""
    cn = tiny_controlnet(unet, seed=seed)
    cn_sd, base = original_state_dict(cn, prefix=False), unet_to_original_state_dict(unet)
    out: dict[str, torch.Tensor] = {"lora_controlnet": torch.tensor([])}
    g = torch.Generator().manual_seed(seed + 1)
    n_matrix = 0
    with torch.no_grad():
        for k in _shared(cn_sd, base):
            w = base[k]
            if w.ndim < 2:
                out[k] = cn_sd[k]
                continue
            n_matrix += 1
            layer = k[: -len(".weight")]
            if n_matrix <= omitted:
                cn_sd[k].copy_(w)
                continue
            up = torch.randn(w.shape[0], rank, *([1] * (w.ndim - 2)), generator=g) * 0.1
            down = torch.randn(rank, *w.shape[1:], generator=g) * 0.1
            cn_sd[k].copy_(w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape))
            out[layer + ".up"], out[layer + ".down"] = up, down
    for k, v in cn_sd.items():
        if k not in base:
            out[k] = v
    return _save(out, path), cn


# --------------------------------------------------------------------------------------------------- T2I-Adapters

def tiny_adapter(arch: str, seed: int = 0, hint_channels: int = 3, light: bool = False,
                 conv_down: bool = False) -> T2IAdapter:
    """diffusers' T2IAdapter laid out for the tiny UNet of `arch` (the reference the loader's adapter must equal):
    sd1 → features 32 @ latent/1, 64 @ /2 (unshuffle 2); sdxl → 64, 128, 128 all @ /2 (unshuffle 4; the third
    goes to the middle block). `conv_down`: stride-2 convolutions instead of average pooling; `light`: the light
    adapter."""
    from diffusers.models.adapter import LightAdapterBlock

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "sdxl":
            ad = T2IAdapter(in_channels=hint_channels, channels=[64, 128, 128], num_res_blocks=2, downscale_factor=4,
                            adapter_type="full_adapter_xl")
            ad.adapter.body[2].downsample = None          # the tiny UNet's middle block is at /2 too
        elif light:
            ad = T2IAdapter(in_channels=hint_channels, channels=[32, 64], num_res_blocks=2, downscale_factor=2,
                            adapter_type="light_adapter")
            ad.adapter.body = ad.adapter.body[:2]         # diffusers adds a last level repeating the widest one
            assert isinstance(ad.adapter.body[1], LightAdapterBlock)
        else:
            ad = T2IAdapter(in_channels=hint_channels, channels=[32, 64], num_res_blocks=2, downscale_factor=2,
                            adapter_type="full_adapter")
        if conv_down:
            for block in ad.adapter.body:
                if block.downsample is not None:
                    c = block.in_conv.in_channels if block.in_conv is not None else block.resnets[0].block1.in_channels
                    block.downsample = torch.nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1)
        _perturb_(ad)
    return ad.eval()


def adapter_original_state_dict(ad: T2IAdapter) -> dict[str, torch.Tensor]:
    """TencentARC's names: full adapters number their res blocks flat (`body.{2i+j}`, in_conv and down_opt.op on the
    level's first), light adapters keep `body.i` with `body.j` inside."""
    light = not hasattr(ad.adapter, "conv_in")
    out = {}
    for k, v in ad.state_dict().items():
        k = k[len("adapter."):]
        if light:
            k = re.sub(r"^body\.(\d+)\.resnets\.(\d+)\.", r"body.\1.body.\2.", k)
        elif m := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            k = f"body.{2 * int(m.group(1)) + int(m.group(2))}.{m.group(3)}"
        elif m := re.match(r"body\.(\d+)\.(in_conv|downsample)\.(.*)", k):
            k = f"body.{2 * int(m.group(1))}.{'in_conv' if m.group(2) == 'in_conv' else 'down_opt.op'}.{m.group(3)}"
        out[k] = v
    return out


def write_adapter(path, ad: T2IAdapter, layout: str = "original") -> Path:
    """"original": TencentARC's .pth layout (t2iadapter_*_sd14v1.pth); "diffusers": diffusers' (adapter. prefix)."""
    return _save(adapter_original_state_dict(ad) if layout == "original" else ad.state_dict(), path)


def write_style_adapter(path, context_dim: int, width: int = 32, tokens: int = 8, layers: int = 2,
                        seed: int = 0) -> Path:
    """t2iadapter_style_sd14v1.pth's layout: style_embedding, ln_pre/ln_post, CLIP residual attention blocks under
    transformer_layes.N (attn.in_proj_*, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2), proj (width × context)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    sd = {"style_embedding": r(1, tokens, width), "proj": r(width, context_dim),
          "ln_pre.weight": 1 + r(width), "ln_pre.bias": r(width), "ln_post.weight": 1 + r(width),
          "ln_post.bias": r(width)}
    for i in range(layers):
        p = f"transformer_layes.{i}."
        sd.update({p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                   p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                   p + "ln_1.weight": 1 + r(width), p + "ln_1.bias": r(width),
                   p + "mlp.c_fc.weight": r(4 * width, width), p + "mlp.c_fc.bias": r(4 * width),
                   p + "mlp.c_proj.weight": r(width, 4 * width), p + "mlp.c_proj.bias": r(width),
                   p + "ln_2.weight": 1 + r(width), p + "ln_2.bias": r(width)})
    return _save(sd, path)


# --------------------------------------------------------------------------------------------------- others

def write_other(path, kind: str, cn: ControlNetModel | None = None) -> Path:
    """Files that are not a supported control model, in their real layouts: "ip_adapter_bin" (a pickle of
    {"image_proj": {...}, "ip_adapter": {...}}), "ip_adapter" (the flat safetensors form), "sparsectrl", "lllite",
    "union" (a ControlNet with xinsir's control_add_embedding), "lora" (a kohya LoRA, not a control model)."""
    t = torch.zeros(4, 4)
    if kind == "ip_adapter_bin":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"image_proj": {"proj.weight": t, "norm.weight": t[0]},
                    "ip_adapter": {"1.to_k_ip.weight": t, "1.to_v_ip.weight": t}}, str(path))
        return path
    sd = {
        "ip_adapter": {"image_proj.proj.weight": t, "ip_adapter.1.to_k_ip.weight": t},
        "sparsectrl": {"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": t[0],
                       "controlnet_cond_embedding.conv_in.weight": t},
        "lllite": {"lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.down.weight": t},
        "lora": {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": t,
                 "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(1.0)},
    }.get(kind)
    if kind == "union":
        sd = dict(original_state_dict(cn, prefix=False), **{"control_add_embedding.linear_1.bias": t[0],
                                                            "task_embedding": t})
    if sd is None:
        raise ValueError(f"unknown kind {kind!r}")
    return _save(sd, path)
