"""The extra-network routes of /sdapi/v1 against a real server: /embeddings, /refresh-embeddings, /hypernetworks,
and networks named in a txt2img prompt (TI hashes in the infotext, a hypernetwork changing the image, a missing
one reported)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import requests
import torch

from tests.support.api import decode, txt2img
from tests.support.server import make_data_dir, start_server
from tests.support.hypernet_factory import A_META, layout_a, write_net

WIDTH = 32  # the tiny SD1 text encoder and cross-attention width


def a1111_pt(path, vectors, **extra):
    torch.save({"string_to_param": {"*": vectors}, "name": "inside", **extra}, path)


@pytest.fixture(scope="module")
def net_server(tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("networks-server"), tiny_sd1)
    (data / "embeddings" / "sub").mkdir(parents=True)
    a1111_pt(data / "embeddings" / "zzstar.pt", torch.randn(2, WIDTH), step=40, sd_checkpoint="0123abcd",
             sd_checkpoint_name="tiny")
    a1111_pt(data / "embeddings" / "sub" / "zzwide.pt", torch.randn(1, 768))
    (data / "models" / "hypernetworks").mkdir(parents=True)
    write_net(data / "models" / "hypernetworks" / "hn.pt", layout_a, A_META, (WIDTH, 64), seed=1)
    srv = start_server(data)
    yield srv
    srv.stop()


def get(server, path):
    r = requests.get(server.api(path), timeout=30)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def test_embeddings_list_loaded_and_skipped_in_a1111s_shape(net_server):
    listed = get(net_server, "embeddings")
    # the bundled demo embedding (width 64) is always scanned: skipped on this model
    demo = listed["skipped"].pop("demo-pink", None)
    assert demo is None or demo["shape"] != WIDTH
    assert listed == {
        "loaded": {"zzstar": {"step": 40, "sd_checkpoint": "0123abcd", "sd_checkpoint_name": "tiny", "shape": WIDTH,
                              "vectors": 2}},
        "skipped": {"zzwide": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768,
                               "vectors": 1}}}


def test_refresh_embeddings_reads_new_files(net_server):
    folder = net_server.data_dir / "embeddings"
    a1111_pt(folder / "zznew.pt", torch.randn(3, WIDTH))
    try:
        assert requests.post(net_server.api("refresh-embeddings"), timeout=30).status_code == 200
        assert get(net_server, "embeddings")["loaded"]["zznew"]["vectors"] == 3
    finally:
        (folder / "zznew.pt").unlink()
        requests.post(net_server.api("refresh-embeddings"), timeout=30)
    assert "zznew" not in get(net_server, "embeddings")["loaded"]


def test_hypernetworks_list_name_and_path(net_server):
    assert get(net_server, "hypernetworks") == [
        {"name": "hn", "path": str(net_server.data_dir / "models" / "hypernetworks" / "hn.pt")}]


def test_a_prompt_uses_embeddings_and_hypernetworks(net_server):
    def generate(prompt, negative=""):
        r = txt2img(net_server, prompt=prompt, negative_prompt=negative)
        assert r.status_code == 200, r.text
        return r.json()

    shorthash = hashlib.sha256((net_server.data_dir / "embeddings" / "zzstar.pt").read_bytes()).hexdigest()[:12]
    with_ti = json.loads(generate("a red circle", "zzstar")["info"])
    assert f'TI hashes: "zzstar: {shorthash}"' in with_ti["infotexts"][0]
    plain = generate("a red circle")
    assert "TI hashes" not in json.loads(plain["info"])["infotexts"][0]
    hyper = generate("a red circle <hypernet:hn:1>")
    assert not np.array_equal(np.asarray(decode(hyper["images"][0])), np.asarray(decode(plain["images"][0])))
    missing = json.loads(generate("a red circle <hypernet:nosuch>")["info"])
    assert "Networks not found: nosuch" in missing["comments"]
