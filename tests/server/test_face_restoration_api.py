"""Face restoration through the real server: /sdapi/v1/face-restorers in A1111's shape, Extras with GFPGAN and
CodeFormer visibility and weight (real-layout files in A1111's folders; the detector file finds no face, so the
picture comes back as it went in, after both networks loaded), txt2img with restore_faces writing "Face
restoration: CodeFormer" in the infotext and info; and offline (every download refused by a proxy that is not
there), a 404 naming the missing file, its URL and the folder."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support import face_factory
from tests.support.model_factory import write_tiny_checkpoint
from tests.support.server import start_offline_server, start_server


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


PICTURE = Image.new("RGB", (48, 40), (200, 160, 140))


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("faces-server")
    models = data / "models"
    write_tiny_checkpoint(models / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=3)
    face_factory.write_gfpgan(models / "GFPGAN" / "GFPGANv1.4.pth")
    face_factory.write_retinaface(models / "GFPGAN" / "detection_Resnet50_Final.pth")
    face_factory.write_codeformer(models / "Codeformer" / "codeformer-v0.1.0.pth")
    srv = start_server(data, "--no-demo-model")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("faces-offline")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=3)
    srv = start_offline_server(data, "--no-demo-model")
    yield srv
    srv.stop()


def test_face_restorers_list(api_server):
    r = requests.get(api_server.api("face-restorers"), timeout=30)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [x["name"] for x in listed] == ["CodeFormer", "GFPGAN"]
    assert listed[0]["cmd_dir"] == str(api_server.data_dir / "models" / "Codeformer")
    assert listed[1]["cmd_dir"] == str(api_server.data_dir / "models" / "GFPGAN")


def test_extras_with_both_restorers(api_server):
    r = requests.post(api_server.api("extra-single-image"), json={
        "image": b64(PICTURE), "upscaler_1": "None", "gfpgan_visibility": 1.0, "codeformer_visibility": 0.5,
        "codeformer_weight": 0.3}, timeout=600)
    assert r.status_code == 200, r.text
    out = decode(r.json()["image"]).convert("RGB")
    assert out.size == PICTURE.size and np.array_equal(np.asarray(out), np.asarray(PICTURE))
    bad = requests.post(api_server.api("extra-single-image"), json={
        "image": b64(PICTURE), "codeformer_visibility": 2}, timeout=60)
    assert bad.status_code == 422 and "codeformer_visibility" in bad.json()["detail"]


def test_txt2img_restore_faces_infotext(api_server):
    r = requests.post(api_server.api("txt2img"), json={
        "prompt": "a face", "steps": 2, "width": 64, "height": 64, "seed": 1, "restore_faces": True}, timeout=600)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["restore_faces"] is True
    assert "Face restoration: CodeFormer" in info["infotexts"][0]
    plain = requests.post(api_server.api("txt2img"), json={
        "prompt": "a face", "steps": 2, "width": 64, "height": 64, "seed": 1}, timeout=600)
    assert "Face restoration" not in json.loads(plain.json()["info"])["infotexts"][0]   # the setting is off


def test_offline_errors_name_file_url_and_folder(offline_server):
    folder = offline_server.data_dir / "models" / "GFPGAN"
    r = requests.post(offline_server.api("extra-single-image"), json={
        "image": b64(PICTURE), "gfpgan_visibility": 0.5}, timeout=120)
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "GFPGANv1.4.pth" in detail and str(folder) in detail
    assert "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth" in detail
    r = requests.post(offline_server.api("txt2img"), json={
        "prompt": "a face", "steps": 2, "width": 64, "height": 64, "restore_faces": True}, timeout=300)
    assert r.status_code == 404, r.text
    assert "codeformer-v0.1.0.pth" in r.json()["detail"]
    assert str(offline_server.data_dir / "models" / "Codeformer") in r.json()["detail"]
