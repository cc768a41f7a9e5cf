"""A tiny model loaded once per test module, and a shortcut to run the engine."""
from __future__ import annotations

import numpy as np

from modules import processing
from modules.engine.params import GenerationParams
from tests.support.model_factory import manager_for, write_tiny_checkpoint


def load_tiny(root, arch: str = "sd1", in_channels: int = 4, seed: int = 1, **kw):
    (root / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoint(root / "Stable-diffusion" / "m.safetensors", arch, seed=seed, in_channels=in_channels, **kw)
    return manager_for(root).require()


def run(model, opts: processing.RunOptions | None = None, state=None, hooks=None, setup=None, **fields):
    base = {"prompt": "a red circle", "steps": 3, "width": 32, "height": 32, "seed": 5, "sampler_name": "Euler"}
    return processing.process(model, GenerationParams(**{**base, **fields}), state, opts, hooks, setup)


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)
