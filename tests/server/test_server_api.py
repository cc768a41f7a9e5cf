"""The real server on a loopback port, spoken to over HTTP: the first image end to end through the API."""
from __future__ import annotations

import base64
import datetime
import io
import re
import threading

import numpy as np
import requests
from PIL import Image

from modules.engine import infotext
from tests.support.api import decode, txt2img


def test_txt2img_png_has_matching_infotext(server):
    r = txt2img(server, prompt="a blue square", negative_prompt="blurry", sampler_name="Euler", steps=4,
                cfg_scale=5.5, seed=1234, width=72, height=64)
    assert r.status_code == 200, r.text
    body = r.json()
    image = decode(body["images"][0])
    assert image.format == "PNG" and image.size == (72, 64)
    parsed = infotext.parse(image.info["parameters"])
    models = requests.get(server.api("sd-models"), timeout=10).json()
    current = requests.get(server.api("options"), timeout=10).json()["sd_model_checkpoint"]
    model = next(m for m in models if m["title"] == current)
    assert parsed["Prompt"] == "a blue square" and parsed["Negative prompt"] == "blurry"
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"], parsed["Size"]) == \
        (4, "Euler", 5.5, 1234, "72x64")
    assert parsed["Model hash"] == model["hash"] and parsed["Model"] == model["model_name"]
    info = __import__("json").loads(body["info"])
    assert info["all_seeds"] == [1234] and info["infotexts"][0] == image.info["parameters"]
    assert body["parameters"]["prompt"] == "a blue square" and body["parameters"]["steps"] == 4


def test_same_seed_same_pixels_and_batch_seeds(server):
    a = np.asarray(decode(txt2img(server, seed=77).json()["images"][0]))
    b = np.asarray(decode(txt2img(server, seed=77).json()["images"][0]))
    c = np.asarray(decode(txt2img(server, seed=78).json()["images"][0]))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    batch = txt2img(server, seed=77, batch_size=2).json()
    imgs = [np.asarray(decode(x)) for x in batch["images"]]
    # image i uses seed + i; batched maths may differ from single images in the last bits only
    assert np.abs(imgs[0].astype(int) - a).max() <= 2 and np.abs(imgs[1].astype(int) - c).max() <= 2
    assert np.abs(imgs[1].astype(int) - a).mean() > 5 * max(np.abs(imgs[0].astype(int) - a).mean(), 0.01)


def test_saved_image_path_and_parameters_chunk(server):
    r = txt2img(server, prompt="a green: triangle", seed=4242, save_images=True)
    assert r.status_code == 200
    folder = server.data_dir / "outputs" / "txt2img-images" / datetime.date.today().isoformat()
    files = sorted(folder.glob("*-4242-*.png"))
    assert files, list(folder.glob("*"))
    assert re.fullmatch(r"\d{5}-4242-a green triangle\.png", files[-1].name)
    with Image.open(files[-1]) as saved:
        assert infotext.parse(saved.info["parameters"])["Seed"] == 4242
    assert not list(folder.glob("*.tmp"))


def test_lists_and_options(server):
    samplers = requests.get(server.api("samplers"), timeout=10).json()
    names = [s["name"] for s in samplers]
    assert "Euler a" in names and "DPM++ 2M" in names and all("aliases" in s for s in samplers)
    sde = next(s for s in samplers if s["name"] == "DPM++ SDE")   # A1111's flags, strings on the wire
    assert sde["options"] == {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}
    models = requests.get(server.api("sd-models"), timeout=10).json()
    assert {m["model_name"] for m in models} == {"tiny_sd1", "tiny_sd1_b"}
    assert all(set(m) == {"title", "model_name", "hash", "sha256", "filename", "config"} for m in models)
    opts = requests.get(server.api("options"), timeout=10).json()
    assert opts["samples_save"] is True and "sd_model_checkpoint" in opts


def test_switch_model_through_options(server):
    before = requests.get(server.api("options"), timeout=10).json()["sd_model_checkpoint"]
    target = "tiny_sd1_b" if "tiny_sd1_b" not in before else "tiny_sd1"
    r = requests.post(server.api("options"), json={"sd_model_checkpoint": target}, timeout=60)
    assert r.status_code == 200, r.text
    info = __import__("json").loads(txt2img(server).json()["info"])
    assert info["sd_model_name"] == target
    bad = requests.post(server.api("options"), json={"sd_model_checkpoint": "nope.safetensors"}, timeout=10)
    assert bad.status_code == 422 and "nope.safetensors" in bad.json()["detail"]
    assert __import__("json").loads(txt2img(server).json()["info"])["sd_model_name"] == target


def test_bad_input_is_a_clear_422_and_server_keeps_serving(server):
    r = txt2img(server, width=65)
    assert r.status_code == 422 and "width" in r.json()["detail"] and "multiple of 8" in r.json()["detail"]
    assert set(r.json()) == {"error", "detail", "body", "errors"}
    r = txt2img(server, sampler_name="Nope Sampler")
    assert r.status_code == 422 and "Euler a" in r.json()["detail"]
    r = txt2img(server, steps=0)
    assert r.status_code == 422 and "steps" in r.json()["detail"]
    r = requests.post(server.api("txt2img"), json={"steps": "many"}, timeout=10)
    assert r.status_code == 422 and "steps" in r.json()["detail"]
    r = requests.post(server.api("options"), json={"samples_save": "yes"}, timeout=10)
    assert r.status_code == 422 and "samples_save" in r.json()["detail"]
    assert txt2img(server).status_code == 200


