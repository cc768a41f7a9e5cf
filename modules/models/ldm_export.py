"""Export diffusers/transformers components to one state dict in the original LDM layout.

(Over 400 lines on purpose: the UNet, VAE, CLIP, OpenCLIP and ControlNet key maps are one reverse mapping of
diffusers' single-file loader and are read side by side with it; split, they would be harder to check.)

This is the reverse of what ``diffusers.loaders.single_file_utils`` does when it loads a
single-file Stable Diffusion checkpoint (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``).  The produced dict uses the same keys an A1111-style
``.safetensors``/``.ckpt`` file has:

* UNet under ``model.diffusion_model.`` (``input_blocks``/``middle_block``/``output_blocks``),
* VAE under ``first_stage_model.`` (``encoder.down.*``/``decoder.up.*``, attention as 1x1 convs),
* text encoder(s):

  - ``sd1``:  HF CLIP under ``cond_stage_model.transformer.text_model.``
  - ``sd2``:  OpenCLIP layout under ``cond_stage_model.model.``
  - ``sdxl``: HF CLIP-L under ``conditioner.embedders.0.transformer.text_model.`` and OpenCLIP
    bigG under ``conditioner.embedders.1.model.`` (with its ``text_projection``).

Inpainting models are ``sd1``/``sd2`` with a 9-input-channel UNet; the keys are the same.

Every parameter of every component is mapped exactly once; anything the exporter does not
know (e.g. ``class_embedding`` of the x4 upscaler, ``encoder_hid_proj``) raises ``ValueError``
instead of being silently dropped.

The returned tensors are ``detach()``-ed views that share storage with the models' parameters
(no copy of a multi-GB model); clone them if you intend to modify them in place.  Tensors that
have to be computed (concatenated ``in_proj``, transposed ``text_projection``, 4-D VAE attention
weights, the identity projection) are new tensors.

Things that real LDM files may contain but this exporter does not write (loaders ignore them):
DDPM schedule buffers (``betas``, ``alphas_cumprod``, ...), EMA weights (``model_ema.*``),
``embeddings.position_ids`` (a non-persistent buffer in current transformers) and OpenCLIP's
``logit_scale``.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping

import torch

from modules import atomic_file

__all__ = ["ARCHS", "to_ldm_state_dict", "unet_to_original_state_dict", "controlnet_to_original_state_dict",
           "save_checkpoint"]

ARCHS = ("sd1", "sd2", "sdxl")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# diffusers ResnetBlock2D child name -> LDM ResBlock child name (UNet)
_UNET_RESNET_RENAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)

# diffusers ResnetBlock2D child name -> LDM ResnetBlock child name (VAE)
_VAE_RESNET_RENAMES = (("conv_shortcut", "nin_shortcut"),)

# diffusers Attention (VAE mid block) -> LDM AttnBlock
_VAE_ATTN_RENAMES = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


class _Mapper:
    """Collects renamed tensors from one component and checks that every key is used once."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], dst_prefix: str, what: str):
        self.sd = dict(state_dict)
        self.dst_prefix = dst_prefix
        self.what = what
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def _put(self, dst: str, tensor: torch.Tensor) -> None:
        key = self.dst_prefix + dst
        if key in self.out:
            raise ValueError(f"{self.what}: LDM key {key!r} produced twice")
        self.out[key] = tensor

    def _take(self, src: str) -> torch.Tensor:
        if src not in self.sd:
            raise ValueError(f"{self.what}: missing parameter {src!r}")
        if src in self.used:
            raise ValueError(f"{self.what}: parameter {src!r} mapped twice")
        self.used.add(src)
        return self.sd[src].detach()

    def has(self, src: str) -> bool:
        return src in self.sd

    def tensor(
        self, src: str, dst: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        t = self._take(src)
        self._put(dst, transform(t) if transform else t)

    def concat(self, srcs: Iterable[str], dst: str) -> None:
        self._put(dst, torch.cat([self._take(s) for s in srcs], dim=0))

    def module(
        self,
        src: str,
        dst: str,
        renames: Iterable[tuple[str, str]] = (),
        transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Map every key under ``src.`` to ``dst.``, renaming the leading child names."""
        renames = tuple(renames)
        keys = [k for k in self.sd if k.startswith(src + ".") and k not in self.used]
        if not keys:
            raise ValueError(f"{self.what}: no parameters under {src!r}")
        for k in keys:
            rest = k[len(src) + 1 :]
            for old, new in renames:
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            t = self._take(k)
            self._put(f"{dst}.{rest}", transform(rest, t) if transform else t)

    def finish(self) -> dict[str, torch.Tensor]:
        left = sorted(set(self.sd) - self.used)
        if left:
            shown = ", ".join(left[:10]) + (" ..." if len(left) > 10 else "")
            raise ValueError(f"{self.what}: {len(left)} parameter(s) have no LDM mapping: {shown}")
        return self.out


def _int_layers_per_block(value, what: str) -> int:
    if isinstance(value, int):
        return value
    values = set(value)
    if len(values) == 1:
        return values.pop()
    # diffusers' convert_ldm_unet_checkpoint only understands one int for all blocks
    raise ValueError(f"{what}: per-block layers_per_block {value!r} is not supported")


# --------------------------------------------------------------------------- UNet


def _map_unet_encoder(m: _Mapper, model, cfg, what: str) -> int:
    """Time embedding, conv_in, input_blocks and middle_block: the part a UNet and a ControlNet share (same names in
    diffusers' UNet2DConditionModel and ControlNetModel, same LDM keys). Returns layers_per_block."""
    lpb = _int_layers_per_block(cfg.layers_per_block, what)
    down_types = list(cfg.down_block_types)
    n_blocks = len(down_types)
    if len(cfg.block_out_channels) != n_blocks:
        raise ValueError(f"{what}: down block count and block_out_channels disagree")

    m.module("time_embedding.linear_1", "time_embed.0")
    m.module("time_embedding.linear_2", "time_embed.2")
    if cfg.addition_embed_type == "text_time":  # SDXL: label_emb.0 is Sequential(Linear, SiLU, Linear)
        m.module("add_embedding.linear_1", "label_emb.0.0")
        m.module("add_embedding.linear_2", "label_emb.0.2")
    elif cfg.addition_embed_type is not None:
        raise ValueError(f"{what}: addition_embed_type {cfg.addition_embed_type!r} is not supported")
    if cfg.class_embed_type in ("timestep", "projection"):
        m.module("class_embedding.linear_1", "label_emb.0.0")
        m.module("class_embedding.linear_2", "label_emb.0.2")
    m.module("conv_in", "input_blocks.0.0")

    # input_blocks: 0 is conv_in; every down block contributes `lpb` [resnet(, attention)]
    # entries and, except for the last block, one extra entry holding the downsampler (`.0.op`).
    idx = 1
    for b, block_type in enumerate(down_types):
        has_attn = "CrossAttn" in block_type
        for j in range(lpb):
            m.module(f"down_blocks.{b}.resnets.{j}", f"input_blocks.{idx}.0", _UNET_RESNET_RENAMES)
            if has_attn:
                m.module(f"down_blocks.{b}.attentions.{j}", f"input_blocks.{idx}.1")
            idx += 1
        if b < n_blocks - 1:
            m.module(f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{idx}.0.op")
            idx += 1

    # middle_block: resnet, attention, resnet (UNetMidBlock2DCrossAttn); diffusers' converter
    # treats even indices as resnets and odd ones as attentions.
    if cfg.mid_block_type != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"{what}: mid_block_type {cfg.mid_block_type!r} is not supported")
    n_mid_attn = len(model.mid_block.attentions)
    for k in range(n_mid_attn + 1):
        m.module(f"mid_block.resnets.{k}", f"middle_block.{2 * k}", _UNET_RESNET_RENAMES)
        if k < n_mid_attn:
            m.module(f"mid_block.attentions.{k}", f"middle_block.{2 * k + 1}")
    return lpb


def _unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    cfg = unet.config
    m = _Mapper(unet.state_dict(), UNET_PREFIX, "unet")
    lpb = _map_unet_encoder(m, unet, cfg, "unet")
    up_types = list(cfg.up_block_types)
    n_blocks = len(cfg.down_block_types)
    if len(up_types) != n_blocks:
        raise ValueError("unet: down/up block counts disagree")

    # output_blocks: every up block has lpb + 1 [resnet(, attention)(, upsampler)] entries; the
    # upsampler sits in the last entry of every up block but the last, at index 1 or 2 depending
    # on whether the entry has an attention.
    for b, block_type in enumerate(up_types):
        has_attn = "CrossAttn" in block_type
        for j in range(lpb + 1):
            idx = b * (lpb + 1) + j
            m.module(f"up_blocks.{b}.resnets.{j}", f"output_blocks.{idx}.0", _UNET_RESNET_RENAMES)
            if has_attn:
                m.module(f"up_blocks.{b}.attentions.{j}", f"output_blocks.{idx}.1")
            if b < n_blocks - 1 and j == lpb:
                m.module(f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{idx}.{2 if has_attn else 1}.conv")

    m.module("conv_norm_out", "out.0")
    m.module("conv_out", "out.2")
    return m.finish()


def unet_to_original_state_dict(unet) -> dict[str, torch.Tensor]:
    """A diffusers UNet's weights under their LDM names without the ``model.diffusion_model.`` prefix (views, no
    copy): the names ControlNet difference and Control-LoRA files use for the base weights they modify."""
    return {k[len(UNET_PREFIX):]: v for k, v in _unet_to_ldm(unet).items()}


# --------------------------------------------------------------------------- ControlNet

CONTROLNET_PREFIX = "control_model."


def controlnet_to_original_state_dict(controlnet) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel in the original ControlNet layout (lllyasviel/ControlNet ``cldm``), keys under
    ``control_model.``: the UNet-encoder copy (``time_embed``, ``input_blocks``, ``middle_block``), the hint encoder
    ``input_hint_block`` (convolutions at even indices, SiLU between them), one zero convolution per input block
    (``zero_convs.N.0``) and ``middle_block_out.0``. The reverse of diffusers' ``convert_controlnet_checkpoint``."""
    cfg = controlnet.config
    m = _Mapper(controlnet.state_dict(), CONTROLNET_PREFIX, "controlnet")
    _map_unet_encoder(m, controlnet, cfg, "controlnet")
    n_hint = len(cfg.conditioning_embedding_out_channels)
    m.module("controlnet_cond_embedding.conv_in", "input_hint_block.0")
    for i in range(2 * (n_hint - 1)):
        m.module(f"controlnet_cond_embedding.blocks.{i}", f"input_hint_block.{2 * (i + 1)}")
    m.module("controlnet_cond_embedding.conv_out", f"input_hint_block.{2 * (2 * n_hint - 1)}")
    for i in range(len(controlnet.controlnet_down_blocks)):
        m.module(f"controlnet_down_blocks.{i}", f"zero_convs.{i}.0")
    m.module("controlnet_mid_block", "middle_block_out.0")
    return m.finish()


# --------------------------------------------------------------------------- VAE


def _vae_attn_transform(rest: str, t: torch.Tensor) -> torch.Tensor:
    # LDM's AttnBlock uses 1x1 Conv2d for q/k/v/proj_out; diffusers uses Linear [C, C].
    if rest.endswith(".weight") and t.ndim == 2:
        return t.reshape(*t.shape, 1, 1)
    return t


def _vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    cfg = vae.config
    m = _Mapper(vae.state_dict(), VAE_PREFIX, "vae")
    lpb = _int_layers_per_block(cfg.layers_per_block, "vae")
    n_blocks = len(cfg.down_block_types)
    if len(cfg.up_block_types) != n_blocks:
        raise ValueError("vae: down/up block counts disagree")

    def mid(part: str) -> None:
        m.module(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET_RENAMES)
        m.module(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTN_RENAMES, _vae_attn_transform)
        m.module(f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET_RENAMES)

    m.module("encoder.conv_in", "encoder.conv_in")
    for i in range(n_blocks):
        for j in range(lpb):
            m.module(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", _VAE_RESNET_RENAMES)
        if i < n_blocks - 1:
            m.module(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv")
    mid("encoder")
    m.module("encoder.conv_norm_out", "encoder.norm_out")
    m.module("encoder.conv_out", "encoder.conv_out")

    m.module("decoder.conv_in", "decoder.conv_in")
    mid("decoder")
    # LDM numbers decoder levels by resolution (up.0 is the full-resolution level, run last);
    # diffusers numbers them in execution order.
    for i in range(n_blocks):
        level = n_blocks - 1 - i
        for j in range(lpb + 1):
            m.module(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{level}.block.{j}", _VAE_RESNET_RENAMES)
        if i < n_blocks - 1:
            m.module(f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{level}.upsample.conv")
    m.module("decoder.conv_norm_out", "decoder.norm_out")
    m.module("decoder.conv_out", "decoder.conv_out")

    if m.has("quant_conv.weight"):
        m.module("quant_conv", "quant_conv")
    if m.has("post_quant_conv.weight"):
        m.module("post_quant_conv", "post_quant_conv")
    return m.finish()


# --------------------------------------------------------------------------- text encoders


def _hf_clip_state_dict(text_encoder) -> dict[str, torch.Tensor]:
    """State dict with ``text_model.`` keys whether or not the model is the flattened
    transformers >= 5.6 ``CLIPTextModel`` (``CLIPTextModelWithProjection`` keeps the wrapper)."""
    sd = text_encoder.state_dict()
    if not hasattr(text_encoder, "text_model"):
        sd = {"text_model." + k: v for k, v in sd.items()}
    # old transformers persisted this buffer; it is not a weight and current CLIP rejects it
    sd.pop("text_model.embeddings.position_ids", None)
    return sd


def _hf_clip_to_ldm(text_encoder, prefix: str, what: str) -> dict[str, torch.Tensor]:
    m = _Mapper(_hf_clip_state_dict(text_encoder), prefix, what)
    for k in list(m.sd):
        m.tensor(k, k)
    return m.finish()


def _extra_openclip_layer(template: Mapping[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """A random resblock shaped like ``template`` (LDM names relative to the resblock)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in template.items():
        if name.startswith(("ln_1.", "ln_2.")) and name.endswith(".weight"):
            v = torch.ones(t.shape)
        elif name.endswith("bias"):
            v = torch.zeros(t.shape)
        else:
            v = torch.randn(t.shape, generator=gen) * 0.02
        out[name] = v.to(t.dtype)
    return out


def _hf_clip_to_openclip(
    text_encoder, prefix: str, what: str, *, require_projection: bool, extra_last_layer: bool
) -> dict[str, torch.Tensor]:
    m = _Mapper(_hf_clip_state_dict(text_encoder), prefix, what)
    n_layers = text_encoder.config.num_hidden_layers
    hidden = text_encoder.config.hidden_size

    m.tensor("text_model.embeddings.token_embedding.weight", "token_embedding.weight")
    # OpenCLIP keeps the position table as a bare [n_ctx, width] parameter
    m.tensor("text_model.embeddings.position_embedding.weight", "positional_embedding")
    for i in range(n_layers):
        s = f"text_model.encoder.layers.{i}."
        d = f"transformer.resblocks.{i}."
        m.tensor(s + "layer_norm1.weight", d + "ln_1.weight")
        m.tensor(s + "layer_norm1.bias", d + "ln_1.bias")
        # nn.MultiheadAttention packs q, k, v along dim 0 in that order
        m.concat([s + f"self_attn.{p}_proj.weight" for p in "qkv"], d + "attn.in_proj_weight")
        m.concat([s + f"self_attn.{p}_proj.bias" for p in "qkv"], d + "attn.in_proj_bias")
        m.tensor(s + "self_attn.out_proj.weight", d + "attn.out_proj.weight")
        m.tensor(s + "self_attn.out_proj.bias", d + "attn.out_proj.bias")
        m.tensor(s + "layer_norm2.weight", d + "ln_2.weight")
        m.tensor(s + "layer_norm2.bias", d + "ln_2.bias")
        m.tensor(s + "mlp.fc1.weight", d + "mlp.c_fc.weight")
        m.tensor(s + "mlp.fc1.bias", d + "mlp.c_fc.bias")
        m.tensor(s + "mlp.fc2.weight", d + "mlp.c_proj.weight")
        m.tensor(s + "mlp.fc2.bias", d + "mlp.c_proj.bias")
    m.tensor("text_model.final_layer_norm.weight", "ln_final.weight")
    m.tensor("text_model.final_layer_norm.bias", "ln_final.bias")

    # OpenCLIP applies `x @ text_projection`, i.e. [hidden, proj] = Linear.weight.T
    if m.has("text_projection.weight"):
        m.tensor("text_projection.weight", "text_projection", lambda t: t.T.contiguous())
    elif require_projection:
        raise ValueError(f"{what}: needs a CLIPTextModelWithProjection (text_projection)")
    else:
        ref = m.sd["text_model.final_layer_norm.weight"]
        m._put("text_projection", torch.eye(hidden, dtype=ref.dtype))

    out = m.finish()
    if extra_last_layer and n_layers > 0:
        last = f"{prefix}transformer.resblocks.{n_layers - 1}."
        template = {k[len(last) :]: v for k, v in out.items() if k.startswith(last)}
        new = f"{prefix}transformer.resblocks.{n_layers}."
        out.update({new + k: v for k, v in _extra_openclip_layer(template).items()})
    return out


# --------------------------------------------------------------------------- public API


def to_ldm_state_dict(
    unet,
    vae,
    text_encoder,
    text_encoder_2=None,
    *,
    arch: str,
    extra_last_layer: bool = False,
) -> dict[str, torch.Tensor]:
    """Merge diffusers/transformers components into one LDM-layout state dict.

    ``arch`` is ``"sd1"``, ``"sd2"`` or ``"sdxl"`` (inpainting = sd1/sd2 with a 9-channel UNet).

    ``text_encoder`` is a transformers ``CLIPTextModel`` (flattened or not); for ``sdxl``
    ``text_encoder_2`` must be a ``CLIPTextModelWithProjection`` (OpenCLIP bigG).

    SD2 only: real SD2 files carry one transformer layer more than diffusers' text encoder
    (diffusers drops the last OpenCLIP layer because SD2 conditions on the penultimate one).
    With ``extra_last_layer=True`` a deterministic random layer shaped like the last one
    (LayerNorm weight 1, biases 0, other weights N(0, 0.02), seed 0) is appended as
    ``transformer.resblocks.<num_hidden_layers>``.  Note that diffusers' loader only skips
    that layer when it is index 23 (the real SD2 size); for other sizes it converts it into an
    unexpected ``encoder.layers.<n>`` entry.  SD2's ``text_projection`` is written as an identity
    matrix when the text encoder has none (diffusers ignores it for ``cond_stage_model.model.``).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, not {arch!r}")
    if arch == "sdxl" and text_encoder_2 is None:
        raise ValueError("sdxl needs text_encoder_2 (OpenCLIP bigG as CLIPTextModelWithProjection)")
    if arch != "sdxl" and text_encoder_2 is not None:
        raise ValueError(f"{arch} has a single text encoder; text_encoder_2 must be None")
    if extra_last_layer and arch != "sd2":
        raise ValueError("extra_last_layer only applies to sd2")

    parts = [_unet_to_ldm(unet), _vae_to_ldm(vae)]
    if arch == "sd1":
        parts.append(_hf_clip_to_ldm(text_encoder, SD1_CLIP_PREFIX, "text_encoder"))
    elif arch == "sd2":
        parts.append(
            _hf_clip_to_openclip(
                text_encoder,
                SD2_OPEN_CLIP_PREFIX,
                "text_encoder",
                require_projection=False,
                extra_last_layer=extra_last_layer,
            )
        )
    else:
        parts.append(_hf_clip_to_ldm(text_encoder, SDXL_CLIP_PREFIX, "text_encoder"))
        parts.append(
            _hf_clip_to_openclip(
                text_encoder_2,
                SDXL_OPEN_CLIP_PREFIX,
                "text_encoder_2",
                require_projection=True,
                extra_last_layer=False,
            )
        )

    out: dict[str, torch.Tensor] = {}
    for part in parts:
        clash = out.keys() & part.keys()
        if clash:
            raise ValueError(f"duplicate LDM keys: {sorted(clash)[:5]}")
        out.update(part)
    return out


def _prepare_for_save(state_dict: Mapping[str, torch.Tensor], dtype) -> dict[str, torch.Tensor]:
    out = {}
    seen_storages = set()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        # safetensors refuses tensors that share memory, and torch.save would write whole
        # storages for views: give every tensor its own exactly-sized storage.
        if ptr in seen_storages or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        seen_storages.add(ptr)
        out[k] = t
    return out


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``state_dict`` as ``.safetensors`` (flat) or ``.ckpt`` (``{"state_dict": sd}``).

    ``dtype`` casts floating-point tensors (e.g. ``torch.float16``).  ``metadata`` is stored in
    the safetensors header (ignored for ``.ckpt``).  The file is written to a temporary file in
    the same folder and moved into place with ``os.replace``, so readers never see a partial file.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".safetensors", ".ckpt"):
        raise ValueError(f"unsupported checkpoint extension {ext!r} (use .safetensors or .ckpt)")
    tensors = _prepare_for_save(state_dict, dtype)

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_file.replacing(path) as tmp:
        if ext == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({"state_dict": tensors}, tmp)
