"""Upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, SCUNet …) found in A1111's folders and run through
spandrel, the architecture detected from the weights.

A1111's families, each with its folder (models/<folder>, or its --*-models-path flag), its tile settings and its
built-in download list:

| family     | folder      | flag                     | tile settings                       | download list           |
|------------|-------------|--------------------------|-------------------------------------|-------------------------|
| ESRGAN     | ESRGAN      | --esrgan-models-path     | ESRGAN_tile, ESRGAN_tile_overlap    | ESRGAN_4x               |
| RealESRGAN | RealESRGAN  | --realesrgan-models-path | ESRGAN_tile, ESRGAN_tile_overlap    | R-ESRGAN … (realesrgan_enabled_models) |
| SwinIR     | SwinIR      | --swinir-models-path     | SWIN_tile, SWIN_tile_overlap        | SwinIR 4x               |
| DAT        | DAT         | --dat-models-path        | DAT_tile, DAT_tile_overlap          | DAT x2/x3/x4 (dat_enabled_models) |
| HAT        | HAT         | --hat-models-path        | HAT_tile, HAT_tile_overlap          | —                       |
| ScuNET     | ScuNET      | --scunet-models-path     | SCUNET_tile, SCUNET_tile_overlap    | ScuNET GAN, ScuNET PSNR |

Every .pth/.pt/.safetensors file in a family's folder is an upscaler named by its file stem, as A1111 names them. A
download-list entry is listed under A1111's name; once its file is on disk (downloaded as A1111 names it) that file
is the entry, and the file's stem is accepted as a second name ("ScuNET" for "ScuNET GAN", as A1111 lists it after
the download). Choosing an entry whose file is absent downloads it (modules.download: progress, resume, sha256 where
A1111 publishes one); when that fails, UpscalerModelMissing names the file, its URL and the folder to put it in.

The folders are read again each time the list is asked for, so a file added while the server runs is listed at the
next listing (the API's /sdapi/v1/upscalers, the UI's refresh buttons, a page reload).
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from modules.file_lists import walk_files
from modules.models import safe_load, spandrel_models, upscale_tiles

MODEL_EXTENSIONS = (".pth", ".pt", ".safetensors")
HF = "https://huggingface.co"   # net_policy rewrites it for HF_ENDPOINT


@dataclass(frozen=True)
class Download:
    """One entry of A1111's built-in download list."""
    name: str
    url: str
    filename: str
    scale: int
    sha256: str | None = None


@dataclass(frozen=True)
class Family:
    name: str               # A1111's Upscaler.name
    folder: str             # under the models folder
    flag: str               # the argparse attribute of its --*-models-path flag
    tile_key: str           # the tile-size setting; <tile_key>_overlap is the overlap
    default_tile: int
    model_name: str | None = None          # A1111's Upscaler.model_name (the API's model_name)
    downloads: tuple[Download, ...] = ()
    enabled_key: str | None = None         # the setting listing which downloads are offered


