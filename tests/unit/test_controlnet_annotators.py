"""Annotator weight files (modules.controlnet.annotators): found in every folder users keep them in, downloaded from
a real HTTP server on loopback with the checksum checked, and a clear AnnotatorMissing offline."""
from __future__ import annotations

import dataclasses
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest

from modules.controlnet import preprocessors
from modules.controlnet.annotators import (AnnotatorFile, AnnotatorMissing, AnnotatorStore, default_folders,
                                           default_store)
from modules.controlnet.preprocessors import PreprocessorUnavailable
from tests.support.download_server import payload, server  # noqa: F401 (fixtures)

HED = AnnotatorFile("ControlNetHED.pth", "hed", "https://huggingface.co/lllyasviel/Annotators/resolve/main/"
                                                "ControlNetHED.pth")


def closed_port_url(path: str) -> str:
    """A loopback URL nothing listens on: connections are refused (offline)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_finds_a_file_in_each_folder_kind(tmp_path):
    download, search_a, search_b = tmp_path / "downloads", tmp_path / "forge", tmp_path / "ckpts"
    store = AnnotatorStore([search_a, search_b], download, allow_download=False)
    assert store.find(HED) is None
    for path in (download / "hed" / HED.filename, search_a / "hed" / HED.filename, search_b / HED.filename):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"hed weights")
        assert store.find(HED) == path
        assert store.ensure(HED) == path
        path.unlink()


def test_search_order_is_the_given_folders_then_the_download_folder(tmp_path):
    first, download = tmp_path / "first", tmp_path / "downloads"
    for folder in (first, download):
        (folder / "hed").mkdir(parents=True)
        (folder / "hed" / HED.filename).write_bytes(folder.name.encode())
    store = AnnotatorStore([first], download)
    assert store.find(HED).read_bytes() == b"first"


def test_default_folders(tmp_path):
    data = tmp_path / "data"
    download, search = default_folders(data)
    assert download == data / "models" / "ControlNetPreprocessor"      # no extension folder: none is created
    assert search == [download, data / "extensions/sd-webui-controlnet/annotator/downloads",
                      data / "extensions/sd-webui-controlnet/annotator/ckpts"]
    (data / "extensions" / "sd-webui-controlnet").mkdir(parents=True)
    download, search = default_folders(data, models_dir=tmp_path / "models")
    assert download == data / "extensions/sd-webui-controlnet/annotator/downloads"
    assert tmp_path / "models" / "ControlNetPreprocessor" in search
    # the setting wins over the flag; a relative path is taken from the data folder
    download, search = default_folders(data, flag_path=str(tmp_path / "flag"), setting_path="annot")
    assert download == data / "annot" and search[0] == data / "annot"
    download, _ = default_folders(data, flag_path=str(tmp_path / "flag"), setting_path="  ")
    assert download == tmp_path / "flag"
    store = default_store(data, flag_path=str(tmp_path / "flag"), allow_download=False)
    assert store.download_dir == tmp_path / "flag" and not store.allow_download


def test_downloads_with_checksum_into_the_subfolder(server, payload, tmp_path):
    f = AnnotatorFile("model.pth", "hed", server.url("/file.bin"), hashlib.sha256(payload).hexdigest())
    store = AnnotatorStore([tmp_path / "other"], tmp_path / "downloads")
    path = store.ensure(f)
    assert path == tmp_path / "downloads" / "hed" / "model.pth"
    assert path.read_bytes() == payload
    assert not Path(str(path) + ".part").exists()
    assert store.ensure(f) == path and len(server.requests) == 1    # found the second time, no new request


def test_wrong_checksum_leaves_no_file_and_raises(server, tmp_path):
    f = AnnotatorFile("model.pth", "hed", server.url("/file.bin"), "0" * 64)
    store = AnnotatorStore([], tmp_path / "downloads")
    with pytest.raises(AnnotatorMissing, match="sha256 mismatch") as err:
        store.ensure(f)
    assert err.value.file == f
    target = tmp_path / "downloads" / "hed" / "model.pth"
    assert not target.exists() and not Path(str(target) + ".part").exists()


def test_offline_names_the_file_url_and_folder(tmp_path):
    f = AnnotatorFile("body_pose_model.pth", "openpose", closed_port_url("/body_pose_model.pth"))
    store = AnnotatorStore([tmp_path / "forge"], tmp_path / "downloads")
    with pytest.raises(AnnotatorMissing) as err:
        store.ensure(f)
    message = str(err.value)
    assert "body_pose_model.pth" in message and f.url in message
    assert str(tmp_path / "downloads" / "openpose") in message
    assert "could not connect" in message
    assert not (tmp_path / "downloads" / "openpose" / "body_pose_model.pth").exists()


def test_downloads_off_raises_without_a_request(server, tmp_path):
    f = AnnotatorFile("model.pth", "hed", server.url("/file.bin"))
    with pytest.raises(AnnotatorMissing, match="downloads are turned off"):
        AnnotatorStore([], tmp_path, allow_download=False).ensure(f)
    assert server.requests == []


def test_a_neural_preprocessor_fetches_its_weights_before_refusing(server, payload, tmp_path):
    f = AnnotatorFile("scannet.pt", "normal_bae", server.url("/file.bin"), hashlib.sha256(payload).hexdigest())
    normal = dataclasses.replace(preprocessors.get("normal_bae"), weights=(f,))     # its network is not built in
    store = AnnotatorStore([], tmp_path)
    with pytest.raises(PreprocessorUnavailable, match="normal_bae"):
        normal.run(np.zeros((64, 64, 3), np.uint8), 64, 0.5, 0.5, store=store)
    assert (tmp_path / "normal_bae" / f.filename).read_bytes() == payload
