"""Every /sdapi/v1 route in A1111's shape, error classes, the job queue under load, and png-info round trips."""
from __future__ import annotations

import base64
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

from modules.paths import DEMO_EMBEDDINGS_DIR, DEMO_LORA_DIR
from tests.support.api import decode, txt2img


def b64(image: Image.Image, **info) -> str:
    from modules.images import png_bytes
    return base64.b64encode(png_bytes(image, info.get("parameters"))).decode()


def get(server, path):
    r = requests.get(server.api(path), timeout=30)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def test_list_routes_have_a1111_shapes(server):
    # A1111's two restorers with their model folders (the files download on first use)
    assert [(r["name"], r["cmd_dir"].replace("\\", "/").split("/")[-1]) for r in get(server, "face-restorers")] == \
        [("CodeFormer", "Codeformer"), ("GFPGAN", "GFPGAN")]
    # A1111's offered Real-ESRGAN downloads (no file in this data folder): name, URL as the path, scale
    assert [(m["name"], m["scale"]) for m in get(server, "realesrgan-models")] == [("R-ESRGAN 4x+", 4),
                                                                                   ("R-ESRGAN 4x+ Anime6B", 4)]
    assert get(server, "hypernetworks") == []
    # the built-in Lora and ControlNet are the extensions of a fresh install (A1111 lists its built-ins too);
    # ControlNet is its one script (Lora registers an extra-network kind, not a script)
    assert [(e["name"], e["enabled"]) for e in get(server, "extensions")] == [("Lora", True), ("controlnet", True)]
    # A1111's own selectable scripts (root scripts/, loaded first) come before the extensions'
    builtin = {"txt2img": ["prompt matrix", "prompts from file or textbox", "x/y/z plot"],
               "img2img": ["loopback", "outpainting mk2", "poor man's outpainting", "prompt matrix",
                           "prompts from file or textbox", "sd upscale", "x/y/z plot"]}
    assert get(server, "scripts") == {tab: names + ["controlnet"] for tab, names in builtin.items()}
    info = {(i["name"], i["is_alwayson"], i["is_img2img"]) for i in get(server, "script-info")}
    assert info == {(name, False, tab == "img2img") for tab, names in builtin.items() for name in names} | {
        ("controlnet", True, False), ("controlnet", True, True)}
    embeddings = get(server, "embeddings")   # only the bundled demo embedding
    assert set(embeddings) == {"loaded", "skipped"}
    assert set(embeddings["loaded"]) | set(embeddings["skipped"]) == {f.stem for f in DEMO_EMBEDDINGS_DIR.glob("*")
                                                                       if f.suffix in (".safetensors", ".pt")}
    # only the bundled demo LoRA, found with any --data-dir
    loras = sorted(i["name"] for i in get(server, "loras"))
    assert loras == sorted(f.stem for f in DEMO_LORA_DIR.glob("*.safetensors"))
    # the Pillow ones, then A1111's download list (no upscaler file in this data folder)
    upscalers = get(server, "upscalers")
    assert [u["name"] for u in upscalers[:3]] == ["None", "Lanczos", "Nearest"]
    assert {"ESRGAN_4x", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "SwinIR 4x", "DAT x2", "DAT x3", "DAT x4",
            "ScuNET GAN", "ScuNET PSNR"} == {u["name"] for u in upscalers[3:]}
    assert all(set(u) == {"name", "model_name", "model_path", "model_url", "scale"} for u in get(server, "upscalers"))
    assert "Latent (nearest-exact)" in [m["name"] for m in get(server, "latent-upscale-modes")]
    assert get(server, "sd-vae") == []
    mem = get(server, "memory")
    assert set(mem) == {"ram", "cuda"} and mem["ram"]["total"] > mem["ram"]["free"] > 0
    flags = get(server, "cmd-flags")
    assert flags["api"] is True and "port" in flags and "ckpt_dir" in flags
    assert get(server, "prompt-styles") == []
    idle = get(server, "progress")
    assert set(idle) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert set(idle["state"]) >= {"skipped", "interrupted", "job", "job_count", "job_no", "sampling_step",
                                  "sampling_steps", "job_timestamp"}


def test_actions_we_do_not_have_answer_501_not_404(server):
    for path in ("create/embedding", "create/hypernetwork", "train/embedding", "train/hypernetwork"):
        r = requests.post(server.api(path), json={}, timeout=10)
        assert r.status_code == 501, (path, r.status_code)
        assert set(r.json()) == {"error", "detail", "body", "errors"} and "not available" in r.json()["detail"]
    for path in ("refresh-checkpoints", "refresh-vae", "refresh-embeddings", "refresh-loras", "interrupt", "skip"):
        assert requests.post(server.api(path), timeout=10).status_code == 200, path


