"""A1111's `modules.sd_vae`, minimal: the VAE files found (`vae_dict`) and reloading the VAE, through our registry
and model manager."""
from __future__ import annotations

import os

from modules import shared
from modules.sd_models import LiveDict

unspecified = object()
vae_dict: dict[str, str] = LiveDict(lambda: {v.name: str(v.filename) for v in shared.runtime().registry.vaes})


def __getattr__(name: str):
    if name == "loaded_vae_file":
        model = shared.runtime().models.model if shared.bound() else None
        return str(model.vae_file) if model is not None and model.vae_file else None
    if name == "vae_path":
        return os.path.join(shared.models_path, "VAE")
    raise AttributeError(f"module 'modules.sd_vae' has no attribute {name!r}")


def refresh_vae_list() -> None:
    shared.runtime().registry.refresh_vaes()


def reload_vae_weights(sd_model=None, vae_file=unspecified):
    """Applies the VAE the sd_vae setting names (A1111: `vae_file` overrides it; here it must be one of vae_dict's
    files or None for the checkpoint's own VAE, and becomes the setting). Returns shared.sd_model."""
    if vae_file is not unspecified:
        rt = shared.runtime()
        if vae_file is None:
            name = "None"
        else:
            match = rt.registry.find_vae(str(vae_file)) or rt.registry.find_vae(os.path.basename(str(vae_file)))
            if match is None:
                raise ValueError(f"reload_vae_weights: vae_file {vae_file!r} is not one of the VAEs found: "
                                 f"{sorted(vae_dict)}")
            name = match.name
        if rt.options.sd_vae != name:
            rt.options.data["sd_vae"] = name
            rt.options.save()
    shared.run_job("reload_vae")
    return shared.sd_model
