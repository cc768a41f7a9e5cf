"""Turns a checkpoint file into ready-to-run diffusers/transformers components.

Key conversion uses diffusers' own single-file functions; we only pick the component configs (architecture.py) and
build the models on the meta device so that weights are assigned, not copied, which keeps loading fast and peak memory
at about one copy of the weights.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                 convert_open_clip_checkpoint)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from modules.models.architecture import ArchitectureError, ModelSpec, build_spec, read_yaml_config
from modules.models.lazy_weights import LazyStateDict, SafetensorsFormatError, component_dtypes
from modules.models.registry import CheckpointInfo
from modules.models.safe_load import ModelFileError, load_state_dict
from modules.models.tokenizer_assets import ensure_tokenizer_files


# safetensors metadata key of a checkpoint's own latent → RGB preview map (modules/engine/latent_preview.py fits it)
LATENT_RGB_KEY = "sd_webui.latent_rgb"


@dataclass
class SDModel:
    info: CheckpointInfo
    spec: ModelSpec
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list
    tokenizers: list
    device: torch.device
    dtype: torch.dtype
    vae_file: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def is_sdxl(self) -> bool:
        return self.spec.family == "sdxl"

    def scheduler_config(self) -> dict:
        return {**self.spec.scheduler, "prediction_type": self.spec.prediction_type}


def _instantiate(cls, config: dict, state_dict: dict, what: str, path: Path):
    with init_empty_weights():
        model = cls(**config)
    return _load_into(model, state_dict, what, path)


def _load_into(model, state_dict: dict, what: str, path: Path):
    missing, _unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise ModelFileError(f"{path}: the {what} weights are incomplete; missing {len(missing)} tensors "
                             f"such as {missing[:3]}")
    return model.eval().requires_grad_(False)


def _text_encoder(sd: dict, enc: dict, path: Path):
    cfg = CLIPTextConfig(**enc["config"])
    cls = CLIPTextModelWithProjection if enc["class"] == "CLIPTextModelWithProjection" else CLIPTextModel
    prefix = enc["prefix"]
    with init_empty_weights():
        model = cls(cfg)
    if enc["layout"] == "hf":  # keys first: a LazyStateDict reads a tensor only when its value is asked for
        weights = {"text_model." + k[len(prefix):]: sd[k] for k in sd.keys() if k.startswith(prefix)}
    else:
        weights = convert_open_clip_checkpoint(model, sd, prefix=prefix)
        # SD2 uses the penultimate layer: the file's last layer is not part of the diffusers-style encoder
        rx = re.compile(r".*encoder\.layers\.(\d+)\.")
        weights = {k: v for k, v in weights.items()
                   if not ((m := rx.match(k)) and int(m.group(1)) >= cfg.num_hidden_layers)}
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    return _load_into(model, weights, "text encoder", path)


_tokenizer_cache: dict[tuple, CLIPTokenizer] = {}


def tokenizer(tokenizer_dir: Path, pad_token: str) -> CLIPTokenizer:
    key = (str(tokenizer_dir), pad_token)
    if key not in _tokenizer_cache:
        ensure_tokenizer_files(tokenizer_dir)
        _tokenizer_cache[key] = CLIPTokenizer.from_pretrained(str(tokenizer_dir), pad_token=pad_token,
                                                              model_max_length=77, local_files_only=True)
    return _tokenizer_cache[key]


def read_checkpoint(info: CheckpointInfo, config_override: Path | None = None) -> tuple[dict, ModelSpec]:
    """Reads the weights and works out what they are. Raises ModelFileError naming the file on any problem."""
    path = info.filename
    sd = open_weights(path)
    yaml_path = config_override or info.config
    try:
        yaml_cfg = read_yaml_config(yaml_path) if yaml_path else None
        spec = build_spec(sd, yaml_cfg, v_pred_probe=lambda s: _probe_v_prediction(sd, s))
    except ArchitectureError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except (KeyError, IndexError, StopIteration) as exc:
        raise ModelFileError(f"{path}: not a complete Stable Diffusion checkpoint (missing {exc})") from None
    return sd, spec


def open_weights(path: Path):
    """A .safetensors file as a LazyStateDict (each tensor read when used, in the precision it will run in: peak
    memory about one copy of the weights in that precision, see lazy_weights.py); other files through
    safe_load.load_state_dict."""
    if Path(path).suffix.lower() != ".safetensors" or not Path(path).is_file():
        return load_state_dict(path)
    try:
        return LazyStateDict(path)
    except (OSError, SafetensorsFormatError) as exc:
        raise ModelFileError(f"{path}: cannot be read as a model file: {exc}") from None


def native_resolution(info: CheckpointInfo) -> int:
    """The model's native image size without loading its weights (only the safetensors header and the yaml), so
    the UI can show the right default width/height while the model is still loading."""
    from modules.models.architecture import _yaml_facts, family_defaults, detect_family
    try:
        facts = _yaml_facts(read_yaml_config(info.config)) if info.config else {}
        if "native_resolution" in facts:
            return facts["native_resolution"]
        family = facts.get("family")
        if family is None and info.filename.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(info.filename), framework="pt") as f:
                family = detect_family(dict.fromkeys(f.keys()))
        if family == "sd2" and facts.get("prediction_type") == "v_prediction":
            return 768
        return family_defaults(family)["native_resolution"] if family else 512
    except Exception:  # unreadable files are reported when loaded; here a default is enough
        return 512


def build_model(info: CheckpointInfo, sd: dict, spec: ModelSpec, tokenizer_dir: Path, device: torch.device,
                dtype: torch.dtype, vae_dtype: torch.dtype | None = None) -> SDModel:
    path = info.filename
    if isinstance(sd, LazyStateDict):  # read each component's tensors straight into the precision it runs in
        sd.set_dtypes(component_dtypes(dtype, vae_dtype or dtype))
    try:
        unet = _instantiate(UNet2DConditionModel, spec.unet, convert_ldm_unet_checkpoint(sd, spec.unet), "UNet", path)
        vae = _instantiate(AutoencoderKL, spec.vae, convert_ldm_vae_checkpoint(sd, spec.vae), "VAE", path)
        encoders = [_text_encoder(sd, enc, path) for enc in spec.text_encoders]
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{path}: weights do not fit the {spec.label} layout: {str(exc)[:300]}") from None
    finally:
        if isinstance(sd, LazyStateDict):
            sd.release()  # its read buffer now, not when the caller drops the dict
    tokenizers = [tokenizer(tokenizer_dir, enc.get("pad_token", "<|endoftext|>")) for enc in spec.text_encoders]
    model = SDModel(info, spec, _cpu_layout(_place(unet, device, dtype)),
                    _fp32_image_out(_cpu_layout(_place(vae, device, vae_dtype or dtype))),
                    [_place(e, device, dtype) for e in encoders], tokenizers, device, dtype)
    model.extra.update(_metadata_extras(path))
    return model


def _metadata_extras(path: Path) -> dict:
    """Extras a checkpoint can carry in its safetensors metadata: the latent→RGB preview map fitted for it."""
    if path.suffix.lower() != ".safetensors":
        return {}
    import json
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        table = json.loads(meta[LATENT_RGB_KEY]) if LATENT_RGB_KEY in meta else None
    except (OSError, ValueError):
        return {}
    ok = isinstance(table, list) and all(isinstance(r, list) and len(r) == 3 for r in table)
    return {"latent_rgb": table} if ok else {}


def _place(module, device: torch.device, dtype: torch.dtype):
    """Moves/casts only when needed (a no-op .to() still walks every tensor and logs a diffusers warning)."""
    p = next(module.parameters())
    return module if (p.device == device and p.dtype == dtype) else module.to(device=device, dtype=dtype)


def _cpu_layout(module):
    """Channels-last weights for a bf16 UNet or VAE on the CPU: oneDNN's bf16 convolutions then run without
    converting every activation between layouts. Measured on an AVX-512-bf16 CPU (1 thread, CPU time, interleaved;
    docs/PERFORMANCE.md): SD 1.5 UNet step at 256² 0.65x the time of the contiguous layout, VAE decode 0.30x (bf16
    contiguous 0.65x of fp32, bf16 channels-last 0.20x). Outputs differ only by summation order. fp32 and CUDA keep
    what model_options decides (--opt-channelslast)."""
    p = next(module.parameters())
    if p.device.type == "cpu" and p.dtype == torch.bfloat16:
        module.to(memory_format=torch.channels_last)
    return module


def _cast_input_fp32(_module, args):
    return tuple(a.float() if torch.is_tensor(a) else a for a in args)


def _fp32_image_out(vae):
    """A bf16 VAE on the CPU computes its last convolution (the image itself) in fp32: bf16's 8-bit mantissa would
    step the output by up to half an 8-bit level near white and band smooth gradients; that layer is 3 output
    channels, so fp32 there costs nearly nothing. A later vae.to(fp32) (the NaN fall-back) keeps working."""
    conv = getattr(getattr(vae, "decoder", None), "conv_out", None)
    p = next(vae.parameters())
    if conv is not None and p.device.type == "cpu" and p.dtype == torch.bfloat16:
        conv.float()
        conv.register_forward_pre_hook(_cast_input_fp32)
    return vae


def load_vae_weights(model: SDModel, vae_path: Path | None) -> None:
    """Replaces the VAE weights with a separate VAE file, or restores the checkpoint's own (vae_path None)."""
    if vae_path is None:
        if model.vae_file is None:
            return
        source = model.info.filename
    else:
        source = vae_path
    sd = open_weights(source)
    if isinstance(sd, LazyStateDict):
        sd.set_dtypes(lambda _key: model.vae.dtype)
    converted = convert_ldm_vae_checkpoint(sd, dict(model.vae.config))
    expected = set(model.vae.state_dict())
    missing = expected - set(converted)
    if missing:
        raise ModelFileError(f"{source}: not a VAE for this model (missing {len(missing)} tensors such as "
                             f"{sorted(missing)[:2]})")
    try:
        model.vae.load_state_dict({k: converted[k] for k in expected})
    except RuntimeError as exc:
        raise ModelFileError(f"{source}: VAE weights do not fit this model: {str(exc)[:200]}") from None
    model.vae_file = vae_path


def _probe_v_prediction(sd: dict, spec: ModelSpec) -> bool:
    """A1111's test for SD2 files without a yaml: a v-prediction UNet, fed a constant latent at the last timestep,
    answers close to the negated input; an epsilon UNet does not."""
    unet = _instantiate(UNet2DConditionModel, spec.unet, convert_ldm_unet_checkpoint(sd, spec.unet), "UNet",
                        Path("probe"))
    with torch.no_grad():
        x = torch.ones(1, spec.unet["in_channels"], 8, 8) * 0.5
        ctx = torch.zeros(1, 77, spec.unet["cross_attention_dim"])
        out = unet(x, torch.tensor([999]), ctx).sample
        return bool((out - x[:, :out.shape[1]]).mean() < -1)
