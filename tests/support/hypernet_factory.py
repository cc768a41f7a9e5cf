"""A1111-format hypernetwork files (.pt) written with random weights: the int context-width keys → (k, v) state
dicts in A1111's Sequential layout, plus its structure keys."""
from __future__ import annotations

import torch


def linear_params(g, n_in, n_out, scale):
    return {"weight": torch.randn(n_out, n_in, generator=g) * scale, "bias": torch.randn(n_out, generator=g) * scale}


def norm_params(g, n):
    return {"weight": 1 + torch.randn(n, generator=g) * 0.1, "bias": torch.randn(n, generator=g) * 0.1}


def layout_a(dim, g, scale):
    """[1, 2, 1], relu, layer norm, no dropout, activate_output False — A1111's Sequential: 0 Linear, 1 ReLU,
    2 LayerNorm, 3 Linear, 4 LayerNorm."""
    parts = {0: linear_params(g, dim, 2 * dim, scale), 2: norm_params(g, 2 * dim),
             3: linear_params(g, 2 * dim, dim, scale), 4: norm_params(g, dim)}
    return {f"linear.{i}.{k}": v for i, d in parts.items() for k, v in d.items()}


A_META = {"layer_structure": [1, 2, 1], "activation_func": "relu", "is_layer_norm": True, "use_dropout": False,
          "activate_output": False, "last_layer_dropout": False}


def write_net(path, layout, meta, sizes, seed, scale=0.3, **extra):
    """A file with a (k, v) pair per context width in `sizes`; returns {width: (k state dict, v state dict)}."""
    g = torch.Generator().manual_seed(seed)
    data = {size: (layout(size, g, scale), layout(size, g, scale)) for size in sizes}
    torch.save({**data, **meta, "name": "name-in-file", "step": 100, "sd_checkpoint": "abc",
                "sd_checkpoint_name": "base", **extra}, path)
    return data