def test_concurrent_requests_share_one_queue(server):
    results = {}

    def worker(seed):
        results[seed] = txt2img(server, seed=seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (501, 502, 503)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(results[s].status_code == 200 for s in (501, 502, 503))
    for s in (501, 502, 503):
        alone = np.asarray(decode(txt2img(server, seed=s).json()["images"][0]))
        assert np.array_equal(alone, np.asarray(decode(results[s].json()["images"][0])))


def test_ui_page_is_served(server):
    r = requests.get(server.url + "/", timeout=10)
    assert r.status_code == 200 and "<html" in r.text.lower()


def test_api_only_server_without_model_with_auth(tmp_path):
    from tests.support.server import start_server
    srv = start_server(tmp_path, "--nowebui", "--api-auth", "alice:s3cret", "--no-demo-model", wait_model=False)
    try:
        assert srv.proc.poll() is None
        assert requests.get(srv.api("sd-models"), timeout=10).status_code == 401
        auth = ("alice", "s3cret")
        assert requests.get(srv.api("sd-models"), auth=("alice", "wrong"), timeout=10).status_code == 401
        assert requests.get(srv.api("sd-models"), auth=auth, timeout=10).json() == []
        r = requests.post(srv.api("txt2img"), json={"steps": 1}, auth=auth, timeout=30)
        assert r.status_code == 503 and "put a .safetensors file in models/Stable-diffusion" in r.json()["detail"]
        assert requests.get(srv.url + "/", timeout=10).status_code == 404  # --nowebui: no UI
    finally:
        srv.stop()


def _b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img_base64_and_data_uri_and_mask(server):
    init = Image.fromarray((np.indices((64, 64)).sum(0)[..., None] * [2, 3, 4] % 255).astype(np.uint8))
    body = {"prompt": "x", "steps": 3, "width": 64, "height": 64, "seed": 3, "denoising_strength": 0.5,
            "init_images": [_b64_png(init)]}
    a = requests.post(server.api("img2img"), json=body, timeout=120)
    assert a.status_code == 200, a.text
    b = requests.post(server.api("img2img"), json={**body, "init_images": ["data:image/png;base64," +
                                                                              _b64_png(init)]}, timeout=120)
    assert a.json()["images"] == b.json()["images"]
    text = decode(a.json()["images"][0]).info["parameters"]
    assert "Denoising strength: 0.5" in text
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    r = requests.post(server.api("img2img"), json={**body, "mask": _b64_png(mask), "mask_blur": 0,
                                                   "denoising_strength": 0.9, "include_init_images": True},
                      timeout=120)
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 2  # the result, then the init image
    out = np.asarray(decode(images[0]).convert("RGB")).astype(int)
    assert np.array_equal(out[:16], np.asarray(init).astype(int)[:16])  # outside the mask: unchanged
    assert r.json()["parameters"]["init_images"] is None


def test_img2img_errors(server):
    base = {"prompt": "x", "steps": 2, "width": 64, "height": 64}
    r = requests.post(server.api("img2img"), json=base, timeout=30)
    assert r.status_code == 422 and "init_images" in r.json()["detail"]
    r = requests.post(server.api("img2img"), json={**base, "init_images": ["not-an-image!!"]}, timeout=30)
    assert r.status_code == 422 and "init_images" in r.json()["detail"]
    r = requests.post(server.api("img2img"), json={**base, "init_images": [_b64_png(Image.new("RGB", (8, 8)))],
                                                   "resize_mode": 7}, timeout=30)
    assert r.status_code == 422 and "resize_mode" in r.json()["detail"]


def test_schedulers_and_hires_through_api(server):
    schedulers = requests.get(server.api("schedulers"), timeout=10).json()
    labels = [s["label"] for s in schedulers]
    assert labels[:3] == ["Automatic", "Uniform", "Karras"] and "Align Your Steps" in labels
    assert next(s for s in schedulers if s["label"] == "Karras")["name"] == "karras"
    r = txt2img(server, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5,
                sampler_name="Euler", scheduler="karras")
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    assert image.size == (96, 96) and "Hires upscale: 1.5" in image.info["parameters"]
    assert "Schedule type: Karras" in image.info["parameters"]
    legacy = txt2img(server, sampler_index="DPM++ 2M Karras", sampler_name=None)
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in decode(legacy.json()["images"][0]).info["parameters"]


def test_cors_and_server_stop(tmp_path):
    from tests.support.server import start_server
    srv = start_server(tmp_path, "--nowebui", "--cors-allow-origins", "http://example.com", "--api-server-stop",
                       wait_model=False)
    try:
        r = requests.options(srv.api("sd-models"), headers={"Origin": "http://example.com",
                                                            "Access-Control-Request-Method": "GET"}, timeout=10)
        assert r.headers.get("access-control-allow-origin") == "http://example.com"
        r = requests.options(srv.api("sd-models"), headers={"Origin": "http://evil.example",
                                                            "Access-Control-Request-Method": "GET"}, timeout=10)
        assert r.headers.get("access-control-allow-origin") is None
        assert requests.post(srv.api("server-stop"), timeout=10).status_code == 200
        srv.proc.wait(30)
        assert srv.proc.returncode == 0
    finally:
        srv.stop()
