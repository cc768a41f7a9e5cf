"""User settings (config.json), with A1111's option names, validated and written atomically."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modules import atomic_file


@dataclass
class OptionInfo:
    default: Any
    label: str
    section: str = "Other"
    choices: Callable[[], list] | list | None = None
    minimum: float | None = None
    maximum: float | None = None
    onchange: Callable[[Any], None] | None = field(default=None, repr=False)

    @property
    def kind(self) -> type:
        return type(self.default)


# The top bar by default: checkpoint, VAE and clip skip (A1111's own default is the checkpoint alone).
QUICKSETTINGS_DEFAULT = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")
# Settings that cannot be quicksettings: internal ones, the list itself, and the language (the top bar has its own
# Language switch).
NOT_QUICKSETTINGS = {"sd_checkpoint_hash", "quicksettings_list", "localization"}


def migrate(data: dict) -> dict:
    """Upgrades a loaded config.json in place. The list used to be hidden and fixed at ["sd_model_checkpoint"] while
    the top bar also showed VAE and clip skip; that saved value means "the old default", so it gives way to the new
    default instead of hiding those two."""
    if data.get("quicksettings_list") == ["sd_model_checkpoint"]:
        del data["quicksettings_list"]
    return data


class OptionError(ValueError):
    """A setting name or value that is not allowed; the message names the key and what is allowed."""


def _defaults() -> dict[str, OptionInfo]:
    return {
        # stable diffusion
        "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint", "Stable Diffusion"),
        "sd_vae": OptionInfo("Automatic", "SD VAE", "Stable Diffusion"),
        "sd_checkpoint_hash": OptionInfo("", "SHA256 of the current checkpoint", "Stable Diffusion"),
        "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", "Stable Diffusion", minimum=1, maximum=12),
        "randn_source": OptionInfo("CPU", "Random number generator source", "Sampler parameters",
                                   choices=["CPU", "GPU"]),
        "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", "Sampler parameters", minimum=0),
        # A1111's default is the new timelines: [a:b:N] with a "." is a fraction, hires fix counts from 1 to 2
        "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines", "Sampler parameters"),
        # saving
        "samples_save": OptionInfo(True, "Always save all generated images", "Saving images"),
        "samples_format": OptionInfo("png", "File format for images", "Saving images", choices=["png"]),
        "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files",
                                     "Saving images"),
        "save_to_dirs": OptionInfo(True, "Save images to a subdirectory", "Saving images"),
        "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below",
                                     "Paths for saving"),
        "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images",
                                             "Paths for saving"),
        "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images",
                                             "Paths for saving"),
        # user interface
        "localization": OptionInfo("None", "Localization", "User interface"),
        "quicksettings_list": OptionInfo(list(QUICKSETTINGS_DEFAULT), "Quicksettings list", "User interface"),
        # live previews
        "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "Live previews"),
        "show_progress_every_n_steps": OptionInfo(5, "Live preview display period (steps)", "Live previews",
                                                  minimum=-1, maximum=32),
    }


class Options:
    def __init__(self, path: Path | None, frozen: bool = False):
        self.path = Path(path) if path else None
        self.frozen = frozen
        self.info = _defaults()
        self.info["quicksettings_list"].choices = self.quicksettings_candidates
        self.data: dict[str, Any] = {}
        self._lock = threading.RLock()
        self.load_error: str | None = None
        if self.path and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                if not isinstance(loaded, dict):
                    raise ValueError("not a JSON object")
                self.data.update(migrate(loaded))  # unknown keys are kept: extensions' settings live here too
            except (OSError, ValueError) as exc:
                # Keep the broken file for the user instead of overwriting it on the next save.
                backup = self.path.with_suffix(self.path.suffix + ".broken")
                os.replace(self.path, backup)
                self.load_error = f"{self.path}: {exc}; it was moved to {backup.name} and defaults are used"

    def add(self, key: str, info: OptionInfo) -> None:
        self.info[key] = info

    def quicksettings_candidates(self) -> list[str]:
        """The settings that may be put in the top bar (Settings → User interface → Quicksettings list)."""
        return [k for k in self.info if k not in NOT_QUICKSETTINGS]

    def quicksettings(self) -> list[str]:
        """The top bar's settings now: the saved list without unknown names or repeats, and always the checkpoint."""
        wanted = self.get("quicksettings_list")
        wanted = wanted if isinstance(wanted, list) else list(QUICKSETTINGS_DEFAULT)
        candidates = set(self.quicksettings_candidates())
        out = ["sd_model_checkpoint"]
        for key in wanted:
            if key in candidates and key not in out:
                out.append(key)
        return out

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self.data:
                return self.data[key]
            if key in self.info:
                return self.info[key].default
        raise OptionError(f"unknown setting {key!r}")

    def __getattr__(self, key: str) -> Any:  # opts.samples_save, like A1111's shared.opts
        if key.startswith("_") or key in ("path", "frozen", "info", "data", "load_error"):
            raise AttributeError(key)
        try:
            return self.get(key)
        except OptionError:
            raise AttributeError(key) from None

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {**{k: i.default for k, i in self.info.items()}, **self.data}

    def validate(self, key: str, value: Any) -> Any:
        info = self.info.get(key)
        if info is None:
            raise OptionError(f"unknown setting {key!r}")
        kind = info.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise OptionError(f"setting {key!r} must be true or false, got {value!r}")
        elif kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (kind is int and isinstance(value, float) and not value.is_integer()):
                raise OptionError(f"setting {key!r} must be a {'whole ' if kind is int else ''}number, got {value!r}")
            value = kind(value)
            if info.minimum is not None and value < info.minimum or info.maximum is not None and value > info.maximum:
                raise OptionError(f"setting {key!r} must be between {info.minimum} and {info.maximum}, got {value}")
        elif kind is str:
            if not isinstance(value, str):
                raise OptionError(f"setting {key!r} must be a string, got {value!r}")
        elif kind is list:
            if not isinstance(value, list):
                raise OptionError(f"setting {key!r} must be a list, got {value!r}")
        choices = info.choices() if callable(info.choices) else info.choices
        if kind is list and choices is not None:
            unknown = [v for v in value if v not in choices]
            if unknown:
                raise OptionError(f"setting {key!r}: unknown {unknown}; allowed: {choices}")
        elif choices is not None and value not in choices:
            raise OptionError(f"setting {key!r} must be one of {choices}, got {value!r}")
        return value

    def set(self, key: str, value: Any, save: bool = True) -> bool:
        """Validates, stores, runs the option's onchange and saves. Returns False when the value did not change."""
        value = self.validate(key, value)
        with self._lock:
            old = self.get(key)
            if old == value:
                return False
            if self.frozen:
                raise OptionError(f"settings are frozen (--freeze-settings); {key!r} was not changed")
            self.data[key] = value
        info = self.info[key]
        if info.onchange is not None:
            try:
                info.onchange(value)
            except Exception:
                with self._lock:
                    self.data[key] = old
                raise
        if save:
            self.save()
        return True

    def save(self) -> None:
        if self.path is None or self.frozen:
            return
        with self._lock:
            text = json.dumps(self.data, indent=4, ensure_ascii=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file.replacing(self.path) as tmp:
            tmp.write_text(text, encoding="utf-8")
