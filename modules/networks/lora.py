"""LoRA and LyCORIS networks: files read once and cached, bound to the loaded model, and patched onto it for a job.

The weight math of each kind is in lora_math (built per module from the file's tensors); where the tensors go is
lora_keys. This file decides which files a prompt means and turns `<lora:name:te:unet>` into weight patches on the
job's PatchSet, which puts every weight back bitwise after the job — so switching LoRAs never reloads the
checkpoint. Patches compute their deltas when they are applied (from the cached factors), so a cached LoRA costs
its file's size in memory, not the size of the weights it changes.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from modules.engine.extra_networks import ExtraNetwork, ExtraNetworkParams, not_found
from modules.engine.patches import WeightPatch
from modules.models.safe_load import ModelFileError, load_state_dict
from modules.networks import lora_keys, lora_math
from modules.networks.network_files import (NetworkCatalog, NetworkOnDisk, add_from_setting, base_family,
                                             read_safetensors_metadata)

log = logging.getLogger("sd.lora")

FAMILY_LABELS = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "sd1/sd2": "SD1.x or SD2.x"}
_CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}   # cross-attention width of real models
BUNDLED_EMBEDDING_PREFIX = "bundle_emb."


class NetworkError(ValueError):
    """A network that cannot be used with the loaded model; the message names the file and the reason."""


@dataclass
class LoraFile:
    """One version of a file, parsed: tensors grouped per module (suffixes renamed to kohya's)."""
    filename: str
    version: tuple
    groups: dict[str, dict[str, torch.Tensor]]
    embeddings: dict[str, torch.Tensor | list[torch.Tensor]] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def family(self) -> str | None:
        """The family the file declares or its keys and widths reveal, None when they do not say."""
        declared = base_family(self.metadata)
        if declared:
            return declared
        if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in self.groups):
            return "sdxl"
        for key, tensors in self.groups.items():
            down = tensors.get("lora_down.weight")
            if down is not None and down.dim() == 2 and (
                    "attn2" in key and ("to_k" in key or "to_v" in key) or "self_attn_q_proj" in key):
                if down.shape[1] in _CONTEXT_FAMILY:
                    return _CONTEXT_FAMILY[down.shape[1]]
        if any(k.startswith("lora_te_") for k in self.groups):
            return "sd1/sd2"        # one text encoder: not SDXL
        return None


@dataclass
class BoundNetwork:
    """A file matched to one loaded model: the modules it changes (UNet and text encoder apart)."""
    name: str
    file: LoraFile
    modules: dict[lora_keys.Target, lora_math.NetworkModule]
    unmatched: list[str]
    bias_targets: set = field(default_factory=set)      # modules whose bias the file changes (diff_b, b_norm)


def file_version(filename: str) -> tuple:
    st = os.stat(filename)
    return filename, st.st_mtime_ns, st.st_size


def read_file(filename: str) -> LoraFile:
    """Parses a LoRA file (safetensors, or a pickle through the restricted unpickler)."""
    version = file_version(filename)
    try:
        sd = load_state_dict(filename)
    except ModelFileError as exc:
        raise NetworkError(str(exc)) from None
    metadata = read_safetensors_metadata(filename) if filename.lower().endswith(".safetensors") else {}
    groups: dict[str, dict[str, torch.Tensor]] = {}
    embeddings: dict[str, list[torch.Tensor]] = {}
    for key, tensor in sd.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        if key.startswith(BUNDLED_EMBEDDING_PREFIX):   # A1111: textual-inversion vectors bundled in the LoRA
            name, _, _rest = key[len(BUNDLED_EMBEDDING_PREFIX):].partition(".")
            embeddings.setdefault(name, []).append(tensor)
            continue
        module, suffix = lora_keys.split_key(key)
        groups.setdefault(module, {})[suffix] = tensor
    bundled = {n: (v[0] if len(v) == 1 else v) for n, v in embeddings.items()}
    return LoraFile(filename, version, groups, bundled, metadata)


