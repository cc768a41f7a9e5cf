"""Settings, styles, the hash cache, tokenizer files and downloads are written through modules.atomic_file.replacing:
whole or not at all, with the permissions a plain open() gives under the user's umask (config.json and styles.csv
used to come out 0o600, the mode of tempfile.mkstemp)."""
from __future__ import annotations

import os
import stat

import pytest

from modules.download import DownloadError, download_file
from modules.models import tokenizer_assets
from modules.models.hashing import HashCache
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
