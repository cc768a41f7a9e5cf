"""The built-in ControlNet through a real server: sd-webui-controlnet's routes with their shapes, units in
alwayson_scripts, detected maps appended, infotext, 422s that name the unit and field, the walkthrough's folder
(extensions/sd-webui-controlnet/models) and the demo model's steering figure reproduced over HTTP."""
from __future__ import annotations

import base64
import hashlib
import io
import shutil

import numpy as np
import pytest
import requests
from PIL import Image

from modules.paths import DEMO_CHECKPOINT, DEMO_CONTROLNET
from tests.support.api import decode
from tests.support.server import make_data_dir, start_server
from tools.demo_model import controlnet as demo_cn
from tools.demo_model import data

DEMO_TITLE_PREFIX = "control_demo-shapes_canny ["


def b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_demo_full_10(path) -> None:
    """A ControlNet 1.0 "full" file built from the demo model: the whole checkpoint (model.diffusion_model.*,
    first_stage_model.*, cond_stage_model.*) plus the demo ControlNet's control_model.* keys, one pickle, as
    control_sd15_openpose.pth is laid out."""
    import torch
    from safetensors.torch import load_file
    sd = load_file(str(DEMO_CHECKPOINT))
    sd.update({k if k.startswith("control_model.") else "control_model." + k: v
               for k, v in load_file(str(DEMO_CONTROLNET)).items()})
    torch.save({"state_dict": sd}, str(path))


def write_tiny_full_10(path) -> None:
    """A 1.0 full file for the tiny SD1 test model: it does not fit the demo checkpoint (another UNet)."""
    from tests.support.controlnet_factory import tiny_controlnet, write_full_10
    from tests.support.model_factory import make_tiny_components
    components = make_tiny_components("sd1")
    write_full_10(path, tiny_controlnet(components["unet"]), components)


@pytest.fixture(scope="module")
def cn_server(tmp_path_factory):
    data_dir = make_data_dir(tmp_path_factory.mktemp("cn-server"), DEMO_CHECKPOINT, DEMO_CHECKPOINT.with_suffix(".yaml"))
    # the walkthrough: the real extension's folder copied into extensions/, a 1.0 full file in its models/
    ext = data_dir / "extensions" / "sd-webui-controlnet"
    (ext / "models").mkdir(parents=True)
    (ext / "scripts").mkdir()
    (ext / "scripts" / "controlnet.py").write_text("raise SystemExit('the copied extension must not run')\n")
    write_demo_full_10(ext / "models" / "control_sd15_openpose.pth")
    (data_dir / "models" / "ControlNet").mkdir(parents=True)
    write_tiny_full_10(data_dir / "models" / "ControlNet" / "control_sd15_tiny.pth")
    srv = start_server(data_dir)
    yield srv
    srv.stop()


def get(server, path, **params):
    r = requests.get(server.url + path, params=params, timeout=30)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def scene_case(i: int = 0):
    caption, scene = demo_cn.steering_cases(8)[i]
    return caption, scene, data.render(scene)


def generate(server, units, **fields):
    body = {"prompt": "a red circle", "steps": 8, "width": 64, "height": 64, "seed": 3, "cfg_scale": 7,
            "sampler_name": "DPM++ 2M", "alwayson_scripts": {"controlnet": {"args": units}}, **fields}
    return requests.post(server.api("txt2img"), json=body, timeout=300)


def demo_title(server) -> str:
    titles = get(server, "/controlnet/model_list")["model_list"]
    return next(t for t in titles if t.startswith(DEMO_TITLE_PREFIX))


