"""Control model files loaded for the current checkpoint: recognised (CONTROLNET-REFERENCE §2.2), checked against
the loaded checkpoint before any sampling, built in the job's dtype and device, kept in a small LRU cache (§2.1).

Every family ends up behind one `ControlModel`: ControlNets (1.0 full files, 1.1 .pth, pruned safetensors, diffusers
files and folders, difference models, Control-LoRA, SD2, SDXL full/mid/small) as diffusers ControlNetModel; full and
light T2I-Adapters as an adapter built from diffusers' blocks; the style adapter as its own small transformer.
Families the extension knows but we do not run yet are refused with a message saying what the file is.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import torch

from modules.controlnet import controlnet_arch as cna
from modules.controlnet import t2i_adapter as t2i
from modules.controlnet.control_lora import MARKER as LORA_MARKER
from modules.controlnet.control_lora import merge_control_lora
from modules.controlnet.model_files import ControlModelFile
from modules.models.controlnet import diffusers_to_original
from modules.models.ldm_export import unet_to_original_state_dict
from modules.models.safe_load import ModelFileError, load_state_dict

KIND_LABEL = {"controlnet": "ControlNet", "t2i_adapter": "T2I-Adapter", "t2i_style": "T2I style adapter"}


class ControlModel:
    """One loaded control model. `kind` says which of the three calls applies; residuals and features are unscaled
    (the caller applies weight and control mode) and not pooled (`global_pool` tells the caller to pool, §4.4)."""

    def __init__(self, title: str, kind: str, family: str, module: torch.nn.Module, *, hint_channels: int = 3,
                 global_pool: bool = False, description: str = ""):
        self.title, self.kind, self.family, self.module = title, kind, family, module
        self.hint_channels, self.global_pool = hint_channels, global_pool
        self.description = description or f"{cna.FAMILY_LABEL[family]} {KIND_LABEL[kind]}"
        p = next(module.parameters())
        self.dtype, self.device = p.dtype, p.device

    def __repr__(self) -> str:
        return f"<ControlModel {self.title}: {self.description}, {self.dtype}, {self.device}>"

    def to(self, device=None, dtype=None) -> "ControlModel":
        if device is not None or dtype is not None:
            self.module.to(device=device, dtype=dtype)
            self.sync_device()
        return self

    def sync_device(self) -> None:
        """Reads device and dtype back from the weights after something else moved them (memory offloading)."""
        p = next(self.module.parameters())
        self.dtype, self.device = p.dtype, p.device

    def _need(self, kind: str, call: str) -> None:
        if self.kind != kind:
            raise TypeError(f"{self.title} is a {KIND_LABEL[self.kind]}; {call} is for a {KIND_LABEL[kind]}")

    def _hint(self, hint: torch.Tensor) -> torch.Tensor:
        hint = hint.to(self.device, self.dtype)
        if hint.shape[1] == self.hint_channels:
            return hint
        if hint.shape[1] > self.hint_channels:      # 1-channel models take the first (R) channel (§2.2 rule 8)
            return hint[:, : self.hint_channels]
        if hint.shape[1] == 1:
            return hint.expand(-1, self.hint_channels, -1, -1)
        raise ValueError(f"{self.title} takes {self.hint_channels}-channel control images, not {hint.shape[1]}")

    @torch.no_grad()
    def controlnet_residuals(self, x: torch.Tensor, timestep, context: torch.Tensor, hint: torch.Tensor,
                             added_cond: dict | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(down residuals, middle residual) for diffusers' `down_block_additional_residuals` /
        `mid_block_additional_residual`, in x's dtype. x: the latent (its first 4 channels are used); hint: B×C×H×W
        in 0..1 at the image size (latent size × the VAE factor)."""
        self._need("controlnet", "controlnet_residuals")
        m = self.module
        x_in = x[:, : m.config.in_channels].to(self.device, self.dtype)
        want = (x.shape[-2] * self.hint_factor, x.shape[-1] * self.hint_factor)
        if tuple(hint.shape[-2:]) != want:
            raise ValueError(f"{self.title}: control image is {tuple(hint.shape[-2:])} for a latent of "
                             f"{tuple(x.shape[-2:])}; it must be {want} (the latent size × {self.hint_factor})")
        if torch.is_tensor(timestep):
            timestep = timestep.to(self.device)
        added = {k: v.to(self.device, self.dtype) for k, v in added_cond.items()} if added_cond else None
        down, mid = m(x_in, timestep, encoder_hidden_states=context.to(self.device, self.dtype),
                      controlnet_cond=self._hint(hint), conditioning_scale=1.0, added_cond_kwargs=added,
                      return_dict=False)
        return [d.to(x.dtype) for d in down], mid.to(x.dtype)

    @property
    def hint_factor(self) -> int:
        """ControlNets: how much smaller than the control image the latent is (the hint encoder's downsampling)."""
        self._need("controlnet", "hint_factor")
        return 2 ** (len(self.module.config.conditioning_embedding_out_channels) - 1)

    @torch.no_grad()
    def adapter_features(self, hint: torch.Tensor) -> list[torch.Tensor]:
        """The features for diffusers' `down_intrablock_additional_residuals` (one per level). A fresh list each
        call: diffusers' UNet pops from the list it is given."""
        self._need("t2i_adapter", "adapter_features")
        return list(self.module(self._hint(hint)))

    @torch.no_grad()
    def style_tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """B×tokens×context tokens to append to the prompt's context, from the CLIP ViT-L/14 vision model's last
        hidden state (B×257×1024)."""
        self._need("t2i_style", "style_tokens")
        return self.module(image_embeds.to(self.device, self.dtype))


