"""A1111's built-in selectable scripts through the real server, as an A1111 client calls them: `script_name` and
`script_args` in A1111's order (the values of each script's controls, HTML blocks included), on the bundled demo
model (64×64). SD upscale ×2 of a 64×64 demo image gives 128×128; every other script returns what A1111's does
(grid first where A1111 makes one, then the images, each with its infotext)."""
from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from modules.engine import infotext
from tests.support.api import decode, txt2img
from tests.support.server import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("builtin-scripts-server"))   # the bundled demo model
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def demo_image(server) -> str:
    """A 64×64 picture made by the demo model, as base64 (what img2img clients send)."""
    r = txt2img(server, prompt="a red circle", steps=4, width=64, height=64, seed=7)
    assert r.status_code == 200, r.text
    return r.json()["images"][0]


def img2img(server, image: str, script_name: str, script_args: list, **fields):
    body = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 11, "init_images": [image],
            "denoising_strength": 0.5, "script_name": script_name, "script_args": script_args, **fields}
    return requests.post(server.api("img2img"), json=body, timeout=300)


def images_and_info(r):
    assert r.status_code == 200, r.text
    body = r.json()
    return [decode(b) for b in body["images"]], json.loads(body["info"])


def test_sd_upscale_doubles_a_64px_demo_image(server, demo_image):
    # [info HTML, tile overlap, upscaler index (1 = Lanczos in shared.sd_upscalers), scale factor]
    images, info = images_and_info(img2img(server, demo_image, "sd upscale", [None, 16, 1, 2.0]))
    assert [im.size for im in images] == [(128, 128)]
    assert decode(demo_image).size == (64, 64)
    assert info["width"] == 64 and info["height"] == 64   # A1111 reports p's size, the tile size (width/height)


def test_prompt_matrix_grid_first_then_every_combination(server):
    # [put variable parts at start, different seeds, prompt type, joining char, grid margins]
    r = txt2img(server, prompt="a circle|red|blue", steps=2, script_name="prompt matrix",
                script_args=[False, False, "positive", "comma", 0])
    images, info = images_and_info(r)
    assert len(images) == 5 and images[0].width > 2 * 64 and images[0].height > 2 * 64
    assert [infotext.parse(im.info["parameters"])["Prompt"] for im in images[1:]] == [
        "a circle", "a circle, red", "a circle, blue", "a circle, red, blue"]
    assert info["index_of_first_image"] == 1


def test_prompts_from_file_one_job_per_line_with_its_options(server):
    lines = "a red square\n--prompt \"a blue circle\" --steps 3 --seed 99\n"
    # [iterate seed every line, same random seed for all lines, insert prompts at, list of prompt inputs]
    # an empty prompt box: A1111 joins a line to a non-empty one ("line prompt")
    images, info = images_and_info(txt2img(server, prompt="", steps=2, script_name="prompts from file or textbox",
                                           script_args=[False, False, "start", lines]))
    params = [infotext.parse(im.info["parameters"]) for im in images]
    assert [(p["Prompt"], p["Steps"]) for p in params] == [("a red square", 2), ("a blue circle", 3)]
    assert params[1]["Seed"] == 99
    bad = txt2img(server, steps=2, script_name="prompts from file or textbox",
                  script_args=[False, False, "start", "--nonsense 3\n"])
    assert bad.status_code == 422 and "nonsense" in bad.text


def test_outpainting_mk2_and_poor_mans_outpainting_grow_the_image(server, demo_image):
    # [info HTML, pixels to expand, mask blur, direction, fall-off exponent, colour variation]
    images, _ = images_and_info(img2img(server, demo_image, "outpainting mk2", [None, 32, 4, ["left", "right"], 1.0,
                                                                                 0.05]))
    assert images[-1].size == (128, 64)
    # [pixels to expand, mask blur, masked content (index: 1 = original), direction]
    images, _ = images_and_info(img2img(server, demo_image, "poor man's outpainting", [32, 4, 1, ["down"]]))
    assert images[-1].size == (64, 128)
    bad = img2img(server, demo_image, "poor man's outpainting", [32, 4, 1, ["sideways"]])
    assert bad.status_code == 422 and "sideways" in bad.text and "left" in bad.text


def test_loopback_runs_each_result_through_again(server, demo_image):
    # [loops, final denoising strength, curve, append interrogated prompt]
    images, info = images_and_info(img2img(server, demo_image, "loopback", [3, 0.2, "Linear", "None"]))
    assert len(images) == 4 and images[0].size == (3 * 64, 64)        # the grid of the three passes, then each
    strengths = [infotext.parse(im.info["parameters"])["Denoising strength"] for im in images[1:]]
    assert strengths == pytest.approx([0.5, 0.35, 0.2])


def test_a_txt2img_only_script_is_refused_in_img2img_naming_the_choices(server, demo_image):
    r = img2img(server, demo_image, "no such script", [])
    assert r.status_code == 422 and "no such script" in r.text.lower() and "loopback" in r.text.lower()
