"""Where things live, derived once from the flags (A1111's folder names).

Standard library only (used by launch.py before the venv exists). Also A1111's module-level names for extensions
(`script_path`, `data_path`, `models_path`, `extensions_dir`, `paths`, …), set to the runtime's folders by `adopt`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from modules import paths_internal
from modules.paths_internal import (  # noqa: F401 (A1111 names)
    config_states_dir, cwd, data_path, default_output_dir, extensions_builtin_dir, extensions_dir, models_path,
    modules_path, script_path, sd_configs_path, sd_path)

SCRIPT_DIR = Path(__file__).resolve().parent.parent
# The bundled demo model (issue 3: trained by tools/train_demo_model.py) and its Canny ControlNet. The demo model is
# the fallback when no other checkpoint is present (also with --data-dir / --models-dir elsewhere).
DEMO_CHECKPOINT = SCRIPT_DIR / "models" / "Stable-diffusion" / "demo" / "demo-shapes.safetensors"
DEMO_CONTROLNET = SCRIPT_DIR / "models" / "ControlNet" / "control_demo-shapes_canny.safetensors"
# the demo LoRA and textual-inversion embedding for the demo model (found with any --data-dir)
DEMO_LORA_DIR = SCRIPT_DIR / "models" / "Lora" / "demo"
DEMO_EMBEDDINGS_DIR = SCRIPT_DIR / "embeddings" / "demo"


@dataclass(frozen=True)
class Paths:
    data: Path
    models: Path
    checkpoints: Path
    extra_checkpoint_dirs: tuple[Path, ...]
    vae: Path
    lora: Path
    controlnet: Path
    embeddings: Path
    hypernetworks: Path
    localizations: Path
    extensions: Path
    outputs: Path
    settings_file: Path
    styles_file: Path
    cache: Path

    @property
    def hash_cache_file(self) -> Path:
        return self.cache / "hashes.json"

    @property
    def tokenizer_dir(self) -> Path:
        return self.cache / "clip-tokenizer"

    def checkpoint_dirs(self) -> list[Path]:
        return [self.checkpoints, *self.extra_checkpoint_dirs]


def from_args(args: argparse.Namespace) -> Paths:
    data = Path(args.data_dir).resolve() if getattr(args, "data_dir", None) else SCRIPT_DIR
    models = Path(args.models_dir).resolve() if getattr(args, "models_dir", None) else data / "models"

    def opt(name: str, default: Path) -> Path:
        value = getattr(args, name, None)
        return Path(value).resolve() if value else default

    extra = tuple(p for p in [opt("ckpt_dir", Path())] if getattr(args, "ckpt_dir", None))
    return Paths(
        data=data,
        models=models,
        checkpoints=models / "Stable-diffusion",
        extra_checkpoint_dirs=extra,
        vae=opt("vae_dir", models / "VAE"),
        lora=opt("lora_dir", models / "Lora"),
        controlnet=models / "ControlNet",
        embeddings=opt("embeddings_dir", data / "embeddings"),
        hypernetworks=opt("hypernetwork_dir", models / "hypernetworks"),
        localizations=opt("localizations_dir", SCRIPT_DIR / "localizations"),
        extensions=data / "extensions",
        outputs=data / "outputs",
        settings_file=opt("ui_settings_file", data / "config.json"),
        styles_file=opt("styles_file", data / "styles.csv"),
        cache=data / "cache",
    )


# A1111's table of the repositories it runs from; ours has only the program itself.
paths: dict[str, str] = {"Stable Diffusion": sd_path}


def adopt(p: Paths) -> None:
    """Point A1111's module-level names (here and in paths_internal) at the runtime's folders. Called by
    shared.bind, before any extension script is loaded."""
    values = {"data_path": str(p.data), "models_path": str(p.models), "extensions_dir": str(p.extensions),
              "default_output_dir": str(p.outputs)}
    for name, value in values.items():
        setattr(paths_internal, name, value)
        globals()[name] = value
