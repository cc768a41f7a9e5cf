"""The face restorers' weight files, A1111's names, folders and URLs:

- GFPGAN: `models/GFPGAN` (or --gfpgan-models-path), any .pth with "GFPGAN" in its name, downloaded as
  `GFPGANv1.4.pth` from TencentARC's v1.3.0 release.
- CodeFormer: `models/Codeformer` (or --codeformer-models-path), any .pth, downloaded as `codeformer-v0.1.0.pth`
  from sczhou's v0.1.0 release (published there as codeformer.pth).
- The RetinaFace detector both use: `detection_Resnet50_Final.pth` from facexlib's v0.1.0 release, which A1111 has
  facexlib put in the GFPGAN folder.

The file records and the "missing" error are the interrogators' (modules/interrogate/weights.py); the download
goes through modules.download (`.part` file, resume, tqdm on the console).
"""
from __future__ import annotations

from pathlib import Path

from modules.interrogate import weights as interrogate_weights
from modules.interrogate.weights import WeightFile, WeightPlace, WeightsMissing

GFPGAN = WeightFile("GFPGAN model", "GFPGANv1.4.pth",
                    "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth", (".pth",))
CODEFORMER = WeightFile("CodeFormer model", "codeformer-v0.1.0.pth",
                        "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth", (".pth",))
DETECTOR = WeightFile("RetinaFace face detector", "detection_Resnet50_Final.pth",
                      "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth", ())

__all__ = ["GFPGAN", "CODEFORMER", "DETECTOR", "WeightsMissing", "FilteredPlace", "ensure", "default_places"]


class FilteredPlace(WeightPlace):
    """A place whose stand-in files must also have `name_contains` in their name (A1111 takes any .pth with
    "GFPGAN" in its name from the GFPGAN folder, where the detector's .pth lies too)."""

    def __init__(self, file: WeightFile, download_dir: Path, folders: tuple[Path, ...] = (),
                 name_contains: str = ""):
        super().__init__(file, download_dir, folders)
        self.name_contains = name_contains

    def find(self) -> Path | None:
        found = super().find()
        if found is not None and found.name != self.file.filename and self.name_contains not in found.name:
            folders = [self.download_dir, *self.folders]
            matches = sorted(p for folder in folders if folder.is_dir() for p in folder.iterdir()
                             if p.is_file() and p.suffix.lower() in self.file.suffixes and self.name_contains in p.name)
            return matches[0] if matches else None
        return found


def ensure(place: WeightPlace, allow_download: bool = True) -> Path:
    """The file's path, downloaded into place.download_dir first when no folder has it; WeightsMissing (naming the
    file, its URL and the folder) when it is not there and cannot be downloaded now."""
    return interrogate_weights.ensure(place, allow_download, purpose="Face restoration")


def default_places(models_dir: Path, gfpgan_models_path: str | None = None,
                   codeformer_models_path: str | None = None) -> dict[str, WeightPlace]:
    models_dir = Path(models_dir)
    gfpgan_dir = Path(gfpgan_models_path).expanduser() if gfpgan_models_path else models_dir / "GFPGAN"
    codeformer_dir = Path(codeformer_models_path).expanduser() if codeformer_models_path else \
        models_dir / "Codeformer"
    return {
        "GFPGAN": FilteredPlace(GFPGAN, gfpgan_dir, (models_dir / "GFPGAN",), name_contains="GFPGAN"),
        "CodeFormer": WeightPlace(CODEFORMER, codeformer_dir, (models_dir / "Codeformer",)),
        # facexlib's own download folder name is accepted too (a facexlib install leaves it in …/facexlib/weights)
        "detector": WeightPlace(DETECTOR, gfpgan_dir, (models_dir / "GFPGAN", models_dir / "facexlib")),
    }
