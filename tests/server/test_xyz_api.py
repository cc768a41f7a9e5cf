"""X/Y/Z plot through the real server as an A1111 client calls it: script_name "x/y/z plot" with A1111's script_args
order (x_type index, x_values, x_values_dropdown, y_type, …, margin_size, csv_mode); steps × CFG returns the grid
first and the cells after, each with its infotext; /sdapi/v1/scripts lists it; a bad value is a 422 naming the
axis."""
from __future__ import annotations

import json

import pytest
import requests

from modules.engine import infotext
from tests.support.api import decode, txt2img
from tests.support.model_factory import write_tiny_checkpoint
from tests.support.server import start_server

# the txt2img tab's axis list starts (as A1111's): Nothing, Seed, Var. seed, Var. strength, Steps, Hires steps,
# CFG Scale, Prompt S/R, Prompt order, Sampler
STEPS, CFG, SAMPLER = 4, 6, 9


def script_args(x_type, x_values, y_type=0, y_values="", include_lone_images=True, csv_mode=False):
    return [x_type, x_values, [], y_type, y_values, [], 0, "", [], True, include_lone_images, False, False,
            False, False, False, 0, csv_mode]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("xyz-server")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=3)
    srv = start_server(data, "--no-demo-model")
    yield srv
    srv.stop()


def test_scripts_route_lists_the_plot(server):
    listed = requests.get(server.api("scripts"), timeout=30).json()
    assert "x/y/z plot" in listed["txt2img"] and "x/y/z plot" in listed["img2img"]


def test_steps_by_cfg_returns_the_grid_first_and_the_cells_after(server):
    r = txt2img(server, width=32, height=32, steps=2, sampler_name="Euler", script_name="x/y/z plot",
                script_args=script_args(STEPS, "1-2", CFG, "5, 9"))
    assert r.status_code == 200, r.text
    body = r.json()
    images = [decode(b) for b in body["images"]]
    assert len(images) == 5
    assert images[0].width > 2 * 32 and images[0].height > 2 * 32       # the grid with its label bands
    assert all(im.size == (32, 32) for im in images[1:])
    texts = [infotext.parse(im.info["parameters"]) for im in images]
    assert texts[0]["X Type"] == "Steps" and texts[0]["Y Type"] == "CFG Scale"
    assert [(t["Steps"], t["CFG scale"]) for t in texts[1:]] == [(1, 5), (2, 5), (1, 9), (2, 9)]
    info = json.loads(body["info"])
    assert info["index_of_first_image"] == 1 and len(info["infotexts"]) == 5


def test_a_bad_sampler_is_a_422_naming_the_axis_and_the_choices(server):
    r = txt2img(server, width=32, height=32, steps=1, script_name="x/y/z plot",
                script_args=script_args(SAMPLER, "Euler, Nope", csv_mode=True))
    assert r.status_code == 422
    detail = r.json()
    assert "Sampler: unknown sampler 'Nope'" in str(detail) and "DPM++ 2M" in str(detail)
