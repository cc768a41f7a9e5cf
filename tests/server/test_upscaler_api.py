"""Upscaler models on the real server: /sdapi/v1/upscalers in A1111's shape with the real scales, Extras (single and
batch, upscaler 2 with visibility) and Hires. fix with a model upscaler, a file added while the server runs, and,
offline (the GitHub mirror points at a port nothing listens on), a 404 that names the missing file, its URL and its
folder instead of a 500."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image

from modules.images import read_info
from tests.support import upscaler_factory as factory
from tests.support.api import decode, txt2img
from tests.support.server import free_port, make_data_dir, start_server


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PICTURE = Image.fromarray((np.indices((20, 30)).sum(0)[..., None] * [5, 3, 1] % 255).astype(np.uint8))


@pytest.fixture(scope="module")
def upscaler_server(tmp_path_factory, tiny_sd1):
    import os
    data = make_data_dir(tmp_path_factory.mktemp("upscaler-server"), tiny_sd1)
    factory.write(data / "models" / "RealESRGAN" / "tiny_compact.pth", "compact", scale=2)
    factory.write(data / "models" / "ESRGAN" / "tiny_esrgan.pth", "esrgan", scale=4)
    saved = os.environ.get("GITHUB_MIRROR")
    os.environ["GITHUB_MIRROR"] = f"http://127.0.0.1:{free_port()}/"   # every github.com download is refused
    try:
        srv = start_server(data)
    finally:
        if saved is None:
            os.environ.pop("GITHUB_MIRROR", None)
        else:
            os.environ["GITHUB_MIRROR"] = saved
    yield srv
    srv.stop()


def upscalers(server) -> dict:
    r = requests.get(server.api("upscalers"), timeout=30)
    assert r.status_code == 200, r.text
    return {u["name"]: u for u in r.json()}


def test_upscalers_list_models_with_their_real_scale(upscaler_server):
    listed = upscalers(upscaler_server)
    assert list(listed)[:3] == ["None", "Lanczos", "Nearest"]
    compact = listed["tiny_compact"]
    assert set(compact) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert compact["scale"] == 2 and compact["model_path"].endswith("RealESRGAN/tiny_compact.pth")
    assert listed["tiny_esrgan"]["scale"] == 4 and listed["tiny_esrgan"]["model_name"] == "ESRGAN_4x"
    entry = listed["R-ESRGAN 4x+"]   # A1111's download list: not on disk, its URL as the path
    assert entry["model_path"] == entry["model_url"] == \
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"
    assert entry["scale"] == 4
    real = requests.get(upscaler_server.api("realesrgan-models"), timeout=30).json()   # A1111's {name, path, scale}
    assert [(m["name"], m["scale"]) for m in real] == [("R-ESRGAN 4x+", 4), ("R-ESRGAN 4x+ Anime6B", 4),
                                                       ("tiny_compact", 2)]
    # a file added while the server runs is listed at the next request
    factory.write(upscaler_server.data_dir / "models" / "DAT" / "late_dat.pth", "dat", scale=3)
    assert upscalers(upscaler_server)["late_dat"]["scale"] == 3


def test_extras_with_model_upscalers(upscaler_server):
    api = upscaler_server.api
    r = requests.post(api("extra-single-image"), json={"image": b64(PICTURE), "upscaler_1": "tiny_compact",
                                                       "upscaling_resize": 2}, timeout=120)
    assert r.status_code == 200, r.text
    alone = decode(r.json()["image"])
    assert alone.size == (60, 40)
    lanczos = PICTURE.resize((60, 40), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(alone, np.int16) - np.asarray(lanczos, np.int16)).mean() > 5   # the model's own look
    r = requests.post(api("extra-single-image"), json={
        "image": b64(PICTURE), "upscaler_1": "tiny_compact", "upscaler_2": "Lanczos",
        "extras_upscaler_2_visibility": 0.5, "upscaling_resize": 2}, timeout=120)
    blended = np.asarray(decode(r.json()["image"]), np.float32)
    expected = (np.asarray(alone, np.float32) + np.asarray(lanczos, np.float32)) / 2
    assert np.abs(blended - expected).max() <= 1
    r = requests.post(api("extra-batch-images"), json={
        "upscaler_1": "tiny_esrgan", "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 50,
        "imageList": [{"data": b64(PICTURE), "name": "a.png"}, {"data": b64(PICTURE), "name": "b.png"}]},
        timeout=120)
    assert r.status_code == 200, r.text
    assert [decode(x).size for x in r.json()["images"]] == [(100, 50), (100, 50)]


def test_offline_download_entry_is_a_404_naming_file_url_and_folder(upscaler_server):
    r = requests.post(upscaler_server.api("extra-single-image"), json={
        "image": b64(PICTURE), "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 2}, timeout=120)
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "RealESRGAN_x4plus.pth" in detail and "models/RealESRGAN" in detail
    assert "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth" in detail
    assert not list((upscaler_server.data_dir / "models" / "RealESRGAN").glob("RealESRGAN_x4plus*"))


def test_hires_fix_with_a_model_upscaler(upscaler_server):
    r = txt2img(upscaler_server, enable_hr=True, hr_upscaler="tiny_compact", hr_scale=2, hr_second_pass_steps=2,
                denoising_strength=0.5)
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    assert image.size == (128, 128)
    text, _ = read_info(image)
    assert "Hires upscaler: tiny_compact" in text
    bad = txt2img(upscaler_server, enable_hr=True, hr_upscaler="no such model", hr_scale=2)
    assert bad.status_code == 422 and "tiny_compact" in bad.json()["detail"] and "Latent" in bad.json()["detail"]


def test_sd_upscale_script_with_a_model_upscaler(upscaler_server):
    """img2img's SD upscale (A1111's script_args: info, overlap, upscaler by name or index, scale factor)."""
    init = Image.fromarray((np.indices((64, 64)).sum(0)[..., None] * [2, 3, 1] % 255).astype(np.uint8))
    body = {"init_images": [b64(init)], "prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "denoising_strength": 0.3, "script_name": "SD upscale", "script_args": ["", 16, "tiny_compact", 2.0]}
    r = requests.post(upscaler_server.api("img2img"), json=body, timeout=300)
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    assert image.size == (128, 128)
    assert "SD upscale upscaler: tiny_compact" in read_info(image)[0]