def bind(name: str, lora: LoraFile, model) -> BoundNetwork:
    """The file's modules on `model`; a file for another family, or one whose shapes do not fit, is refused with
    a message naming the file's family and the checkpoint's."""
    model_family = model.spec.family
    file_family = lora.family()
    stem = getattr(getattr(model, "info", None), "stem", "?")
    if file_family is not None and model_family not in file_family.split("/"):
        raise NetworkError(f"Lora {name} is for {FAMILY_LABELS[file_family]}; the loaded checkpoint {stem} is "
                           f"{model.spec.label}, so it was not applied")
    index = lora_keys.index_for(model)
    modules, unmatched, misfits, bias_targets = {}, [], [], set()
    for key, tensors in lora.groups.items():
        target = index.lookup(key)
        if target is None:
            unmatched.append(key)
            continue
        try:
            module = lora_math.build_module(key, tensors)
        except ValueError as exc:
            misfits.append(str(exc))
            continue
        weight = getattr(index.modules[target], "weight", None)
        if weight is None:
            unmatched.append(key)
            continue
        if not _fits(tensors, weight):
            misfits.append(f"{key}: file {_shapes(tensors)} vs model {list(weight.shape)}")
            continue
        modules[target] = module
        if "diff_b" in tensors or "b_norm" in tensors:
            bias_targets.add(target)
    if (misfits or unmatched) and (2 * (len(misfits) + len(unmatched)) > len(lora.groups) or not modules):
        raise NetworkError(f"Lora {name} does not fit the loaded checkpoint {stem} ({model.spec.label}): "
                           f"{len(misfits) + len(unmatched)} of its {len(lora.groups)} modules are missing or differ "
                           f"in shape, e.g. {(misfits + unmatched)[0]}")
    if not modules:
        raise NetworkError(f"Lora {name}: none of its {len(lora.groups)} modules exist in the loaded checkpoint "
                           f"{stem} ({model.spec.label}), e.g. {unmatched[0] if unmatched else '—'}")
    if unmatched or misfits:
        log.warning("Lora %s: %d of its modules did not match the checkpoint (%s)", name,
                    len(unmatched) + len(misfits), ", ".join((unmatched + misfits)[:5]))
    return BoundNetwork(name, lora, modules, unmatched + misfits, bias_targets)


def _shapes(tensors: dict) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in list(tensors.items())[:3] if v.dim())


def _fits(tensors: dict, weight: torch.Tensor) -> bool:
    """A cheap shape check before any job for the kinds whose update size is plain to see (A1111 reshapes an
    update to the weight's shape and fails when the sizes differ); lora_math checks the others when it runs."""
    up, down = tensors.get("lora_up.weight"), tensors.get("lora_down.weight")
    if up is not None and down is not None:
        mid = tensors.get("lora_mid.weight")
        kernel = mid.shape[2:].numel() if mid is not None and mid.dim() == 4 else 1
        return up.shape[0] == weight.shape[0] and up.shape[0] * down[0].numel() * kernel == weight.numel()
    for key in ("diff", "w_norm"):
        if key in tensors:
            return tensors[key].numel() == weight.numel()
    return True


def _with_dyn(tensors: dict, dyn: int | None) -> dict:
    """DyLoRA's `dyn=N`: only the first N ranks, at the file's own scale (alpha / full rank)."""
    if not dyn:
        return tensors
    up, down = tensors.get("lora_up.weight"), tensors.get("lora_down.weight")
    if up is None or down is None or dyn >= down.shape[0]:
        return tensors
    out = dict(tensors)
    rank = down.shape[0]
    alpha = float(tensors["alpha"]) if "alpha" in tensors else float(rank)
    out["lora_up.weight"], out["lora_down.weight"] = up[:, :dyn], down[:dyn]
    out["alpha"] = torch.tensor(alpha * dyn / rank)
    return out


@dataclass
class Request:
    """One `<lora:name:te:unet:dyn>` (A1111's te=, unet=, dyn= forms included)."""
    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None

    @classmethod
    def parse(cls, params) -> "Request":
        pos, named = params.positional, params.named
        if not pos:
            raise NetworkError("<lora:…> without a name")
        try:
            te = float(pos[1]) if len(pos) > 1 else 1.0
            te = float(named.get("te", te))
            unet = float(pos[2]) if len(pos) > 2 else te
            unet = float(named.get("unet", unet))
            dyn = int(pos[3]) if len(pos) > 3 else None
            dyn = int(named["dyn"]) if "dyn" in named else dyn
        except ValueError:
            raise NetworkError(f"<lora:{':'.join(params.items)}>: weights must be numbers "
                               f"(<lora:name:weight>, <lora:name:te_weight:unet_weight>, te=, unet=, dyn=)") from None
        return cls(pos[0], te, unet, dyn)


