"""Where each entry of a LoRA file goes in the loaded model: file keys → (module of our diffusers/transformers model,
suffix).

Downloaded LoRA and LyCORIS files name their modules in one of these ways, all read here:
- kohya-ss: `lora_unet_<module path with "_" for ".">.<suffix>`, `lora_te_…` (SD1/SD2 text encoder), `lora_te1_…` /
  `lora_te2_…` (SDXL's two encoders). The UNet path is in diffusers' names (most SD1/SD2 files) or in the original
  LDM names (`input_blocks_4_1_…`, most SDXL files): both are indexed.
- diffusers / PEFT: `unet.<path>.lora_A.weight` / `lora_B.weight`, `….lora.down.weight`, the older attention-processor
  form `unet.<path>.processor.to_q_lora.down.weight`, `text_encoder(_2).<path>.lora_linear_layer.up.weight`.
A flattened name is ambiguous to split back (module names contain "_"), so instead every module of the model is
indexed under its flattened names and file keys are looked up whole, as A1111 does.

The LDM names come from our exporter's map (modules/models/ldm_export.py, the reverse of diffusers' single-file
loader): a UNet weight's LDM key and its diffusers parameter share storage, which ties the two names together
without a second hand-written table.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import torch

from modules.models import ldm_export

# Module kinds a network can patch (A1111 patches these; attention in HF CLIP and diffusers is made of Linears).
PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.Embedding)

_PEFT_SUFFIX = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
                "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
                "lora_linear_layer.down.weight": "lora_down.weight",
                "lora_linear_layer.up.weight": "lora_up.weight",
                "down.weight": "lora_down.weight", "up.weight": "lora_up.weight"}
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora$")
_KOHYA = re.compile(r"^lora_(unet|te1|te2|te)_(.+)$")
_COMPONENT_PREFIXES = (("text_encoder_2.", "text_encoder_2"), ("text_encoder.", "text_encoder"), ("unet.", "unet"),
                       ("lora_unet.", "unet"))


@dataclass(frozen=True)
class Target:
    """A module of the loaded model: `component` is "unet", "text_encoder" (the first) or "text_encoder_2"."""
    component: str
    path: str

    @property
    def is_text_encoder(self) -> bool:
        return self.component != "unet"

    def parameter(self, name: str) -> str:
        """The PatchSet target of one of its tensors ("weight", "bias")."""
        return f"{self.component}.{self.path}.{name}"


class ModuleIndex:
    """Every patchable module of one loaded model under the names files use for it."""

    def __init__(self, model):
        self.modules: dict[Target, torch.nn.Module] = {}
        self.kohya: dict[str, Target] = {}      # "unet_down_blocks_0_…" / "te_text_model_…" / "te2_…"
        self.dotted: dict[str, Target] = {}     # "unet.down_blocks.0.…" / "text_encoder_2.text_model.…"
        unet = model.unet
        for name, module in unet.named_modules():
            if isinstance(module, PATCHABLE):
                self._add(Target("unet", name), module, ["unet_" + name.replace(".", "_")])
        self._add_ldm_names(unet)
        encoders = list(model.text_encoders)
        for i, encoder in enumerate(encoders):
            component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            if len(encoders) == 1:
                prefixes = ["te_"]
            else:
                prefixes = [f"te{i + 1}_"] + (["te_"] if i == 0 else [])
            # files name the encoder's modules as transformers 4 did (text_model.encoder.…); transformers 5's
            # CLIP text models have no text_model level, so those names are added as well
            canonical = "" if hasattr(encoder, "text_model") else "text_model."
            for name, module in encoder.named_modules():
                if isinstance(module, PATCHABLE):
                    names = {name, canonical + name}
                    self._add(Target(component, name), module,
                              [p + n.replace(".", "_") for n in sorted(names) for p in prefixes])
                    self.dotted.setdefault(f"{component}.{canonical}{name}", Target(component, name))

    def _add(self, target: Target, module: torch.nn.Module, kohya_names: list[str]) -> None:
        self.modules[target] = module
        for flat in kohya_names:
            self.kohya.setdefault(flat, target)
        self.dotted.setdefault(f"{target.component}.{target.path}", target)

    def _add_ldm_names(self, unet) -> None:
        """`input_blocks.4.1.transformer_blocks.0.attn1.to_q` ↔ `down_blocks.1.attentions.0.…`: paired by storage."""
        by_storage = {}
        for name, param in unet.named_parameters():
            if name.endswith(".weight"):
                by_storage[(param.data_ptr(), param.numel())] = name[: -len(".weight")]
        try:
            ldm = ldm_export.unet_to_original_state_dict(unet)
        except ValueError:   # a UNet layout the exporter does not know: diffusers names only
            return
        for key, tensor in ldm.items():
            if not key.endswith(".weight"):
                continue
            path = by_storage.get((tensor.data_ptr(), tensor.numel()))
            target = Target("unet", path) if path is not None else None
            if target is not None and target in self.modules:
                self.kohya.setdefault("unet_" + key[: -len(".weight")].replace(".", "_"), target)

    def lookup(self, module_key: str) -> Target | None:
        """A file's module key (without its suffix) → the module, or None."""
        m = _KOHYA.match(module_key)
        if m:
            return self.kohya.get(f"{m.group(1)}_{m.group(2)}")
        key = _PROCESSOR.sub(lambda g: "." + ("to_out.0" if g.group(1) == "to_out" else g.group(1)), module_key)
        if key.startswith("base_model.model."):
            key = "unet." + key[len("base_model.model."):]
        for prefix, component in _COMPONENT_PREFIXES:
            if key.startswith(prefix):
                return self.dotted.get(component + "." + key[len(prefix):])
        return None


_SUFFIXES = sorted({*_PEFT_SUFFIX, "lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale",
                    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
                    "diff", "diff_b", "w_norm", "b_norm", "weight", "on_input", "bias",
                    "a1.weight", "a2.weight", "b1.weight", "b2.weight", "oft_blocks", "oft_diag",
                    "lora_magnitude_vector", "scale", "rescale", "bias_indices", "bias_values", "bias_size",
                    "oft_R.weight"}, key=len, reverse=True)


def split_key(key: str) -> tuple[str, str]:
    """'lora_unet_x.lora_down.weight' → ('lora_unet_x', 'lora_down.weight'); PEFT/diffusers suffixes are renamed to
    kohya's ('…q_proj.lora_A.weight' → ('…q_proj', 'lora_down.weight'))."""
    if key.startswith("lora_") and "." in key:
        module, _, suffix = key.partition(".")
    else:
        for suffix in _SUFFIXES:
            if key.endswith("." + suffix):
                module = key[: -len(suffix) - 1]
                break
        else:
            module, _, suffix = key.rpartition(".")
    return module, _PEFT_SUFFIX.get(suffix, suffix)


_INDEXES: "weakref.WeakKeyDictionary[object, ModuleIndex]" = weakref.WeakKeyDictionary()


def index_for(model) -> ModuleIndex:
    """The index of a loaded model, built once per model object (a few ms for SD 1.5)."""
    index = _INDEXES.get(model.unet)
    if index is None:
        index = _INDEXES[model.unet] = ModuleIndex(model)
    return index