def test_extras_single_and_batch(server):
    img = Image.fromarray((np.indices((20, 30)).sum(0)[..., None] * [5, 3, 1] % 255).astype(np.uint8))
    r = requests.post(server.api("extra-single-image"), json={"image": b64(img), "upscaler_1": "Lanczos",
                                                              "upscaling_resize": 2}, timeout=30)
    assert r.status_code == 200 and decode(r.json()["image"]).size == (60, 40) and "html_info" in r.json()
    r = requests.post(server.api("extra-single-image"), json={"image": b64(img), "upscaler_1": "Nearest",
                                                              "resize_mode": 1, "upscaling_resize_w": 50,
                                                              "upscaling_resize_h": 50}, timeout=30)
    assert decode(r.json()["image"]).size == (50, 50)
    r = requests.post(server.api("extra-batch-images"), json={
        "upscaler_1": "Lanczos", "upscaling_resize": 1.5,
        "imageList": [{"data": b64(img), "name": "a.png"}, {"data": "data:image/png;base64," + b64(img),
                                                           "name": "b.png"}]}, timeout=30)
    assert [decode(x).size for x in r.json()["images"]] == [(45, 30), (45, 30)]
    bad = requests.post(server.api("extra-single-image"), json={"image": b64(img), "upscaler_1": "ESRGAN"},
                        timeout=30)
    assert bad.status_code == 422 and "upscaler_1" in bad.json()["detail"] and "Lanczos" in bad.json()["detail"]


def test_txt2img_png_info_txt2img_round_trip(server):
    first = txt2img(server, prompt="a (red:1.2) square", negative_prompt="blur", seed=999, steps=4,
                    sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=6)
    info = requests.post(server.api("png-info"), json={"image": first.json()["images"][0]}, timeout=30).json()
    assert set(info) == {"info", "items", "parameters"}
    params = info["parameters"]
    assert params["Prompt"] == "a (red:1.2) square" and params["Seed"] == 999 and params["Sampler"] == "DPM++ 2M"
    second = txt2img(server, prompt=params["Prompt"], negative_prompt=params["Negative prompt"], seed=params["Seed"],
                     steps=params["Steps"], sampler_name=params["Sampler"], scheduler=params["Schedule type"],
                     cfg_scale=params["CFG scale"], width=params["Size-1"], height=params["Size-2"])
    assert np.array_equal(np.asarray(decode(first.json()["images"][0])), np.asarray(decode(second.json()["images"][0])))
    plain = requests.post(server.api("png-info"), json={"image": b64(Image.new("RGB", (4, 4)))}, timeout=30).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}


def test_override_settings_and_restore(server):
    r = txt2img(server, override_settings={"CLIP_stop_at_last_layers": 2})
    assert "Clip skip: 2" in decode(r.json()["images"][0]).info["parameters"]
    assert get(server, "options")["CLIP_stop_at_last_layers"] == 1
    r = txt2img(server, override_settings={"eta_noise_seed_delta": 5}, override_settings_restore_afterwards=False)
    assert r.status_code == 200 and get(server, "options")["eta_noise_seed_delta"] == 5
    requests.post(server.api("options"), json={"eta_noise_seed_delta": 0}, timeout=10)
    bad = txt2img(server, override_settings={"CLIP_stop_at_last_layers": "two"})
    assert bad.status_code == 422 and "CLIP_stop_at_last_layers" in bad.json()["detail"]


def test_scripts_unknown_are_422(server):
    r = txt2img(server, script_name="No such script")
    assert r.status_code == 422 and "No such script" in r.json()["detail"]
    r = txt2img(server, alwayson_scripts={"ADetailer": {"args": []}})
    assert r.status_code == 422 and "ADetailer" in r.json()["detail"] and "controlnet" in r.json()["detail"].lower()
    assert txt2img(server, alwayson_scripts={}).status_code == 200


def test_force_task_id_and_internal_progress(server):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=txt2img(server, force_task_id="task(abc123)", steps=20,
                                                                width=96, height=96)))
    t.start()
    seen = []
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        p = requests.post(server.url + "/internal/progress", json={"id_task": "task(abc123)", "id_live_preview": -1},
                          timeout=10).json()
        seen.append(p)
        time.sleep(0.05)  # polling interval (the loop ends when the request thread does)
    t.join(60)
    assert result["r"].status_code == 200
    final = requests.post(server.url + "/internal/progress", json={"id_task": "task(abc123)"}, timeout=10).json()
    assert final["completed"] is True and final["progress"] == 1.0
    assert any(s["active"] and 0 < (s["progress"] or 0) < 1 for s in seen)
    unknown = requests.post(server.url + "/internal/progress", json={"id_task": "task(nope)"}, timeout=10).json()
    assert unknown["active"] is False and unknown["completed"] is False


def test_openapi_describes_every_route(server):
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    paths = set(spec["paths"])
    for route in ("txt2img", "img2img", "extra-single-image", "extra-batch-images", "png-info", "interrogate",
                  "interrupt", "skip", "options", "refresh-checkpoints", "unload-checkpoint", "reload-checkpoint",
                  "progress", "cmd-flags", "samplers", "schedulers", "upscalers", "latent-upscale-modes",
                  "sd-models", "sd-vae", "loras", "hypernetworks", "face-restorers", "realesrgan-models",
                  "prompt-styles", "embeddings", "memory", "scripts", "script-info", "extensions"):
        assert f"/sdapi/v1/{route}" in paths, route
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200