# --------------------------------------------------------------------------------------------------- recognition

def _unsupported(file: ControlModelFile, what: str) -> ModelFileError:
    return ModelFileError(f"{file.title} is {what} model, which is not supported yet")


def _strip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rule 6: without the `control_model.` prefix (a 1.0 full file keeps only those keys; the whole SD model in it
    is not used)."""
    if any(k.startswith("control_model.") for k in sd):
        sd = {k.removeprefix("control_model."): v for k, v in sd.items()
              if k.startswith("control_model.") or k in ("difference", LORA_MARKER)}
    return sd


def recognise(sd: dict[str, torch.Tensor], file: ControlModelFile) -> tuple[str, dict[str, torch.Tensor]]:
    """(what it is, its tensors under the names its loader expects): "controlnet", "difference", "control_lora"
    (original ControlNet names), "t2i_adapter" (diffusers' adapter names), "t2i_style". §2.2 in the extension's
    order; raises ModelFileError for the families not supported and for files that are none of these."""
    if LORA_MARKER in sd:
        return "control_lora", _strip(sd)
    if "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight" in sd:
        raise _unsupported(file, "a SparseCtrl (AnimateDiff)")
    if "controlnet_cond_embedding.conv_in.weight" in sd:
        sd = diffusers_to_original(sd)
    if any(k.startswith("image_proj.") for k in sd) and any(k.startswith("ip_adapter.") for k in sd):
        raise _unsupported(file, "an IP-Adapter")
    sd = _strip(sd)
    if "input_hint_block.0.weight" in sd:
        if "control_add_embedding.linear_1.bias" in sd or "control_add_embedding.linear_1.weight" in sd:
            raise _unsupported(file, "a ControlNet-Union (xinsir)")
        if "instant_id" in str(file.path).lower():
            raise _unsupported(file, "an InstantID ControlNet (it needs InstantID's IP-Adapter)")
        return ("difference" if "difference" in sd else "controlnet"), sd
    adapter = t2i.to_diffusers_names(sd)
    if ("conv_in.weight" in adapter and "body.0.resnets.0.block1.weight" in adapter) or \
            ("body.0.in_conv.weight" in adapter and "body.0.out_conv.weight" in adapter):
        return "t2i_adapter", adapter
    if "style_embedding" in sd:
        return "t2i_style", sd
    if "ip_adapter" in sd or any(k.startswith("ip_adapter.") for k in sd):
        raise _unsupported(file, "an IP-Adapter")
    if any("lllite" in k for k in sd):
        raise _unsupported(file, "a ControlLLLite (kohya)")
    raise ModelFileError(f"{file.title}: Cannot recognize the control model in {file.path}: it is not a ControlNet, "
                         "T2I-Adapter or Control-LoRA file (none of their keys: input_hint_block, conv_in, "
                         "style_embedding, lora_controlnet)")


def read_file(file: ControlModelFile) -> dict[str, torch.Tensor]:
    path = file.weights_path
    if path.is_dir():
        raise ModelFileError(f"{file.title}: {path} has no diffusion_pytorch_model.safetensors or .bin")
    try:
        return load_state_dict(path, nested=True)
    except ModelFileError as exc:
        raise ModelFileError(f"{file.title}: {exc}") from None


# --------------------------------------------------------------------------------------------------- checks

def _unet_facts(sd_model) -> tuple[str, int, int | None, str]:
    """(family, context dim, ADM dim or None, name) of the loaded checkpoint."""
    cfg = sd_model.unet.config
    adm = cfg.get("projection_class_embeddings_input_dim") if cfg.get("addition_embed_type") == "text_time" else None
    context = int(cfg["cross_attention_dim"])
    spec = getattr(sd_model, "spec", None)
    linear = bool(cfg.get("use_linear_projection"))
    family = spec.family if spec is not None else cna.weights_family(context, adm, linear)
    info = getattr(sd_model, "info", None)
    name = getattr(info, "stem", None) or (Path(info.filename).stem if info is not None else "(unnamed)")
    return family, context, adm, name


def _sizes(context: int | None, adm: int | None) -> str:
    parts = [f"context {context}" if context is not None else "no cross-attention"]
    if adm is not None and adm >= 0:
        parts.append(f"ADM {adm}")
    return ", ".join(parts)


def check_family(file: ControlModelFile, what: str, context: int | None, adm: int | None, linear: bool,
                 sd_model) -> str:
    """The file's family; raises the clear mismatch error (before anything is built or sampled) when its context or
    ADM size is not the loaded checkpoint's. `adm` -1: an ADM input whose size the file does not store (a
    Control-LoRA reusing the UNet's label_emb); None: no ADM input."""
    family = cna.weights_family(context, adm, linear)
    ck_family, ck_context, ck_adm, name = _unet_facts(sd_model)
    if (adm is None) != (ck_adm is None) or (adm is not None and adm >= 0 and adm != ck_adm) or \
            (context is not None and context != ck_context):
        raise ModelFileError(f"{file.title} is an {cna.FAMILY_LABEL[family]} {what} ({_sizes(context, adm)}); the "
                             f"loaded checkpoint {name} is an {cna.FAMILY_LABEL[ck_family]} model "
                             f"({_sizes(ck_context, ck_adm)})")
    return family


def check_structure(file: ControlModelFile, arch: cna.ControlNetArch, sd_model) -> None:
    cfg = sd_model.unet.config
    _, _, _, name = _unet_facts(sd_model)
    lpb = cfg["layers_per_block"]
    unet = (list(cfg["block_out_channels"]), lpb if isinstance(lpb, int) else lpb[0])
    if (list(arch.channels), arch.layers_per_block) != unet:
        raise ModelFileError(f"{file.title} does not fit the loaded checkpoint {name}: its encoder has channels "
                             f"{list(arch.channels)} with {arch.layers_per_block} blocks per level, the checkpoint's "
                             f"UNet {unet[0]} with {unet[1]}")
    if arch.in_channels != cfg["out_channels"]:
        raise ModelFileError(f"{file.title} takes {arch.in_channels} latent channels; the loaded checkpoint {name} "
                             f"has {cfg['out_channels']}")
    factor = int(getattr(sd_model, "vae_scale_factor", arch.hint_factor))
    if arch.hint_factor != factor:
        raise ModelFileError(f"{file.title}'s control-image encoder downsamples {arch.hint_factor}x; the loaded "
                             f"checkpoint {name} has a {factor}x VAE (its ControlNets downsample {factor}x)")


# --------------------------------------------------------------------------------------------------- loading

def _load_weights(module: torch.nn.Module, sd: dict[str, torch.Tensor], file: ControlModelFile, what: str):
    try:
        missing, unexpected = module.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{file.title}: its weights do not fit the {what} they describe: "
                             f"{cna.first_line(exc)}") from None
    if missing or unexpected:
        raise ModelFileError(f"{file.title}: {len(missing)} missing and {len(unexpected)} unknown {what} weights "
                             f"(such as {', '.join((list(missing) + list(unexpected))[:4])})")
    return module.eval().requires_grad_(False)


