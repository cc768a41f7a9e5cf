"""A1111's `modules.upscaler`: `Upscaler` (a family of upscaling models) and `UpscalerData` (one of them), the
built-in Pillow ones, and the model families (ESRGAN, RealESRGAN, SwinIR, DAT, HAT, ScuNET) over
modules.models.upscaler_models. `shared.sd_upscalers` lists None, Lanczos and Nearest first, as A1111 does, then
whatever else our engine offers (engine/run.IMAGE_UPSCALERS), then the model upscalers.
"""
from __future__ import annotations

import os

from PIL import Image

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


class Upscaler:
    name: str | None = None
    model_path: str | None = None
    model_name: str | None = None
    model_url: str | None = None
    enable = True
    filter = None
    model = None
    user_path: str | None = None
    scalers: list
    tile = True

    def __init__(self, create_dirs: bool = False):
        self.mod_pad_h = None
        self.tile_size = 192
        self.tile_pad = 8
        self.device = None
        self.scale = 1
        self.scalers = getattr(self, "scalers", None) or []
        if self.model_path is None and self.name:
            from modules import paths
            self.model_path = os.path.join(paths.models_path, self.name)
        if self.model_path and create_dirs:
            os.makedirs(self.model_path, exist_ok=True)

    def do_upscale(self, img: Image.Image, selected_model):
        return img

    def upscale(self, img: Image.Image, scale: float, selected_model=None) -> Image.Image:
        """Runs do_upscale until the image is at least `scale` times larger (at most three passes), then resizes
        to exactly that size (a multiple of 8), as A1111 does."""
        self.scale = scale
        dest_w = int((img.width * scale) // 8 * 8)
        dest_h = int((img.height * scale) // 8 * 8)
        for _ in range(3):
            if img.width >= dest_w and img.height >= dest_h:
                break
            shape = (img.width, img.height)
            img = self.do_upscale(img, selected_model)
            if shape == (img.width, img.height):
                break
        if (img.width, img.height) != (dest_w, dest_h):
            img = img.resize((dest_w, dest_h), resample=LANCZOS)
        return img

    def load_model(self, path: str):
        return None

    def find_models(self, ext_filter=None) -> list:
        from modules import modelloader
        return modelloader.load_models(model_path=self.model_path, model_url=self.model_url,
                                       command_path=self.user_path, ext_filter=ext_filter)

    def update_status(self, prompt) -> None:
        print(f"\nextras: {prompt}", flush=True)


class UpscalerData:
    def __init__(self, name: str, path: str | None, upscaler: Upscaler | None = None, scale: int = 4, model=None,
                 sha256: str | None = None):
        self.name = name
        self.data_path = path
        self.local_data_path = path
        self.scaler = upscaler
        self.scale = scale
        self.model = model
        self.sha256 = sha256

    def __repr__(self) -> str:
        return f"<UpscalerData name={self.name} path={self.data_path} scale={self.scale}>"


class UpscalerNone(Upscaler):
    name = "None"

    def __init__(self, dirname=None):
        super().__init__(False)
        self.scalers = [UpscalerData("None", None, self)]

    def load_model(self, path):
        return None

    def do_upscale(self, img, selected_model=None):
        return img


class PillowUpscaler(Upscaler):
    """An upscaler that is one Pillow resampling filter (Lanczos, Nearest)."""
    resample = LANCZOS

    def __init__(self, dirname=None):
        super().__init__(False)
        self.scalers = [UpscalerData(self.name, None, self)]

    def do_upscale(self, img, selected_model=None):
        return img.resize((int(img.width * self.scale), int(img.height * self.scale)), resample=self.resample)

    def load_model(self, _):
        return None


class UpscalerLanczos(PillowUpscaler):
    name = "Lanczos"
    resample = LANCZOS


class UpscalerNearest(PillowUpscaler):
    name = "Nearest"
    resample = NEAREST


def builtin_upscalers() -> list[UpscalerData]:
    """None, Lanczos, Nearest, then any other image upscaler the engine names."""
    from modules.engine.run import IMAGE_UPSCALERS
    out = [UpscalerNone().scalers[0], UpscalerLanczos().scalers[0], UpscalerNearest().scalers[0]]
    for name, resample in IMAGE_UPSCALERS.items():
        if name not in ("None", "Lanczos", "Nearest") and resample is not None:
            cls = type(f"Upscaler_{name}", (PillowUpscaler,), {"name": name, "resample": resample})
            out.append(cls().scalers[0])
    return out


class ModelFamilyUpscaler(Upscaler):
    """One model family (A1111's UpscalerESRGAN, UpscalerRealESRGAN, …): its scalers are the listed models of that
    family; do_upscale runs one pass of the chosen model, tiled with the family's settings."""

    def __init__(self, family, catalogue, models: list):
        self.name = family.name
        self.model_name = family.model_name
        self.model_path = str(catalogue.folder(family))
        self.model_download_path = self.model_path
        self.user_path = self.model_path
        super().__init__(False)
        self.catalogue = catalogue
        self.models = {m.name: m for m in models}
        self.scalers = []
        for m in models:
            data = UpscalerData(m.name, m.data_path, self, m.scale)
            data.local_data_path = str(m.path) if m.path is not None else m.data_path
            data.model_entry = m
            data.model_url = m.download.url if m.download is not None else None
            self.scalers.append(data)

    def _entry(self, selected_model):
        for data in self.scalers:
            if selected_model in (data.data_path, data.local_data_path, data.name):
                return data.model_entry
        found = self.catalogue.find(str(selected_model))
        if found is None:
            raise ValueError(f"{self.name}: unknown upscaler model {selected_model!r}; choose one of "
                             f"{[d.name for d in self.scalers]}")
        return found

    def do_upscale(self, img, selected_model):
        return self.catalogue.upscale_once(self._entry(selected_model), img)

    def load_model(self, path: str):
        entry = self._entry(path)
        return self.catalogue._descriptor(self.catalogue.ensure_file(entry))


def model_upscalers(catalogue, options_get=None) -> list[UpscalerData]:
    """The model upscalers, family by family, as A1111's UpscalerData."""
    from modules.models.upscaler_models import FAMILIES
    listed = catalogue.list(options_get)
    out: list[UpscalerData] = []
    for family in FAMILIES:
        models = [m for m in listed if m.family is family]
        if models:
            out.extend(ModelFamilyUpscaler(family, catalogue, models).scalers)
    return out
