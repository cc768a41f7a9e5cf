"""The built-in Lora extension through a real server: /sdapi/v1/loras and /refresh-loras with A1111's shapes, a
prompt's <lora:…> (by alias, in a subfolder, the legacy <lyco:…>) changing the image, "Lora hashes" in the infotext,
"Networks not found" in the info."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from modules import hashes
from tests.support.api import decode, txt2img
from tests.support.lora_factory import write_lora
from tests.support.model_factory import write_tiny_checkpoint
from tests.support.server import start_server


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("lora-server")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    comps = write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=3)
    model = SimpleNamespace(unet=comps["unet"], text_encoders=[comps["text_encoder"]])
    (data / "models" / "Lora" / "styles").mkdir(parents=True)
    write_lora(data / "models" / "Lora" / "styles" / "ink_v3.safetensors", model, scale=1.0,
               metadata={"ss_output_name": "ink", "ss_network_dim": 2, "ss_base_model_version": "sd_v1"})
    srv = start_server(data, "--no-demo-model")
    srv.model = model
    yield srv
    srv.stop()


def pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(decode(response.json()["images"][0]).convert("RGB")).astype(int)


def test_loras_route_has_a1111s_shape_and_refresh_finds_new_files(lora_server):
    listed = requests.get(lora_server.api("loras"), timeout=30).json()
    ink = next(item for item in listed if item["name"] == "ink_v3")
    assert set(ink) == {"name", "alias", "path", "metadata"}
    assert ink["alias"] == "ink" and ink["path"].endswith("styles/ink_v3.safetensors")
    assert ink["metadata"]["ss_output_name"] == "ink"
    write_lora(lora_server.data_dir / "models" / "Lora" / "late.safetensors", lora_server.model)
    assert "late" not in {i["name"] for i in requests.get(lora_server.api("loras"), timeout=30).json()}
    assert requests.post(lora_server.api("refresh-loras"), timeout=30).status_code == 200
    assert "late" in {i["name"] for i in requests.get(lora_server.api("loras"), timeout=30).json()}


def test_a_lora_in_the_prompt_changes_the_image_and_is_hashed_in_the_infotext(lora_server):
    plain = txt2img(lora_server, prompt="a red circle")
    styled = txt2img(lora_server, prompt="a red circle <lora:ink:1>")
    assert np.abs(pixels(plain) - pixels(styled)).mean() > 1
    info = json.loads(styled.json()["info"])
    with open(lora_server.data_dir / "models" / "Lora" / "styles" / "ink_v3.safetensors", "rb") as f:
        shorthash = hashes.addnet_hash_safetensors(f)[:12]
    assert f'Lora hashes: "ink: {shorthash}"' in info["infotexts"][0]
    assert info["extra_generation_params"]["Lora hashes"] == f"ink: {shorthash}"
    legacy = txt2img(lora_server, prompt="a red circle <lyco:ink_v3:1>")       # file name, legacy kind
    assert np.array_equal(pixels(legacy), pixels(styled))
    zero = txt2img(lora_server, prompt="a red circle <lora:ink:0>")
    assert np.array_equal(pixels(zero), pixels(plain))
    again = txt2img(lora_server, prompt="a red circle")                         # nothing left on the model
    assert np.array_equal(pixels(again), pixels(plain))


def test_a_missing_lora_is_reported_and_the_job_still_runs(lora_server):
    r = txt2img(lora_server, prompt="a red circle <lora:no_such_thing:0.8>")
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "Networks not found: no_such_thing" in json.dumps(info)