def test_load_16_clients_two_requests_each(server):
    seeds = list(range(7000, 7032))
    results: dict[int, str] = {}
    errors = []

    def client(my_seeds):
        for s in my_seeds:
            r = txt2img(server, seed=s, steps=3)
            if r.status_code != 200:
                errors.append(r.text)
            else:
                results[s] = r.json()["images"][0]

    threads = [threading.Thread(target=client, args=(seeds[i * 2:i * 2 + 2],)) for i in range(16)]
    for t in threads:
        t.start()
    latencies = []
    while any(t.is_alive() for t in threads):
        start = time.perf_counter()
        assert requests.get(server.api("progress"), timeout=10).status_code == 200
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)  # polling interval, like a client's progress bar
    for t in threads:
        t.join(300)
    assert not errors and set(results) == set(seeds)
    p95 = sorted(latencies)[int(len(latencies) * 0.95) - 1] if len(latencies) > 1 else latencies[0]
    assert p95 < 0.2, f"progress p95 {p95 * 1000:.0f} ms over {len(latencies)} polls"
    for s in seeds[:32:5]:
        alone = txt2img(server, seed=s, steps=3).json()["images"][0]
        assert np.array_equal(np.asarray(decode(alone)), np.asarray(decode(results[s]))), s


def test_more_error_classes(server):
    r = txt2img(server, steps=151)
    assert r.status_code == 422 and "steps" in r.json()["detail"] and "150" in r.json()["detail"]
    big = Image.new("RGB", (5000, 4000))
    r = requests.post(server.api("img2img"), json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                   "init_images": [b64(big)]}, timeout=60)
    assert r.status_code == 422 and "too large" in r.json()["detail"] and "init_images" in r.json()["detail"]
    r = requests.post(server.api("txt2img"), data="{not json", headers={"Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 422 and set(r.json()) == {"error", "detail", "body", "errors"}
    assert txt2img(server).status_code == 200


def test_interrupt_and_skip_act_on_the_running_job(server):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=txt2img(server, steps=150, width=96, height=96, seed=1)))
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = requests.get(server.api("progress"), timeout=10).json()["state"]
        if st.get("sampling_step", 0) >= 2:
            break
        time.sleep(0.05)  # polling interval
    requests.post(server.api("interrupt"), timeout=10)
    t.join(60)
    assert result["r"].status_code == 200
    image = decode(result["r"].json()["images"][0])
    assert image.size == (96, 96)  # the partial image comes back, well before 150 steps


def test_model_switch_by_hash_unload_and_reload(server):
    models = get(server, "sd-models")
    target = models[-1]
    assert requests.post(server.api("options"), json={"sd_model_checkpoint": target["hash"]},
                         timeout=60).status_code == 200
    assert get(server, "options")["sd_model_checkpoint"] == target["title"]
    assert requests.post(server.api("unload-checkpoint"), timeout=30).status_code == 200
    assert requests.post(server.api("reload-checkpoint"), timeout=60).status_code == 200
    assert txt2img(server).status_code == 200


def test_third_party_client_webuiapi_unchanged(server):
    webuiapi = pytest.importorskip("webuiapi")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    result = api.txt2img(prompt="a green circle", negative_prompt="", seed=5, steps=3, width=64, height=64,
                         sampler_name="Euler a", cfg_scale=7)
    assert result.image.size == (64, 64) and result.info["all_seeds"] == [5]
    assert "Seed: 5" in result.info["infotexts"][0]
    i2i = api.img2img(images=[result.image], prompt="a green circle", seed=5, steps=3, width=64, height=64,
                      denoising_strength=0.5)
    assert i2i.image.size == (64, 64)
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    assert [m["title"] for m in api.get_sd_models()]
    assert api.get_options()["samples_save"] in (True, False)
    up = api.extra_single_image(image=result.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert up.image.size == (128, 128)
    assert api.png_info(image=result.image).info.startswith("a green circle")


def test_progress_reports_steps_eta_and_live_preview(server):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=txt2img(server, steps=25, width=96, height=96)))
    t.start()
    previews, fractions = [], []
    while t.is_alive():
        p = requests.get(server.api("progress"), timeout=10).json()
        if p["state"].get("job") == "txt2img":
            fractions.append(p["progress"])
            if p["current_image"]:
                previews.append(decode(p["current_image"]))
                assert p["eta_relative"] >= 0 and p["state"]["sampling_steps"] == 25
        time.sleep(0.05)  # polling interval
    t.join(60)
    assert result["r"].status_code == 200
    assert previews and previews[-1].size == (96, 96)
    assert fractions == sorted(fractions) and 0 < max(fractions) <= 1
    skip = requests.get(server.api("progress"), params={"skip_current_image": True}, timeout=10).json()
    assert skip["current_image"] is None


def test_an_unknown_lora_is_reported_in_the_info(server):
    import json
    r = txt2img(server, prompt="a red circle <lora:not_there:0.7>")
    info = json.loads(r.json()["info"])
    assert "Networks not found: not_there" in info["comments"]
    assert "<lora:not_there:0.7>" in info["infotexts"][0] and info["all_prompts"] == ["a red circle <lora:not_there:0.7>"]