def _same_attention(module: torch.nn.Module, sd_model) -> None:
    """The ControlNet's attention runs on the kernel the checkpoint's UNet uses (the attention flags, and on the CPU
    the blocked bf16 attention): its first level attends over as many tokens as the UNet's."""
    extra = getattr(sd_model, "extra", None)
    kind = extra.get("attention") if isinstance(extra, dict) else None
    if kind and hasattr(module, "set_attn_processor"):
        from modules.models.model_options import attention_processor
        module.set_attn_processor(attention_processor(kind))


def _controlnet(file, kind, sd, sd_model) -> ControlModel:
    context, adm, linear = cna.read_facts(sd)
    family = check_family(file, "ControlNet", context, adm, linear, sd_model)
    try:
        if kind in ("difference", "control_lora"):
            base = unet_to_original_state_dict(sd_model.unet)
            sd = cna.merge_difference(sd, base) if kind == "difference" else merge_control_lora(sd, base)
        arch = cna.read_arch(sd)
        check_structure(file, arch, sd_model)
        module = cna.build_controlnet(sd, arch, sd_model.unet.config)
    except cna.ArchError as exc:
        raise ModelFileError(f"{file.title}: {exc}") from None
    label = {"difference": "difference ", "control_lora": "Control-LoRA "}.get(kind, "")
    pool = "shuffle" in file.stem.lower()
    _same_attention(module, sd_model)
    return ControlModel(file.title, "controlnet", family, module, hint_channels=arch.hint_channels, global_pool=pool,
                        description=f"{cna.FAMILY_LABEL[family]} {label}ControlNet ({_sizes(context, adm)})")