_R = "https://github.com/xinntao/Real-ESRGAN/releases/download"
FAMILIES: tuple[Family, ...] = (
    Family("ESRGAN", "ESRGAN", "esrgan_models_path", "ESRGAN_tile", 192, "ESRGAN_4x", (
        Download("ESRGAN_4x", "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth", "ESRGAN_4x.pth", 4),
    )),
    Family("RealESRGAN", "RealESRGAN", "realesrgan_models_path", "ESRGAN_tile", 192, None, (
        Download("R-ESRGAN General 4xV3", f"{_R}/v0.2.5.0/realesr-general-x4v3.pth", "realesr-general-x4v3.pth", 4),
        Download("R-ESRGAN General WDN 4xV3", f"{_R}/v0.2.5.0/realesr-general-wdn-x4v3.pth",
                 "realesr-general-wdn-x4v3.pth", 4),
        Download("R-ESRGAN AnimeVideo", f"{_R}/v0.2.5.0/realesr-animevideov3.pth", "realesr-animevideov3.pth", 4),
        Download("R-ESRGAN 4x+", f"{_R}/v0.1.0/RealESRGAN_x4plus.pth", "RealESRGAN_x4plus.pth", 4),
        Download("R-ESRGAN 4x+ Anime6B", f"{_R}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
                 "RealESRGAN_x4plus_anime_6B.pth", 4),
        Download("R-ESRGAN 2x+", f"{_R}/v0.2.1/RealESRGAN_x2plus.pth", "RealESRGAN_x2plus.pth", 2),
    ), "realesrgan_enabled_models"),
    Family("SwinIR", "SwinIR", "swinir_models_path", "SWIN_tile", 192, "SwinIR 4x", (
        Download("SwinIR 4x", "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                              "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", "SwinIR_4x.pth", 4),
    )),
    Family("DAT", "DAT", "dat_models_path", "DAT_tile", 192, None, (
        Download("DAT x2", f"{HF}/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x2.pth", "DAT_x2.pth",
                 2, "7760aa96e4ee77e29d4f89c3a4486200042e019461fdb8aa286f49aa00b89b51"),
        Download("DAT x3", f"{HF}/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x3.pth", "DAT_x3.pth",
                 3, "581973e02c06f90d4eb90acf743ec9604f56f3c2c6f9e1e2c2b38ded1f80d197"),
        Download("DAT x4", f"{HF}/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x4.pth", "DAT_x4.pth",
                 4, "391a6ce69899dff5ea3214557e9d585608254579217169faf3d4c353caff049e"),
    ), "dat_enabled_models"),
    Family("HAT", "HAT", "hat_models_path", "HAT_tile", 192),
    Family("ScuNET", "ScuNET", "scunet_models_path", "SCUNET_tile", 256, "ScuNET GAN", (
        Download("ScuNET GAN", "https://github.com/cszn/KAIR/releases/download/v1.0/scunet_color_real_gan.pth",
                 "ScuNET.pth", 1),
        Download("ScuNET PSNR", "https://github.com/cszn/KAIR/releases/download/v1.0/scunet_color_real_psnr.pth",
                 "scunet_color_real_psnr.pth", 1),
    )),
)

# A1111's defaults for the settings read here (they are registered as settings by option_templates()).
SETTING_DEFAULTS: dict[str, Any] = {
    "ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8, "SWIN_tile": 192, "SWIN_tile_overlap": 8,
    "DAT_tile": 192, "DAT_tile_overlap": 8, "HAT_tile": 192, "HAT_tile_overlap": 8,
    "SCUNET_tile": 256, "SCUNET_tile_overlap": 8,
    "realesrgan_enabled_models": ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
    "dat_enabled_models": ["DAT x2", "DAT x3", "DAT x4"],
}


class UpscalerModelMissing(Exception):
    """An upscaler's file is neither on disk nor downloadable now; the message names the file, its URL and the
    folder to put it in, so an offline user can fetch it by hand."""

    def __init__(self, name: str, filename: str, url: str, folder: Path, reason: str) -> None:
        self.name, self.filename, self.url, self.folder = name, filename, url, Path(folder)
        super().__init__(f"upscaler {name!r}: its file {filename} is missing ({reason}); download {url} and put it "
                         f"in {self.folder}")


@dataclass
class UpscalerModel:
    """One listed model upscaler: a file on disk, or a download-list entry (path None until downloaded)."""
    name: str
    family: Family
    folder: Path
    path: Path | None
    download: Download | None = None
    scale: int = 4
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def data_path(self) -> str:
        """A1111's UpscalerData.data_path: the file, or the URL while it is not downloaded."""
        return str(self.path) if self.path is not None else self.download.url


def _setting(get: Callable[[str, Any], Any] | None, key: str):
    default = SETTING_DEFAULTS.get(key)
    if get is None:
        return default
    value = get(key, default)
    return default if value is None else value


class UpscalerModels:
    """The model upscalers of one runtime: listing, download on first use, loading (the last model is kept), and
    tiled upscaling on `device`."""

    def __init__(self, models_dir: str | os.PathLike, args: Any = None, cache_dir: str | os.PathLike | None = None,
                 device: Any = None, options_get: Callable[[str, Any], Any] | None = None,
                 allow_download: bool = True) -> None:
        self.models_dir = Path(models_dir)
        self.args = args
        self.device = device
        self.options_get = options_get
        self.allow_download = allow_download
        self._scale_cache_file = Path(cache_dir) / "upscaler-scales.json" if cache_dir else None
        self._scales: dict[str, int] | None = None
        self._lock = threading.RLock()           # the kept model and its use
        self._scales_lock = threading.Lock()     # the scale cache
        self._loaded: tuple[str, Any] | None = None    # (file key, spandrel descriptor)

    # --- where ----------------------------------------------------------------------------------------------------
    def folder(self, family: Family) -> Path:
        flag = getattr(self.args, family.flag, None) if self.args is not None else None
        return Path(flag).expanduser() if flag else self.models_dir / family.folder

    def folders(self, family: Family) -> list[Path]:
        """The flag's folder first (where downloads go), then models/<folder> when the flag points elsewhere."""
        own = self.models_dir / family.folder
        first = self.folder(family)
        return [first] if first == own else [first, own]

    # --- the list -------------------------------------------------------------------------------------------------
    def list(self, options_get: Callable[[str, Any], Any] | None = None) -> list[UpscalerModel]:
        """Every listed model upscaler, family by family: the download-list entries (those the family's
        *_enabled_models setting offers, plus any whose file is on disk), then the other files by stem."""
        get = options_get or self.options_get
        out: list[UpscalerModel] = []
        taken: set[str] = set()
        for family in FAMILIES:
            files: list[Path] = []
            for folder in self.folders(family):
                for f in walk_files(str(folder), allowed_extensions=MODEL_EXTENSIONS):
                    p = Path(f)
                    if p not in files and not p.name.endswith(".part"):
                        files.append(p)
            by_name = {p.name.lower(): p for p in files}
            by_stem = {p.stem.lower(): p for p in reversed(files)}   # the first file of a stem wins
            enabled = _setting(get, family.enabled_key) if family.enabled_key else None
            claimed: set[Path] = set()
            for d in family.downloads:
                # the file A1111 downloads, or one of the same name in another format (.safetensors)
                path = by_name.get(d.filename.lower()) or by_stem.get(Path(d.filename).stem.lower())
                if path is None and enabled is not None and d.name not in enabled:
                    continue
                scale = self._scale_of(path) if path is not None else d.scale
                aliases = (path.stem,) if path is not None and path.stem != d.name else ()
                out.append(UpscalerModel(d.name, family, self.folder(family), path, d, scale or d.scale, aliases))
                taken.add(d.name.lower())
                if path is not None:
                    claimed.add(path)
            for path in files:
                if path in claimed or path.stem.lower() in taken:
                    continue
                taken.add(path.stem.lower())
                out.append(UpscalerModel(path.stem, family, path.parent, path, None, self._scale_of(path) or 4))
        return out

    def find(self, name: str, options_get: Callable[[str, Any], Any] | None = None) -> UpscalerModel | None:
        """The model upscaler called `name` (A1111's name, or the file's stem), or None. Download-list entries the
        settings do not offer are found too (an infotext may name them)."""
        wanted = (name or "").strip().lower()
        listed = self.list(options_get)
        for m in listed:
            if m.name.lower() == wanted or wanted in (a.lower() for a in m.aliases):
                return m
        for family in FAMILIES:
            for d in family.downloads:
                if d.name.lower() == wanted:
                    return UpscalerModel(d.name, family, self.folder(family), None, d, d.scale)
        return None

    def names(self, options_get: Callable[[str, Any], Any] | None = None) -> list[str]:
        return [m.name for m in self.list(options_get)]

    # --- files ----------------------------------------------------------------------------------------------------
    def ensure_file(self, model: UpscalerModel) -> Path:
        """The model's file, downloaded first when it is a download-list entry not yet on disk."""
        if model.path is not None:
            if model.path.is_file():
                return model.path
            raise UpscalerModelMissing(model.name, model.path.name, model.download.url if model.download else "",
                                       model.path.parent, "the file was removed")
        d = model.download
        target = model.folder / d.filename
        if target.is_file():
            model.path = target
            return target
        if not self.allow_download:
            raise UpscalerModelMissing(model.name, d.filename, d.url, model.folder, "downloads are turned off")
        from modules import download
        print(f"Upscaler {model.name}: downloading {d.url} to {model.folder}", flush=True)
        try:
            model.path = download.download_file(d.url, target, sha256=d.sha256, progress=True)
        except download.DownloadError as exc:
            raise UpscalerModelMissing(model.name, d.filename, d.url, model.folder,
                                       f"download failed: {exc}") from None
        return model.path

    def _scale_of(self, path: Path) -> int | None:
        """The model's real scale, read once per file version (size, mtime) and remembered in the cache folder:
        finding it means building the model from its weights."""
        key = f"{path.resolve()}|{path.stat().st_size}|{int(path.stat().st_mtime)}"
        with self._scales_lock:
            if self._scales is None:
                self._scales = {}
                if self._scale_cache_file and self._scale_cache_file.is_file():
                    try:
                        self._scales = dict(json.loads(self._scale_cache_file.read_text(encoding="utf-8")))
                    except (OSError, ValueError):
                        self._scales = {}
            if key in self._scales:
                return self._scales[key]
            try:   # built apart from the kept model, so a listing never evicts the one in use
                scale = int(spandrel_models.load_model(path).scale)
            except (safe_load.ModelFileError, OSError) as exc:
                print(f"Upscaler file {path} skipped for its scale: {exc}", flush=True)
                return None
            self._scales[key] = scale
            if self._scale_cache_file:
                try:
                    from modules import atomic_file
                    self._scale_cache_file.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_file.replacing(self._scale_cache_file, sync=False) as tmp:
                        Path(tmp).write_text(json.dumps(self._scales, indent=0), encoding="utf-8")
                except OSError:
                    pass
            return scale

    def _descriptor(self, path: Path):
        """The spandrel model for the file; the last one loaded is kept (an Extras batch loads it once)."""
        key = f"{path.resolve()}|{path.stat().st_mtime_ns}"
        with self._lock:
            if self._loaded is not None and self._loaded[0] == key:
                return self._loaded[1]
            self._loaded = None     # the previous model goes before the next one is read
            descriptor = spandrel_models.load_model(path)
            if not hasattr(descriptor, "scale") or descriptor.purpose not in ("SR", "Restoration"):
                raise safe_load.ModelFileError(f"{path}: a {descriptor.architecture.name} model "
                                               f"({descriptor.purpose}), not an upscaler")
            self._loaded = (key, descriptor)
            return descriptor

    def unload(self) -> None:
        with self._lock:
            self._loaded = None

    # --- running --------------------------------------------------------------------------------------------------
    def tile_settings(self, family: Family, options_get: Callable[[str, Any], Any] | None = None) -> tuple[int, int]:
        get = options_get or self.options_get
        return int(_setting(get, family.tile_key)), int(_setting(get, family.tile_key + "_overlap"))

    def upscale_once(self, model: UpscalerModel, image: Image.Image,
                     options_get: Callable[[str, Any], Any] | None = None, state: Any = None) -> Image.Image:
        """One pass of the model over the image (A1111's do_upscale): `model.scale` times larger, tiled with the
        family's tile settings."""
        path = self.ensure_file(model)
        tile, overlap = self.tile_settings(model.family, options_get)
        with self._lock:
            descriptor = self._descriptor(path)
            from modules import devices
            device = self.device or devices.device_esrgan
            descriptor.to(device)
            descriptor.model.eval()
            tensor = upscale_tiles.pil_to_tensor_bgr(image).to(device)

            def on_tile(done: int, total: int) -> None:
                if state is not None and (getattr(state, "interrupted", False) or getattr(state, "skipped", False)):
                    raise InterruptedError("upscale interrupted")

            try:
                out = upscale_tiles.run_tiled(descriptor, tensor, int(descriptor.scale), tile, overlap, on_tile)
            except InterruptedError:
                return image
            model.scale = int(descriptor.scale)
            return upscale_tiles.tensor_bgr_to_pil(out)

    def upscale(self, model: UpscalerModel, image: Image.Image, scale: float,
                options_get: Callable[[str, Any], Any] | None = None, state: Any = None) -> Image.Image:
        """A1111's Upscaler.upscale: passes of the model until the image is at least `scale` times larger (three at
        most), then a Lanczos resize to exactly round(size × scale)."""
        dest = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.convert("RGB")
        for _ in range(3):
            if image.width >= dest[0] and image.height >= dest[1]:
                break
            before = image.size
            image = self.upscale_once(model, image, options_get, state)
            if image.size == before:
                break
        if image.size != dest:
            image = image.resize(dest, resample=Image.Resampling.LANCZOS)
        return image


def option_templates() -> dict:
    """The Upscaling section of the settings (A1111's keys, labels and limits)."""
    from modules.options import OptionInfo
    section = "Upscaling"
    names = {"ESRGAN": "ESRGAN and Real-ESRGAN", "SWIN": "SwinIR", "DAT": "DAT", "HAT": "HAT", "SCUNET": "ScuNET"}
    out = {}
    for prefix, label in names.items():
        out[f"{prefix}_tile"] = OptionInfo(SETTING_DEFAULTS[f"{prefix}_tile"],
                                           f"Tile size for {label} upscalers (0 = no tiling)", section,
                                           {"step": 16}, minimum=0, maximum=512)
        out[f"{prefix}_tile_overlap"] = OptionInfo(SETTING_DEFAULTS[f"{prefix}_tile_overlap"],
                                                   f"Tile overlap for {label} upscalers (low values = visible seam)",
                                                   section, minimum=0, maximum=64)
    real = [d.name for d in FAMILIES[1].downloads]
    dat = [d.name for d in FAMILIES[3].downloads]
    out["realesrgan_enabled_models"] = OptionInfo(list(SETTING_DEFAULTS["realesrgan_enabled_models"]),
                                                  "Real-ESRGAN models offered for download in the upscaler lists",
                                                  section, choices=real)
    out["dat_enabled_models"] = OptionInfo(list(SETTING_DEFAULTS["dat_enabled_models"]),
                                           "DAT models offered for download in the upscaler lists", section,
                                           choices=dat)
    return out


@dataclass
class JobUpscalers:
    """The model upscalers as one job sees them: its settings (override_settings included) for the tile sizes and
    the offered downloads. What the engine gets (RunOptions.upscalers, Extras)."""
    models: UpscalerModels
    options_get: Callable[[str, Any], Any] | None = None

    def find(self, name: str) -> UpscalerModel | None:
        return self.models.find(name, self.options_get)

    def names(self) -> list[str]:
        return self.models.names(self.options_get)

    def upscale(self, model: UpscalerModel, image: Image.Image, scale: float, state: Any = None) -> Image.Image:
        return self.models.upscale(model, image, scale, self.options_get, state)
