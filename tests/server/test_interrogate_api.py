"""POST /sdapi/v1/interrogate on the real server: a caption from the CLIP interrogator and tags from DeepBooru, with
tiny real-layout files in A1111's folders (tests/support/interrogate_factory.py); A1111's 404 for an unknown model,
with the allowed names; and offline (every download refused by a proxy that is not there), a 404 that names the
missing file and its folder instead of the old 501."""
from __future__ import annotations

import base64
import io
import re

import pytest
import requests
from PIL import Image

from tests.support import interrogate_factory as factory
from tests.support.server import start_offline_server, start_server

TAGS = ["1girl", "solo", "rating:safe", "smile_(happy)", "long_hair", "blue_sky"]


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PICTURE = b64(Image.new("RGB", (40, 32), (120, 40, 200)))


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("interrogate-server")
    models = data / "models"
    factory.write_blip(models / "BLIP" / "model_base_caption_capfilt_large.pth")
    factory.write_clip(models / "CLIP" / "ViT-L-14.pt")
    factory.write_deepdanbooru(models / "torch_deepdanbooru" / "model-resnet_custom_v3.pt", TAGS)
    factory.write_categories(data / "interrogate")
    (data / "config.json").write_text('{"interrogate_clip_min_length": 4, "interrogate_clip_max_length": 10, '
                                      '"interrogate_deepbooru_score_threshold": 0.0}')
    srv = start_server(data, "--nowebui", "--no-demo-model", "--skip-load-model-at-start", wait_model=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("interrogate-offline")
    srv = start_offline_server(data, "--nowebui", "--no-demo-model", "--skip-load-model-at-start", wait_model=False)
    yield srv
    srv.stop()


def test_deepdanbooru_tags(api_server):
    r = requests.post(api_server.api("interrogate"), json={"image": PICTURE, "model": "deepdanbooru"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"caption": "1girl, blue sky, long hair, smile \\(happy\\), solo"}


def test_clip_caption_with_category_phrases(api_server):
    r = requests.post(api_server.api("interrogate"), json={"image": "data:image/png;base64," + PICTURE},
                      timeout=120)   # model defaults to "clip", as in A1111
    assert r.status_code == 200, r.text
    caption = r.json()["caption"]
    parts = caption.split(", ")
    assert len(parts) >= 5 and parts[0].strip()
    assert parts[-4] in factory.CATEGORIES["artists"] and parts[-3] in factory.CATEGORIES["flavors"]
    assert parts[-2] in factory.CATEGORIES["mediums"] and parts[-1] in factory.CATEGORIES["movements"]
    again = requests.post(api_server.api("interrogate"), json={"image": PICTURE, "model": "clip"}, timeout=120)
    assert again.json()["caption"] == caption   # greedy decoding: the same image gives the same text


def test_unknown_model_and_bad_image(api_server):
    r = requests.post(api_server.api("interrogate"), json={"image": PICTURE, "model": "wd14"}, timeout=30)
    assert r.status_code == 404
    assert "clip" in r.json()["detail"] and "deepdanbooru" in r.json()["detail"] and "wd14" in r.json()["detail"]
    bad = requests.post(api_server.api("interrogate"), json={"image": "not base64!", "model": "clip"}, timeout=30)
    assert bad.status_code == 422 and "image" in bad.text


def test_offline_answers_404_naming_file_and_folder(offline_server):
    data = offline_server.data_dir
    r = requests.post(offline_server.api("interrogate"), json={"image": PICTURE, "model": "deepdanbooru"},
                      timeout=120)
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "model-resnet_custom_v3.pt" in detail and str(data / "models" / "torch_deepdanbooru") in detail
    assert "https://github.com/AUTOMATIC1111/TorchDeepDanbooru/releases/download/v1/" in detail
    r = requests.post(offline_server.api("interrogate"), json={"image": PICTURE, "model": "clip"}, timeout=120)
    assert r.status_code == 404 and re.search(r"model_base_caption_capfilt_large\.pth.*models/BLIP",
                                              r.json()["detail"])
    assert not list((data / "models").rglob("*.part"))