class LoraNetworks:
    """The runtime's LoRA state: the catalog, the cache of parsed files (LRU, valid while a file is unchanged) and
    the merged weights of the last set of networks."""

    def __init__(self, catalog: NetworkCatalog, memory_limit=lambda: 0):
        self.catalog = catalog
        self.memory_limit = memory_limit          # how many unused files to keep besides the last job's
        self._files: OrderedDict[str, LoraFile] = OrderedDict()
        self._bound: dict[tuple, BoundNetwork] = {}
        self._merged: tuple[tuple | None, dict[str, torch.Tensor]] = (None, {})   # (networks, param → weight)
        self._lock = threading.Lock()

    def file(self, entry: NetworkOnDisk) -> LoraFile:
        with self._lock:
            cached = self._files.get(entry.filename)
            if cached is not None and cached.version == file_version(entry.filename):
                self._files.move_to_end(entry.filename)
                return cached
        parsed = read_file(entry.filename)
        with self._lock:
            self._files[entry.filename] = parsed
            self._bound = {k: v for k, v in self._bound.items() if k[0] != entry.filename}
        return parsed

    def bound(self, entry: NetworkOnDisk, model, dyn: int | None = None) -> BoundNetwork:
        lora = self.file(entry)
        key = (entry.filename, lora.version, id(model.unet), dyn)
        found = self._bound.get(key)
        if found is None:
            found = bind(entry.name, lora if not dyn else _dyn_file(lora, dyn), model)
            self._bound[key] = found
        return found

    def forget_merged(self) -> None:
        """Drops the kept merged weights (a new checkpoint was loaded)."""
        self._merged = (None, {})

    def trim(self, keep: list[str]) -> None:
        """Forget parsed files beyond the last job's and `memory_limit()` more (the most recently used kept)."""
        with self._lock:
            extra = [f for f in self._files if f not in keep]          # least recently used first
            spare = max(0, int(self.memory_limit() or 0))
            for filename in extra[: max(0, len(extra) - spare)]:
                del self._files[filename]
            self._bound = {k: v for k, v in self._bound.items() if k[0] in self._files}

    def patches(self, p, requests: list[Request]) -> list[tuple[NetworkOnDisk, Request, BoundNetwork]]:
        """Finds, loads and binds each request; adds the weight patches to p.patches. Returns what was applied.
        Names not found → A1111's "Networks not found"; unusable files → a comment naming why (the job goes on)."""
        applied, missing = [], []
        for req in requests:
            entry = self.catalog.find(req.name)
            if entry is None:
                missing.append(req.name)
                continue
            try:
                network = self.bound(entry, p.sd_model, req.dyn)
            except NetworkError as exc:
                log.warning("%s", exc)
                p.comment(str(exc))
                continue
            applied.append((entry, req, network))
        if missing:
            not_found(p, missing)
        by_target: dict[lora_keys.Target, list] = {}
        bias_targets = set()
        for entry, req, network in applied:
            for target, module in network.modules.items():
                m = req.te if target.is_text_encoder else req.unet
                if m != 0:
                    by_target.setdefault(target, []).append((module, m))
                    if target in network.bias_targets:
                        bias_targets.add(target)
            for word, vectors in network.file.embeddings.items():
                p.patches.embeddings.setdefault(word, vectors)
        signature = (id(p.sd_model.unet),) + tuple((e.filename, n.file.version, r.te, r.unet, r.dyn)
                                                   for e, r, n in applied)
        # the merged weights of the last set are kept: the same LoRAs in the next job cost a copy, not the math
        # (only when nothing else patches weights in this job, which could change what the merge starts from)
        merged = self._merged[1] if self._merged[0] == signature and not p.patches.weights else None
        if merged is None:
            self._merged = (signature if not p.patches.weights else None, {})
        keep = self._merged[1] if self._merged[0] is not None else None
        index = lora_keys.index_for(p.sd_model)
        for target, parts in by_target.items():
            names = ["weight"] + (["bias"] if target in bias_targets and
                                  getattr(index.modules[target], "bias", None) is not None else [])
            for name in names:
                param = target.parameter(name)
                if merged is not None and param in merged:
                    p.patches.weights.append(WeightPatch(param, value=merged[param], source="lora"))
                else:
                    fn = _chain_fn(parts, name)
                    store = (lambda t, k=param: keep.__setitem__(k, t)) if keep is not None else None
                    p.patches.weights.append(WeightPatch(param, fn=fn, source="lora", on_result=store))
        self.trim([e.filename for e, _, _ in applied])
        return applied


