"""The CLIP interrogator's category lists: A1111's `interrogate/` folder of `*.txt` files, one phrase a line.

Each file is a category named by its stem (`artists`, `flavors`, `mediums`, `movements`); a `.topN.` in the name
(`flavors.top3.txt`) makes the interrogator add the N best phrases instead of one. When the folder does not exist,
A1111 fills it with pharmapsychotic's clip-interrogator lists on first use; so do we, through modules.download,
into a temporary folder renamed into place only when all four arrived.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from modules.interrogate.weights import WeightFile, WeightsMissing

SOURCE = "https://raw.githubusercontent.com/pharmapsychotic/clip-interrogator/main/clip_interrogator/data/"
DEFAULT_NAMES = ("artists", "flavors", "mediums", "movements")
_TOPN = re.compile(r"\.top(\d+)\.")


@dataclass(frozen=True)
class Category:
    name: str
    topn: int
    items: list[str]


def category_types(folder: Path) -> list[str]:
    """The category names in `folder` (the choices of the setting interrogate_clip_skip_categories)."""
    return sorted(p.stem for p in Path(folder).glob("*.txt")) if Path(folder).is_dir() else []


def load(folder: Path, skip: list[str] | tuple = ()) -> list[Category]:
    out = []
    for path in sorted(Path(folder).glob("*.txt")):
        if path.stem in skip:
            continue
        m = _TOPN.search(path.name)
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        out.append(Category(path.stem, int(m.group(1)) if m else 1, [line for line in lines if line]))
    return out


def ensure(folder: Path, source: str = SOURCE, allow_download: bool = True) -> Path:
    """The folder, with A1111's default lists downloaded into it first when it does not exist."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    first = WeightFile("CLIP interrogator category list", f"{DEFAULT_NAMES[0]}.txt", source + "artists.txt", ())
    if not allow_download:
        raise WeightsMissing(first, folder, "downloads are turned off")
    from modules import download
    tmp = folder.with_name(folder.name + "_tmp")
    print(f"Interrogate: downloading the CLIP category lists from {source} to {folder}")
    try:
        for name in DEFAULT_NAMES:
            url = source + f"{name}.txt"
            try:
                download.download_file(url, tmp / f"{name}.txt", progress=True)
            except download.DownloadError as exc:
                raise WeightsMissing(WeightFile("CLIP interrogator category list", f"{name}.txt", url, ()),
                                     folder, f"download failed: {exc}") from None
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
