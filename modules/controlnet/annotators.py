"""Annotator weight files (the preprocessors' networks): where they are looked for and how they are fetched.

sd-webui-controlnet downloads each file on first use into `extensions/sd-webui-controlnet/annotator/downloads/<dir>/`
(§3.1), or into the folder named by the setting `control_net_modules_path` / the flag
`--controlnet-annotator-models-path`. We look in that folder and in the other places users keep these files
(`models/ControlNetPreprocessor`, Forge's folder; the extension's old `annotator/ckpts`), each as `<dir>/<subdir>/<file>`
or flat `<dir>/<file>`, so a user who already has them never downloads them again.

Downloads go through modules.download (the launcher's downloader): a `.part` file renamed into place only when
complete and, where the sha256 is known, verified; a tqdm bar on the console; proxies, HF_ENDPOINT and mirrors from
modules.net_policy. Offline, or when the download fails, AnnotatorMissing says which file is missing, where to get it
and which folder to put it in.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

EXTENSION_DIR = Path("extensions") / "sd-webui-controlnet"
EXTENSION_DOWNLOADS = EXTENSION_DIR / "annotator" / "downloads"
EXTENSION_CKPTS = EXTENSION_DIR / "annotator" / "ckpts"
FORGE_DIR_NAME = "ControlNetPreprocessor"   # under the models folder

HF = "https://huggingface.co/"
ANNOTATORS = HF + "lllyasviel/Annotators/resolve/main/"


@dataclass(frozen=True)
class AnnotatorFile:
    """One weight file: its name on disk, the folder under `annotator/downloads/` the extension keeps it in, where
    to download it, and its sha256 (None where no published checksum was found)."""
    filename: str
    subdir: str
    url: str
    sha256: str | None = None


def annotators_file(filename: str, subdir: str, sha256: str | None = None) -> AnnotatorFile:
    """A file of the lllyasviel/Annotators hub repository, where most annotator weights come from (§3.3)."""
    return AnnotatorFile(filename, subdir, ANNOTATORS + filename, sha256)


class AnnotatorMissing(Exception):
    """An annotator file is neither on disk nor downloadable now. The message names the file, its URL and the
    folder(s) to put it in, so an offline user can fetch it by hand."""

    def __init__(self, file: AnnotatorFile, folders: list[Path], reason: str) -> None:
        self.file = file
        self.folders = list(folders)
        self.reason = reason
        where = " or ".join(str(folder) for folder in self.folders)
        super().__init__(f"annotator file {file.filename} is missing ({reason}); download {file.url} and put it "
                         f"in {where}")


class AnnotatorStore:
    """Finds annotator files in `search_dirs` (and `download_dir`) and downloads missing ones into `download_dir`."""

    def __init__(self, search_dirs: list[Path], download_dir: Path, allow_download: bool = True) -> None:
        self.download_dir = Path(download_dir)
        dirs: list[Path] = []
        for folder in [*map(Path, search_dirs), self.download_dir]:
            if folder not in dirs:
                dirs.append(folder)
        self.search_dirs = dirs
        self.allow_download = allow_download
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def candidates(self, f: AnnotatorFile) -> list[Path]:
        """Every path `find` tries, in order: per folder `<dir>/<subdir>/<file>`, then `<dir>/<file>`."""
        paths = []
        for folder in self.search_dirs:
            if f.subdir:
                paths.append(folder / f.subdir / f.filename)
            paths.append(folder / f.filename)
        return paths

    def find(self, f: AnnotatorFile) -> Path | None:
        for path in self.candidates(f):
            if path.is_file():
                return path
        return None

    def target(self, f: AnnotatorFile) -> Path:
        """Where a download of `f` goes (the extension's layout: `<download_dir>/<subdir>/<file>`)."""
        return self.download_dir / f.subdir / f.filename if f.subdir else self.download_dir / f.filename

    def ensure(self, f: AnnotatorFile) -> Path:
        """The file's path; downloads it first when no folder has it. Raises AnnotatorMissing when that fails."""
        found = self.find(f)
        if found is not None:
            return found
        target = self.target(f)
        if not self.allow_download:
            raise AnnotatorMissing(f, [target.parent], "downloads are turned off")
        with self._lock_for(target):   # two jobs needing the same file share one download
            found = self.find(f)
            if found is not None:
                return found
            from modules import download
            print(f"ControlNet: downloading annotator file {f.filename} from {f.url} to {target.parent}")
            try:
                return download.download_file(f.url, target, sha256=f.sha256, progress=True)
            except download.DownloadError as exc:
                raise AnnotatorMissing(f, [target.parent], f"download failed: {exc}") from None

    def _lock_for(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(path, threading.Lock())


def default_folders(data_dir: Path, models_dir: Path | None = None, flag_path: str | None = None,
                    setting_path: str | None = None) -> tuple[Path, list[Path]]:
    """(download folder, search folders) as the extension chooses them, plus the places users keep these files.

    The override is the setting `control_net_modules_path`, else the flag `--controlnet-annotator-models-path`
    (the extension's order; a relative path is taken from the data folder); it is then where downloads go.
    Without one, downloads go to the extension's `annotator/downloads` when `extensions/sd-webui-controlnet`
    exists (users coming from the extension keep one copy), else to `models/ControlNetPreprocessor`: creating the
    extension's folder in a fresh install would make an empty extension appear in the Extensions tab.
    """
    data_dir = Path(data_dir)
    models_dir = Path(models_dir) if models_dir is not None else data_dir / "models"
    ext_downloads = data_dir / EXTENSION_DOWNLOADS
    forge = models_dir / FORGE_DIR_NAME
    override = None
    for value in (setting_path, flag_path):
        if value and str(value).strip():
            override = Path(str(value).strip()).expanduser()
            if not override.is_absolute():
                override = data_dir / override
            break
    if override is not None:
        download_dir = override
    elif (data_dir / EXTENSION_DIR).is_dir():
        download_dir = ext_downloads
    else:
        download_dir = forge
    search = [download_dir, ext_downloads, forge, data_dir / EXTENSION_CKPTS]
    unique: list[Path] = []
    for folder in search:
        if folder not in unique:
            unique.append(folder)
    return download_dir, unique


def default_store(data_dir: Path, models_dir: Path | None = None, flag_path: str | None = None,
                  setting_path: str | None = None, allow_download: bool = True) -> AnnotatorStore:
    download_dir, search = default_folders(data_dir, models_dir, flag_path, setting_path)
    return AnnotatorStore(search, download_dir, allow_download)
