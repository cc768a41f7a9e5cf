"""Files the web UI writes (images, zips, exported and merged models) appear whole or not at all, and get the
permissions a plain open() gives under the user's umask, not the 0o600 of temporary files."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from PIL import Image

from modules import atomic_file, images
from modules.download import DownloadError, download_file
from modules.models import tokenizer_assets
from modules.models.hashing import HashCache
from modules.models.ldm_export import save_checkpoint
from modules.options import Options
from modules.styles import Style, StyleDatabase


@pytest.fixture
def umask_027():
    old = os.umask(0o027)  # distinct from both 0o600 (temporary files) and the usual 0o644
    try:
        yield 0o640
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_mode(tmp_path, umask_027):
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert _mode(tmp_path / "plain.txt") == umask_027

    with atomic_file.replacing(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "a.bin") == umask_027

    # safetensors' save_file writes its own 0o600 file in place of the one it is given
    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "m.safetensors")
    assert _mode(tmp_path / "m.safetensors") == umask_027
    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "m.ckpt")
    assert _mode(tmp_path / "m.ckpt") == umask_027

    png = images.save_image(Image.new("RGB", (8, 8)), tmp_path / "out", 1, "a prompt", None, date_dirs=False)
    assert _mode(png) == umask_027


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file.replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_settings_styles_and_caches_get_the_umask_mode(tmp_path, umask_027):
    Options(tmp_path / "config.json").save()
    assert _mode(tmp_path / "config.json") == umask_027

    db = StyleDatabase(tmp_path / "styles.csv")
    db.save([Style("red", "red {prompt}", "blue")])
    assert _mode(tmp_path / "styles.csv") == umask_027
    assert db.styles["red"].prompt == "red {prompt}"

    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    HashCache(tmp_path / "cache.json").sha256(model)
    assert _mode(tmp_path / "cache.json") == umask_027

    tokenizer_assets._write_atomic(tmp_path / "vocab.json", "{}")
    assert _mode(tmp_path / "vocab.json") == umask_027

    # every writer cleaned up after itself: only the targets (and the hashed model) are left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json", "config.json", "model.bin", "styles.csv",
                                                         "vocab.json"]


def test_download_to_a_folder_fails_before_fetching(tmp_path):
    # The finished download is moved with atomic_file.replacing, which throws the data away if that move fails, so a
    # folder in the way is reported before anything is fetched (nothing listens on loopback port 9).
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(DownloadError, match="is a folder"):
        download_file("http://127.0.0.1:9/model.safetensors", tmp_path / "model.safetensors", timeout=1)