def _dyn_file(lora: LoraFile, dyn: int) -> LoraFile:
    return LoraFile(lora.filename, lora.version, {k: _with_dyn(v, dyn) for k, v in lora.groups.items()},
                    lora.embeddings, lora.metadata)


def _chain_fn(parts, which: str):
    """The new weight (which="weight") or bias: each network's change is computed from the tensor as the networks
    before it left it (A1111 adds them in place one after another; for OFT, IA3, GLoRA and DoRA the order matters)."""
    def apply(tensor: torch.Tensor) -> torch.Tensor:
        for module, multiplier in parts:
            fast = getattr(module, "apply_to", None) if which == "weight" else None
            new = fast(tensor, multiplier) if fast is not None else None
            if new is not None:
                tensor = new
                continue
            delta = (module.weight_delta if which == "weight" else module.bias_delta)(tensor, multiplier)
            if delta is not None:
                tensor = delta.reshape(tensor.shape).add_(tensor)   # delta is a fresh tensor: added in place
        return tensor
    return apply


class LoraExtraNetwork(ExtraNetwork):
    """The `lora` kind (A1111's ExtraNetworkLora): `<lora:name:w>`, `<lora:name:te:unet>`, te=/unet=/dyn=, the
    "Add network to prompt" setting (sd_lora) and "Lora hashes" in the infotext. `option(key, default)` reads a
    setting."""
    name = "lora"

    def __init__(self, networks: LoraNetworks, option=lambda _key, default=None: default):
        self.networks = networks
        self.option = option
        self.applied: list[tuple[NetworkOnDisk, Request, BoundNetwork]] = []

    def activate(self, p, entries: list[ExtraNetworkParams]) -> None:
        entries = add_from_setting(p, list(entries), "lora", self.option("sd_lora", "None"),
                                   self.option("extra_networks_default_multiplier", 1.0), self.networks.catalog)
        requests = []
        for entry in entries:
            try:
                requests.append(Request.parse(entry))
            except NetworkError as exc:
                p.comment(str(exc))
        self.applied = self.networks.patches(p, requests) if requests else []
        missing = [r.name for r in requests if r.name in (getattr(p, "networks_not_found", None) or [])]
        if missing and self.option("lora_not_found_warning_console", False):
            log.warning("Networks not found: %s", ", ".join(missing))
        if self.applied and self.option("lora_add_hashes_to_infotext", True):
            pairs = []
            for entry, req, _network in self.applied:
                shorthash = entry.read_hash()[:12]
                alias = req.name.replace(":", "").replace(",", "")
                if shorthash and alias:
                    pairs.append(f"{alias}: {shorthash}")
            if pairs:
                p.extra_generation_params["Lora hashes"] = ", ".join(pairs)


_LORA_TOKEN = re.compile(r"<(lora|lyco):([^:>]+)")


def rename_pasted(params: dict, catalog: NetworkCatalog, preferred: str = "Alias from file") -> None:
    """Pasting an infotext (A1111's rule): each `<lora:name:…>` whose name has a hash in "Lora hashes" is renamed to
    the local file with that hash (its alias or file name, as `preferred` says). Unknown hashes leave names alone."""
    given = params.get("Lora hashes")
    if not isinstance(given, str) or not given.strip():
        return
    by_name = {}
    for part in given.split(","):
        name, sep, shorthash = part.strip().rpartition(":")
        if sep and name.strip():
            by_name[name.strip()] = shorthash.strip()

    def local_name(m: re.Match) -> str:
        shorthash = by_name.get(m.group(2))
        entry = catalog.by_shorthash(shorthash) if shorthash else None
        return f"<{m.group(1)}:{entry.get_alias(preferred) if entry is not None else m.group(2)}"
    for key in ("Prompt", "Negative prompt", "Hires prompt", "Hires negative prompt"):
        if isinstance(params.get(key), str):
            params[key] = _LORA_TOKEN.sub(local_name, params[key])
