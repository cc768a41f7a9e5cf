"""A1111's modelloader against a real HTTP server on loopback (tests/support/download_server.py): downloads land
whole, a wrong hash_prefix leaves nothing behind, a file already there is not fetched again, load_models lists
before it downloads."""
from __future__ import annotations

import hashlib

import pytest

from modules import modelloader
from modules.download import DownloadError
from tests.support.download_server import payload, server  # noqa: F401 (fixtures)


def test_load_file_from_url_checks_the_hash_prefix(server, payload, tmp_path):
    digest = hashlib.sha256(payload).hexdigest()
    path = modelloader.load_file_from_url(server.url("/file.bin"), model_dir=str(tmp_path / "m"), progress=False,
                                          hash_prefix=digest[:10])
    assert path == str(tmp_path / "m" / "file.bin")
    with open(path, "rb") as f:
        assert f.read() == payload
    requests = len(server.requests)
    assert modelloader.load_file_from_url(server.url("/file.bin"), model_dir=str(tmp_path / "m")) == path
    assert len(server.requests) == requests                   # already there: not fetched again
    with pytest.raises(DownloadError, match="does not start with the expected 0000"):
        modelloader.load_file_from_url(server.url("/file.bin"), model_dir=str(tmp_path / "bad"), progress=False,
                                       hash_prefix="0000")
    assert list((tmp_path / "bad").iterdir()) == []


def test_load_models_lists_then_downloads(server, payload, tmp_path):
    folder = tmp_path / "ESRGAN"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.pth").write_bytes(b"x")
    (folder / "a.pth").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    assert modelloader.load_models(str(folder), ext_filter=[".pth"]) == [str(folder / "a.pth"),
                                                                         str(folder / "sub" / "b.pth")]
    empty = tmp_path / "empty"
    got = modelloader.load_models(str(empty), model_url=server.url("/file.bin"), ext_filter=[".pth"],
                                  download_name="model.pth")
    assert got == [str(empty / "model.pth")] and (empty / "model.pth").read_bytes() == payload
    assert modelloader.load_models(str(tmp_path / "none"), model_url="https://example.org/x.pth") == \
        ["https://example.org/x.pth"]
    assert modelloader.friendly_name("https://host/models/4x_Ultra.pth?x=1") == "4x_Ultra"