def test_routes_have_the_extension_shapes(cn_server):
    assert get(cn_server, "/controlnet/version") == {"version": 3}
    assert get(cn_server, "/controlnet/settings") == {"control_net_unit_count": 3}
    titles = get(cn_server, "/controlnet/model_list")["model_list"]
    assert "None" not in titles
    assert any(t.startswith(DEMO_TITLE_PREFIX) for t in titles)
    assert any(t.startswith("control_sd15_openpose [") for t in titles)
    tiny = cn_server.data_dir / "models" / "ControlNet" / "control_sd15_tiny.pth"
    with open(tiny, "rb") as f:      # A1111's legacy hash: sha256 of 64 KiB at 1 MiB, 8 hex digits (§1.6)
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    assert f"control_sd15_tiny [{legacy}]" in titles
    modules = get(cn_server, "/controlnet/module_list")
    assert modules["module_list"][0] == "none" and "canny" in modules["module_list"]
    assert modules["module_detail"]["canny"]["sliders"][1]["name"] == "Low Threshold"
    assert "depth_midas" in get(cn_server, "/controlnet/module_list", alias_names="true")["module_list"]
    types = get(cn_server, "/controlnet/control_types")["control_types"]
    assert list(types)[0] == "All"
    assert types["Canny"]["default_option"] == "canny"
    assert types["Canny"]["model_list"][0] == "None" and demo_title(cn_server) in types["Canny"]["model_list"]
    assert types["OpenPose"]["default_model"].startswith("control_sd15_openpose [")


def test_detect_and_render_openpose_json(cn_server):
    _, _, img = scene_case()
    r = requests.post(cn_server.url + "/controlnet/detect", json={
        "controlnet_module": "canny", "controlnet_input_images": [b64(img)], "controlnet_processor_res": 64},
        timeout=60)
    assert r.status_code == 200, r.text
    edges = np.asarray(decode(r.json()["images"][0]).convert("L"))
    assert edges.shape == (64, 64) and set(np.unique(edges)) <= {0, 255} and edges.any()
    for body, words in (({"controlnet_module": "nope", "controlnet_input_images": [b64(img)]}, "Module not available"),
                        ({"controlnet_module": "canny"}, "No image selected")):
        bad = requests.post(cn_server.url + "/controlnet/detect", json=body, timeout=30)
        assert bad.status_code == 422 and words in bad.json()["detail"]
    pose = {"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": [
        32, 10, 1, 32, 20, 1, 24, 20, 1, 0, 0, 0, 0, 0, 0, 40, 20, 1] + [0, 0, 0] * 12}]}
    r = requests.post(cn_server.url + "/controlnet/render_openpose_json", json=[pose], timeout=30)
    assert r.status_code == 200 and r.json()["info"] == "Success"
    drawn = np.asarray(decode(r.json()["images"][0]).convert("RGB"))
    assert tuple(drawn[20, 32]) == (255, 85, 0)    # joint 1 (neck) in colour 1
    assert requests.post(cn_server.url + "/controlnet/render_openpose_json", json=[],
                         timeout=30).json() == {"info": "No pose data detected."}


def test_generation_with_a_unit_appends_the_map_and_writes_infotext(cn_server):
    caption, scene, img = scene_case()
    unit = {"enabled": True, "module": "canny", "model": "demo-shapes_canny", "image": b64(img),
            "pixel_perfect": True}
    r = generate(cn_server, [unit], prompt=caption)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2                         # the image, then the detected map
    info = body["info"]
    assert '"Module: canny, Model: demo-shapes_canny, Weight: 1.0' in info
    edges = np.asarray(decode(body["images"][1]).convert("L"))
    assert edges.shape == (64, 64) and edges.any()
    quiet = generate(cn_server, [dict(unit, save_detected_map=False)], prompt=caption)
    assert len(quiet.json()["images"]) == 1
    off = generate(cn_server, [dict(unit, enabled=False)], prompt=caption)
    assert len(off.json()["images"]) == 1 and "ControlNet" not in off.json()["info"]


@pytest.mark.parametrize("unit, field, words", [
    ({"enabled": True, "module": "canny", "model": "no-such-model"}, "args[0].model", "not found"),
    ({"enabled": True, "module": "not-a-module", "model": "demo-shapes_canny"}, "args[0].module", "unknown"),
    ({"enabled": True, "module": "canny", "model": "demo-shapes_canny"}, "args[0].image", "no input image"),
    ({"enabled": True, "module": "canny", "model": "demo-shapes_canny", "guidance_start": 0.9,
      "guidance_end": 0.1}, "args[0].guidance_start", "after"),
    ({"enabled": True, "module": "canny", "model": "control_sd15_tiny"}, "args[0].model", "control_sd15_tiny"),
])
def test_unusable_units_are_422_naming_unit_and_field(cn_server, unit, field, words):
    _, _, img = scene_case()
    if "image" not in field:
        unit = dict(unit, image=b64(img))
    r = generate(cn_server, [unit])
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert f"alwayson_scripts.controlnet.args" in detail and field in detail and words in detail, detail


