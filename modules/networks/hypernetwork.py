"""Hypernetworks (`<hypernet:name:multiplier>`): A1111's .pt files in models/hypernetworks, rebuilt as A1111 lays
out its modules and applied where A1111 applies them.

A file maps context widths (int keys: 768, 320, 640, 1280, …) to a pair of state dicts, one small MLP for the keys
and one for the values, plus its structure ('layer_structure', 'activation_func', 'is_layer_norm', 'use_dropout',
'activate_output', 'last_layer_dropout', 'dropout_structure') and 'name', 'step', 'sd_checkpoint'. In every
attention layer of the UNet whose context width has an entry — self-attention too, where the context is the layer's
own input — A1111 feeds the context through them before the key and value projections:
context_k = context + mlp_k(context) · multiplier (the same for v), several hypernetworks one after the other. Here
that is a forward pre-hook on each Attention's `to_k` / `to_v`, put on the job's PatchSet, so it is gone after
the batch.
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Callable

import torch

from modules.engine import extra_networks
from modules.engine.params import ParamError
from modules.models import safe_load
from modules.networks import network_files

log = logging.getLogger("sd.hypernetworks")


def _activations() -> dict[str, type]:
    """A1111's activation names: its short list, plus every torch.nn activation class under its lower-case name."""
    table = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU,
             "elu": torch.nn.ELU, "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
    for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass):
        if cls.__module__ == "torch.nn.modules.activation":
            table.setdefault(name.lower(), cls)
    return table


ACTIVATIONS = _activations()
# A1111's first files named the two linear layers linear1/linear2
_OLD_KEYS = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
             "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}


class HypernetworkFileError(ValueError):
    """A hypernetwork file that cannot be used; the message names the file and why."""


def dropout_structure_for(layer_structure: list, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's dropout probabilities per layer when a file has no 'dropout_structure': 0.3 after every hidden layer
    but the last, the last one only with last_layer_dropout; never after the input or the output."""
    if not use_dropout:
        return [0] * len(layer_structure)
    values = [0] + [0.3] * (len(layer_structure) - 3)
    values.append(0.3 if last_layer_dropout else 0)
    return values + [0]


class HypernetworkModule(torch.nn.Module):
    """One MLP (keys or values) for one width, with A1111's layer order inside `linear` (so the file's state-dict
    indices fit): per step Linear, then the activation (not after the last Linear unless activate_output), then
    LayerNorm (is_layer_norm), then Dropout where the dropout structure says so."""

    def __init__(self, dim: int, layer_structure: list, activation_func: str | None, add_layer_norm: bool,
                 activate_output: bool, dropout_structure: list):
        super().__init__()
        if layer_structure[0] != 1 or layer_structure[-1] != 1:
            raise HypernetworkFileError(f"layer_structure must start and end with 1, it is {layer_structure}")
        layers: list[torch.nn.Module] = []
        last = len(layer_structure) - 2
        for i in range(len(layer_structure) - 1):
            layers.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if activation_func not in (None, "linear") and (i < last or activate_output):
                if activation_func not in ACTIVATIONS:
                    raise HypernetworkFileError(f"unsupported activation function {activation_func!r}; known: "
                                                f"{', '.join(sorted(ACTIVATIONS))}")
                layers.append(ACTIVATIONS[activation_func]())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            p = dropout_structure[i + 1] if i + 1 < len(dropout_structure) else 0
            if p > 0:
                layers.append(torch.nn.Dropout(p=p))
        self.linear = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        return x + self.linear(x) * multiplier


class Hypernetwork:
    """A loaded file: `layers` maps a context width to its (keys, values) modules, in eval mode."""

    def __init__(self, filename: str):
        self.filename = filename
        self.name = os.path.splitext(os.path.basename(filename))[0]
        self.layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
        self.step = 0
        self.sd_checkpoint = self.sd_checkpoint_name = None
        self.layer_structure = [1, 2, 1]
        self.activation_func = None
        self.add_layer_norm = False
        self.use_dropout = False
        self.activate_output = True
        self.last_layer_dropout = False
        self.dropout_structure: list = []
        self.optional_info = None

    def load(self) -> "Hypernetwork":
        try:
            data = safe_load.load_pickle(self.filename)
        except safe_load.ModelFileError as exc:
            raise HypernetworkFileError(str(exc)) from None
        if not isinstance(data, dict):
            raise HypernetworkFileError(f"{self.filename}: holds {type(data).__name__}, not a hypernetwork dict")
        self.layer_structure = list(data.get("layer_structure") or [1, 2, 1])
        self.activation_func = data.get("activation_func")
        self.add_layer_norm = bool(data.get("is_layer_norm", False))
        dropout = data.get("dropout_structure")
        self.use_dropout = bool(dropout and any(dropout)) or bool(data.get("use_dropout", False))
        self.activate_output = bool(data.get("activate_output", True))
        self.last_layer_dropout = bool(data.get("last_layer_dropout", False))
        self.dropout_structure = list(dropout) if dropout is not None else \
            dropout_structure_for(self.layer_structure, self.use_dropout, self.last_layer_dropout)
        self.optional_info = data.get("optional_info")
        for size, pair in data.items():
            if isinstance(size, int) and not isinstance(size, bool):
                self.layers[size] = tuple(self._module(size, pair, i) for i in (0, 1))
        if not self.layers:
            raise HypernetworkFileError(f"{self.filename}: no layers (integer context-width keys such as 768)")
        self.name = str(data.get("name") or self.name)
        self.step = data.get("step", 0)
        self.sd_checkpoint = data.get("sd_checkpoint")
        self.sd_checkpoint_name = data.get("sd_checkpoint_name")
        return self

    def _module(self, size: int, pair, i: int) -> HypernetworkModule:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(d, dict) for d in pair):
            raise HypernetworkFileError(f"{self.filename}: entry {size} must be a pair of state dicts (k, v)")
        state = {_OLD_KEYS.get(k, k): v for k, v in pair[i].items()}
        try:
            module = HypernetworkModule(size, self.layer_structure, self.activation_func, self.add_layer_norm,
                                        self.activate_output, self.dropout_structure)
            module.load_state_dict(state)
        except HypernetworkFileError as exc:
            raise HypernetworkFileError(f"{self.filename}: {exc}") from None
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise HypernetworkFileError(f"{self.filename}: the {'kv'[i]} layers of width {size} do not fit its "
                                        f"layer structure {self.layer_structure}: {first}") from None
        module.eval().requires_grad_(False)
        return module

    def to(self, device) -> "Hypernetwork":
        for pair in self.layers.values():
            for module in pair:
                module.to(device)
        return self


def _hook(module: HypernetworkModule, multiplier: float) -> Callable:
    """A pre-hook on to_k/to_v: the projection's input (the context) goes through the module first, in float32 as
    A1111 runs it, and back in the UNet's dtype."""
    def pre_hook(_linear, args):
        context = args[0]
        out = module(context.float(), multiplier).to(context.dtype)
        return (out,) + tuple(args[1:])
    return pre_hook


