"""A1111's `modules.modelloader`: finding model files in a folder and downloading one when there is none.

Downloads go through modules/download.py (resumable, written only when complete) after net_policy's mirror rewrite
(HF_ENDPOINT, --github-mirror); urllib honours the proxy variables.
"""
from __future__ import annotations

import os
import urllib.parse

from modules import download, net_policy
from modules.file_lists import walk_files
from modules.models.hashing import file_sha256


def load_file_from_url(url: str, *, model_dir: str, progress: bool = True, file_name: str | None = None,
                       hash_prefix: str | None = None, re_download: bool = False) -> str:
    """Downloads `url` into `model_dir` (unless the file is there already) and returns its path. With
    `hash_prefix`, a download whose sha256 does not start with it is thrown away and DownloadError raised."""
    os.makedirs(model_dir, exist_ok=True)
    if not file_name:
        file_name = os.path.basename(urllib.parse.urlparse(url).path)
    if not file_name:
        raise ValueError(f"load_file_from_url: {url!r} names no file; pass file_name=")
    cached = os.path.abspath(os.path.join(model_dir, file_name))
    if os.path.exists(cached) and not re_download:
        return cached
    source = net_policy.rewrite_url(url)
    if not hash_prefix:
        download.download_file(source, cached, progress=progress)
        return cached
    unverified = cached + ".unverified"
    download.download_file(source, unverified, progress=progress)
    digest = file_sha256(unverified)
    if not digest.startswith(hash_prefix.lower()):
        os.remove(unverified)
        raise download.DownloadError(f"{url}: sha256 {digest} does not start with the expected {hash_prefix}; "
                                     "the file was deleted")
    os.replace(unverified, cached)
    return cached


def load_models(model_path: str, model_url: str | None = None, command_path: str | None = None,
                ext_filter=None, download_name: str | None = None, ext_blacklist=None,
                hash_prefix: str | None = None) -> list[str]:
    """The model files in `model_path` (and `command_path`), filtered by extension; when there are none and
    `model_url` is given, that file downloaded as `download_name` (or, without a name, the URL itself)."""
    output: list[str] = []
    places = [model_path]
    if command_path is not None and command_path != model_path:
        pretrained = os.path.join(command_path, "experiments/pretrained_models")
        places.append(pretrained if os.path.exists(pretrained) else command_path)
    for place in places:
        for full_path in walk_files(place, allowed_extensions=ext_filter):
            if os.path.islink(full_path) and not os.path.exists(full_path):
                continue
            if ext_blacklist is not None and any(full_path.endswith(x) for x in ext_blacklist):
                continue
            if full_path not in output:
                output.append(full_path)
    if model_url is not None and not output:
        if download_name is not None:
            output.append(load_file_from_url(model_url, model_dir=places[0], file_name=download_name,
                                             hash_prefix=hash_prefix))
        else:
            output.append(model_url)
    return output


def friendly_name(file: str) -> str:
    """A model's name from its file name or URL: the base name without extension."""
    if file.startswith("http"):
        file = urllib.parse.urlparse(file).path
    return os.path.splitext(os.path.basename(file))[0]