def test_more_units_than_the_setting_is_422(cn_server):
    r = generate(cn_server, [{"enabled": False}] * 4)
    assert r.status_code == 422 and "control_net_unit_count" in r.json()["detail"]


def test_the_copied_extension_is_provided_by_the_builtin(cn_server):
    listed = requests.get(cn_server.api("extensions"), timeout=30).json()
    copied = next(e for e in listed if e["name"] == "sd-webui-controlnet")
    assert copied["enabled"] is False
    scripts = requests.get(cn_server.api("scripts"), timeout=30).json()
    assert "controlnet" in scripts["txt2img"] and "controlnet" in scripts["img2img"]   # clients probe this
    assert "must not run" not in cn_server.log.read_text()


def test_walkthrough_full_file_in_the_extension_folder_steers(cn_server):
    """control_sd15_openpose.pth (a 1.0 full file) in extensions/sd-webui-controlnet/models, a ready control image
    with preprocessor "none": the generated object follows it."""
    caption, scene, img = scene_case(1)
    edges = demo_cn.canny(img[None])[0]
    unit = {"enabled": True, "module": "none", "model": "control_sd15_openpose", "image": b64(
        np.stack([edges] * 3, axis=-1))}
    r = generate(cn_server, [unit], prompt=caption, seed=1, steps=20)
    assert r.status_code == 200, r.text
    gen = np.asarray(decode(r.json()["images"][0]).convert("RGB"))
    target = data.shape_mask(scene.objects[0]) > 0.5
    assert demo_cn.iou(demo_cn.object_mask(gen), target) >= 0.5


def test_demo_steering_figure_over_the_api(cn_server):
    """The demo ControlNet's evaluation (tools/demo_model/controlnet.py): the generated object's mask follows the
    control image (IoU ≥ 0.6) and does not without it (≤ 0.3), here through the HTTP API and canny at pixel-perfect
    resolution, 8 held-out cases, 20 steps."""
    title = demo_title(cn_server)
    with_c, without = [], []
    for i, (caption, scene) in enumerate(demo_cn.steering_cases(8)):
        img = data.render(scene)
        target = data.shape_mask(scene.objects[0]) > 0.5
        unit = {"enabled": True, "module": "canny", "model": title, "image": b64(img), "pixel_perfect": True}
        for units, out in (([unit], with_c), ([], without)):
            r = generate(cn_server, units, prompt=caption, seed=i, steps=20)
            assert r.status_code == 200, r.text
            gen = np.asarray(decode(r.json()["images"][0]).convert("RGB"))
            out.append(demo_cn.iou(demo_cn.object_mask(gen), target))
    assert np.mean(with_c) >= 0.6, with_c
    assert np.mean(without) <= 0.3, without


def test_detectmap_settings_autosave_and_no_append(cn_server):
    caption, _, img = scene_case()
    unit = {"enabled": True, "module": "canny", "model": "demo-shapes_canny", "image": b64(img), "pixel_perfect": True}
    opts = cn_server.api("options")
    try:
        assert requests.post(opts, json={"control_net_detectmap_autosaving": True,
                                         "control_net_no_detectmap": True}, timeout=30).status_code == 200
        r = generate(cn_server, [unit], prompt=caption)
        assert r.status_code == 200 and len(r.json()["images"]) == 1       # not appended
        saved = list((cn_server.data_dir / "detected_maps" / "canny").rglob("*.png"))   # A1111's date folders
        assert len(saved) == 1 and Image.open(saved[0]).size == (64, 64)
    finally:
        requests.post(opts, json={"control_net_detectmap_autosaving": False, "control_net_no_detectmap": False},
                      timeout=30)
