"""A real server with the sample extensions in <data>/extensions (A1111-style, our own code): scripts over the API
(alwayson_scripts by position and by label, script_name), the listing endpoints, an extension's own route, its
setting, and a broken extension that is reported while everything else works."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.support.api import decode, txt2img
from tests.support.server import make_data_dir, start_server

SAMPLES = Path(__file__).resolve().parent.parent / "support" / "sample_extensions"


@pytest.fixture(scope="module", params=[("--nowebui",), ()], ids=["nowebui", "ui"])
def ext_server(request, tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("ext-server"), tiny_sd1)
    for name in ("sample-recorder", "sample-broken"):
        shutil.copytree(SAMPLES / name, data / "extensions" / name)
    srv = start_server(data, *request.param)
    yield srv
    srv.stop()


def ui_mode_only(server) -> None:
    """The API-only server differs in how the scripts' controls are built (an unserved Blocks); the tests below that
    exercise nothing of that run once, on the server with the page."""
    if server.proc.args[-1] == "--nowebui":
        pytest.skip("same code path as with the page")


def get(server, path):
    r = requests.get(server.api(path), timeout=30)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def test_listing_endpoints(ext_server):
    listed = get(ext_server, "scripts")
    assert "recorder" in listed["txt2img"] and "sample tiler" in listed["img2img"]
    assert "sample tiler" not in listed["txt2img"]
    info = {(s["name"], s["is_img2img"]): s for s in get(ext_server, "script-info")}
    rec = info[("recorder", False)]
    assert rec["is_alwayson"] is True
    assert [a["label"] for a in rec["args"]] == ["Recorder enabled", "Prompt suffix", "Seed offset"]
    assert [a["value"] for a in rec["args"]] == [False, ", recorded", 0]
    tiler = info[("sample tiler", True)]
    assert tiler["args"][0]["minimum"] == 1 and tiler["args"][0]["maximum"] == 4
    exts = {e["name"]: e for e in get(ext_server, "extensions")}
    assert exts["sample-recorder"]["enabled"] is True and not exts["sample-recorder"]["errors"]
    broken = exts["sample-broken"]["errors"]
    assert "fails on purpose at import" in broken["import"]
    assert "ui() fails on purpose" in broken["ui"]       # its controls are missing, the page and API work


def test_alwayson_script_by_position_and_by_label(ext_server):
    r = txt2img(ext_server, alwayson_scripts={"Recorder": {"args": [True, ", api suffix", 10]}})
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert "a red circle, api suffix" in info and "Recorder suffix: api suffix" in info and '"seed": 21' in info
    image = decode(r.json()["images"][0])
    assert image.getpixel((0, 0))[:3] == (255, 0, 255)
    r = txt2img(ext_server, alwayson_scripts={"recorder": {"args": {"Recorder enabled": True, "Prompt suffix": "!"}}})
    assert r.status_code == 200 and "a red circle!" in r.json()["info"]
    # not named: the script runs with its UI defaults (disabled here), and the broken hook does not fail the job
    r = txt2img(ext_server)
    assert r.status_code == 200 and "Recorder suffix" not in r.json()["info"]


def test_unknown_scripts_and_arguments_are_422_naming_them(ext_server):
    ui_mode_only(ext_server)
    r = txt2img(ext_server, script_name="No such script")
    assert r.status_code == 422 and "No such script" in r.json()["detail"]
    r = txt2img(ext_server, alwayson_scripts={"ADetailer": {"args": []}})
    assert r.status_code == 422 and "ADetailer" in r.json()["detail"] and "Recorder" in r.json()["detail"]
    r = txt2img(ext_server, alwayson_scripts={"Recorder": {"args": {"bogus": 1}}})
    assert r.status_code == 422 and "bogus" in r.json()["detail"]
    r = txt2img(ext_server, script_name="sample tiler")  # an img2img-only script
    assert r.status_code == 422


def test_selectable_script_over_the_api(ext_server):
    ui_mode_only(ext_server)
    buf = io.BytesIO()
    Image.new("RGB", (128, 64), (200, 30, 30)).save(buf, format="PNG")
    body = {"prompt": "tiles", "steps": 2, "width": 128, "height": 64, "seed": 3, "denoising_strength": 0.5,
            "init_images": [base64.b64encode(buf.getvalue()).decode()], "script_name": "Sample tiler",
            "script_args": [2], "save_images": True}
    r = requests.post(ext_server.api("img2img"), json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (128, 64)


def test_extension_route_setting_and_callbacks(ext_server):
    events = requests.get(f"{ext_server.url}/sample-recorder/events", timeout=10)
    assert events.status_code == 200
    seen = set(events.json())
    assert {"callback:ui_settings", "callback:before_ui", "callback:app_started"} <= seen
    options = get(ext_server, "options")
    assert options["sample_recorder_mark"] == "off"
    r = requests.post(ext_server.api("options"), json={"sample_recorder_mark": "on"}, timeout=10)
    assert r.status_code == 200, r.text
    assert get(ext_server, "options")["sample_recorder_mark"] == "on"
    r = requests.post(ext_server.api("options"), json={"sample_recorder_mark": "maybe"}, timeout=10)
    assert r.status_code == 422 and "sample_recorder_mark" in r.text


def test_image_saved_callbacks_fire_on_save(ext_server):
    ui_mode_only(ext_server)
    r = txt2img(ext_server, save_images=True)
    assert r.status_code == 200
    seen = requests.get(f"{ext_server.url}/sample-recorder/events", timeout=10).json()
    assert "callback:before_image_saved" in seen and "callback:image_saved" in seen
    assert "callback:cfg_denoiser" in seen and "callback:model_loaded" in seen


def test_reload_ui_reruns_scripts_with_callbacks_cleared(ext_server):
    ui_mode_only(ext_server)   # Reload UI rebuilds the page; API-only servers have none
    script = ext_server.data_dir / "extensions" / "sample-recorder" / "scripts" / "recorder.py"
    original = script.read_text()
    try:
        script.write_text(original.replace('return "Recorder"', 'return "Recorder v2"'))
        r = requests.post(f"{ext_server.url}/internal/reload-ui", timeout=120)
        assert r.status_code == 200, r.text
        assert "recorder v2" in get(ext_server, "scripts")["txt2img"]
        events = requests.get(f"{ext_server.url}/sample-recorder/events", timeout=10).json()
        # the route is served by the re-executed module: its event list started empty at the reload
        assert "callback:before_reload" not in events and "callback:ui_settings" in events
        log = (ext_server.data_dir / "extensions" / "sample-recorder" / "reload.log").read_text().split()
        assert log == ["before_reload", "script_unloaded"]
        assert events.count("callback:app_started") == 1
        page = requests.get(ext_server.url + "/", timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        r = txt2img(ext_server, alwayson_scripts={"Recorder v2": {"args": [True, " v2"]}})
        assert r.status_code == 200 and "a red circle v2" in r.json()["info"]
    finally:
        script.write_text(original)
