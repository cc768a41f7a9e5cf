"""The interrogators' weight files: where they are looked for, and their download on first use.

A1111 keeps BLIP in `models/BLIP` (any .pth there, downloaded as `model_base_caption_capfilt_large.pth`), the
DeepDanbooru port in `models/torch_deepdanbooru` (`model-resnet_custom_v3.pt`) and OpenAI's CLIP ViT-L/14 where the
`clip` package puts it (`--clip-models-path`, else `~/.cache/clip`, as `ViT-L-14.pt`). We read all of those places;
a CLIP download goes to `--clip-models-path` or `models/CLIP`, the others to A1111's folders.

Downloads go through modules.download (`.part` file, resume, sha256 where published, tqdm on the console). When a
file is neither on disk nor downloadable, WeightsMissing names the file, its URL and the folder to put it in.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightFile:
    """One model file: the name A1111 downloads it as, the suffixes A1111 accepts for it in its folder (any file with
    one of them is used when the named one is absent), its URL and its sha256 (None where none is published)."""
    label: str
    filename: str
    url: str
    suffixes: tuple[str, ...]
    sha256: str | None = None


BLIP = WeightFile(
    "BLIP caption model", "model_base_caption_capfilt_large.pth",
    "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/model_base_caption_capfilt_large.pth",
    (".pth",))
# OpenAI publishes the sha256 as the URL's folder (the clip package checks it the same way).
CLIP_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
CLIP = WeightFile(
    "CLIP ViT-L/14", "ViT-L-14.pt", f"https://openaipublic.azureedge.net/clip/models/{CLIP_SHA256}/ViT-L-14.pt",
    (), CLIP_SHA256)
DEEPDANBOORU = WeightFile(
    "DeepDanbooru model", "model-resnet_custom_v3.pt",
    "https://github.com/AUTOMATIC1111/TorchDeepDanbooru/releases/download/v1/model-resnet_custom_v3.pt", (".pt",))


class WeightsMissing(FileNotFoundError):
    """A weight file is neither on disk nor downloadable now; the message says which, from where, and where to put
    it, so an offline user can fetch it by hand."""

    def __init__(self, file: WeightFile, folder: Path, reason: str) -> None:
        self.file, self.folder, self.reason = file, Path(folder), reason
        super().__init__(f"{file.label} file {file.filename} is missing ({reason}); download {file.url} and put it "
                         f"in {self.folder}")


@dataclass
class WeightPlace:
    """Where one file is looked for (`folders`, in order) and where its download goes (`download_dir`)."""
    file: WeightFile
    download_dir: Path
    folders: tuple[Path, ...] = ()

    def find(self) -> Path | None:
        folders = [self.download_dir, *[f for f in self.folders if f != self.download_dir]]
        for folder in folders:
            named = folder / self.file.filename
            if named.is_file():
                return named
        for folder in folders:
            if self.file.suffixes and folder.is_dir():
                found = sorted(p for p in folder.iterdir()
                               if p.is_file() and p.suffix.lower() in self.file.suffixes)
                if found:
                    return found[0]
        return None


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def ensure(place: WeightPlace, allow_download: bool = True, purpose: str = "Interrogate") -> Path:
    """The file's path, downloaded first when no folder has it (the console line starts with `purpose`). Raises
    WeightsMissing when that fails. The face restorers' files come through here too."""
    found = place.find()
    if found is not None:
        return found
    target = place.download_dir / place.file.filename
    if not allow_download:
        raise WeightsMissing(place.file, place.download_dir, "downloads are turned off")
    with _locks_guard:
        lock = _locks.setdefault(target, threading.Lock())
    with lock:   # two requests for the same file share one download
        found = place.find()
        if found is not None:
            return found
        from modules import download
        print(f"{purpose}: downloading {place.file.label} from {place.file.url} to {place.download_dir}")
        try:
            return download.download_file(place.file.url, target, sha256=place.file.sha256, progress=True)
        except download.DownloadError as exc:
            raise WeightsMissing(place.file, place.download_dir, f"download failed: {exc}") from None


def default_places(models_dir: Path, clip_models_path: str | None = None) -> dict[str, WeightPlace]:
    models_dir = Path(models_dir)
    clip_dir = Path(clip_models_path).expanduser() if clip_models_path else models_dir / "CLIP"
    return {
        "blip": WeightPlace(BLIP, models_dir / "BLIP"),
        "clip": WeightPlace(CLIP, clip_dir, (models_dir / "CLIP", Path.home() / ".cache" / "clip")),
        "deepdanbooru": WeightPlace(DEEPDANBOORU, models_dir / "torch_deepdanbooru"),
    }