def attention_layers(unet) -> list[tuple[str, int]]:
    """(module path of each UNet Attention, its context width): the input width of its to_k."""
    from diffusers.models.attention_processor import Attention
    return [(name, module.to_k.in_features) for name, module in unet.named_modules()
            if isinstance(module, Attention) and isinstance(getattr(module, "to_k", None), torch.nn.Linear)]


def add_to_patches(patches, unet, hypernetwork: Hypernetwork, multiplier: float) -> int:
    """Pre-hooks on every attention whose context width the hypernetwork has; returns how many layers it reaches.
    A multiplier of 0 adds nothing (context + 0 · mlp(context) is the context)."""
    if multiplier == 0:
        return 0
    count = 0
    for path, width in attention_layers(unet):
        pair = hypernetwork.layers.get(width)
        if pair is None:
            continue
        patches.forward_pre_hooks.append((f"unet.{path}.to_k", _hook(pair[0], multiplier)))
        patches.forward_pre_hooks.append((f"unet.{path}.to_v", _hook(pair[1], multiplier)))
        count += 1
    return count


class HypernetworkHandler(extra_networks.ExtraNetwork):
    """The `hypernet` kind: `<hypernet:name>` (multiplier 1.0) or `<hypernet:name:multiplier>`; several apply one
    after the other in prompt order. Files come from a NetworkCatalog (modules/networks/network_files.py); the ones
    the last such prompt named stay loaded while their files are unchanged. A file that cannot be loaded is
    reported in the job's comments and skipped."""
    name = "hypernet"

    def __init__(self, catalog, option=lambda _key, default=None: default):
        self.catalog = catalog
        self.option = option      # setting reader: "Add hypernetwork to prompt" (sd_hypernetwork)
        # the networks of the last activation (A1111 keeps the ones the prompt still names), by file, mtime, device
        self._loaded: dict[tuple[str, float, str], Hypernetwork] = {}
        self._lock = threading.Lock()

    def load(self, filename: str, device, keep: dict | None = None) -> Hypernetwork:
        key = (filename, os.path.getmtime(filename), str(device))
        with self._lock:
            net = self._loaded.get(key) or Hypernetwork(filename).load().to(device)
            self._loaded[key] = net
        if keep is not None:
            keep[key] = net
        return net

    def activate(self, p, entries: list[extra_networks.ExtraNetworkParams]) -> None:
        entries = network_files.add_from_setting(p, entries, "hypernet", self.option("sd_hypernetwork", "None"),
                                   self.option("extra_networks_default_multiplier", 1.0), self.catalog)
        missing, used = [], {}
        unet = p.sd_model.unet
        for entry in entries:
            if not entry.positional:
                continue
            name = entry.positional[0]
            try:
                multiplier = float(entry.positional[1]) if len(entry.positional) > 1 else 1.0
            except ValueError:
                raise ParamError("prompt", f"<hypernet:{name}:{entry.positional[1]}>: the multiplier must be a "
                                           "number") from None
            found = self.catalog.find(name)
            if found is None:
                missing.append(name)
                continue
            try:
                net = self.load(found.filename, p.sd_model.device, used)
            except Exception as exc:  # a broken file fails this network, not the job
                reason = str(exc) if isinstance(exc, (HypernetworkFileError, OSError)) else \
                    f"{found.filename}: {type(exc).__name__}: {exc}"
                log.error("Error loading hypernetwork %s", reason)
                p.comment(f"Error loading hypernetwork {name}: {reason}")
                continue
            add_to_patches(p.patches, unet, net, multiplier)
        with self._lock:
            self._loaded = used
        if missing:
            extra_networks.not_found(p, missing)