def _adapter(file, sd, sd_model) -> ControlModel:
    from accelerate import init_empty_weights
    try:
        arch = t2i.read_arch(sd)
    except t2i.AdapterError as exc:
        raise ModelFileError(f"{file.title}: {exc}") from None
    ck_family, _, _, name = _unet_facts(sd_model)
    std = arch.standard_family
    if std is not None and (std == "sdxl") != (ck_family == "sdxl"):
        raise ModelFileError(f"{file.title} is an {cna.FAMILY_LABEL[std]} T2I-Adapter (input {arch.cin} channels); "
                             f"the loaded checkpoint {name} is an {cna.FAMILY_LABEL[ck_family]} model")
    try:
        hint, factor, downs = t2i.fit(arch, sd_model.unet.config, int(sd_model.vae_scale_factor))
    except t2i.AdapterError as exc:
        raise ModelFileError(f"{file.title} does not fit the loaded checkpoint {name}: {exc}") from None
    with init_empty_weights():
        module = t2i.AdapterNet(arch, factor, downs)
    module = _load_weights(module, sd, file, "T2I-Adapter")
    family = std or ck_family
    kind = "light " if arch.light else ""
    return ControlModel(file.title, "t2i_adapter", family, module, hint_channels=hint,
                        description=f"{cna.FAMILY_LABEL[family]} {kind}T2I-Adapter ({hint}-channel input)")


def _style(file, sd, sd_model) -> ControlModel:
    from accelerate import init_empty_weights
    try:
        with init_empty_weights():
            module = t2i.StyleAdapter.from_weights(sd)
    except t2i.AdapterError as exc:
        raise ModelFileError(f"{file.title}: {exc}") from None
    family = check_family(file, "T2I style adapter", module.context_dim, None, False, sd_model)
    module = _load_weights(module, sd, file, "style adapter")
    return ControlModel(file.title, "t2i_style", family, module)


def load(file: ControlModelFile, sd_model, dtype: torch.dtype, device) -> ControlModel:
    """The control model in `file`, ready for `sd_model` (modules.models' SDModel) in `dtype` on `device`. Raises
    ModelFileError naming the file when it cannot be read, is not a control model, is a family we do not run, or
    does not fit the loaded checkpoint (said in the families' terms, e.g. an SDXL ControlNet on an SD 1.x model)."""
    kind, sd = recognise(read_file(file), file)
    if kind == "t2i_adapter":
        model = _adapter(file, sd, sd_model)
    elif kind == "t2i_style":
        model = _style(file, sd, sd_model)
    else:
        model = _controlnet(file, kind, sd, sd_model)
    return model.to(device, dtype)


class ModelCache:
    """Loaded control models by title, the least recently used dropped beyond `max_models` (§2.1's
    control_net_model_cache_size). Models are for one checkpoint: asking for another drops them all (the
    extension clears its cache when the checkpoint changes; difference and Control-LoRA models hold its weights)."""

    def __init__(self, max_models: int = 2):
        self.max_models = max(1, int(max_models))
        self._models: OrderedDict[str, tuple[object, ControlModel]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _identity(sd_model):
        try:
            return weakref.ref(sd_model)
        except TypeError:
            return id(sd_model)

    @staticmethod
    def _same(ident, sd_model) -> bool:
        return ident() is sd_model if isinstance(ident, weakref.ref) else ident == id(sd_model)

    def get(self, file: ControlModelFile, sd_model, dtype: torch.dtype, device) -> ControlModel:
        with self._lock:
            for title in [t for t, (ident, _) in self._models.items() if not self._same(ident, sd_model)]:
                del self._models[title]
            if file.title in self._models:
                self._models.move_to_end(file.title)
                return self._models[file.title][1].to(device, dtype)
            model = load(file, sd_model, dtype, device)
            self._models[file.title] = (self._identity(sd_model), model)
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return model

    def titles(self) -> list[str]:
        """Cached titles, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
