"""A1111's images, infotext_utils and safe modules: save_image in A1111's form (and ours) with the image-saved
callbacks, image_grid with its callback, the A1111-shaped infotext parse with infotext_pasted, and safe.load
refusing a pickle that would run code. Without a runtime: A1111's default settings apply."""
from __future__ import annotations

import base64
import datetime
import io
import os
import sys
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from modules import images, infotext_utils, safe, script_callbacks, shared
from modules.models.safe_load import ModelFileError

TEXT = "a red square\nNegative prompt: blur\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1234, Size: 16x24"


@pytest.fixture(autouse=True)
def unbound(monkeypatch):
    monkeypatch.setattr(shared, "_runtime", None)


@pytest.fixture
def callbacks():
    """Registers test callbacks through script_callbacks and removes them afterwards."""
    added = []

    def register(category, fn):
        getattr(script_callbacks, f"on_{category}")(fn)
        added.append(fn)
    yield register
    for fn in added:
        script_callbacks.remove_callbacks_for_function(fn)


def _image(w=16, h=16, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_save_image_in_a1111_form_fires_both_callbacks(tmp_path, callbacks):
    seen = []

    def before(params):
        seen.append(("before", params.filename, params.p))
        params.pnginfo["extension_note"] = "added by a callback"

    callbacks("before_image_saved", before)
    callbacks("image_saved", lambda params: seen.append(("after", params.filename, params.image.size)))
    p = object()
    # Ultimate SD upscale's call: images.save_image(img, p.outpath_samples, "", seed, prompt, opts.samples_format,
    # info=..., p=p)
    fullfn, txt = images.save_image(_image(), str(tmp_path), "", 1234, "a red square", "png", info=TEXT, p=p)
    day = datetime.date.today().isoformat()
    assert fullfn == os.path.join(str(tmp_path), day, "00000-1234.png") and txt is None
    assert seen == [("before", fullfn, p), ("after", fullfn, (16, 16))]
    with Image.open(fullfn) as saved:
        assert saved.info["parameters"] == TEXT and saved.info["extension_note"] == "added by a callback"
        assert images.read_info_from_image(saved)[0] == TEXT
    second, _ = images.save_image(_image(), str(tmp_path), "", 99, "x", info=None, save_to_dirs=False,
                                  forced_filename=None)
    assert os.path.basename(second) == "00000-99.png"   # numbered among the files of that folder, not its folders
    third, _ = images.save_image(_image(), str(tmp_path), "grid", 5, "x", extension="jpg", info=TEXT,
                                 save_to_dirs=False)
    assert os.path.basename(third) == "grid-0000-5.jpg"
    with Image.open(third) as jpg:
        assert images.read_info(jpg)[0] == TEXT


def test_callbacks_can_rename_and_replace_the_image(tmp_path, callbacks):
    def before(params):
        params.filename = str(tmp_path / "renamed.png")
        params.image = params.image.resize((4, 4))

    callbacks("before_image_saved", before)
    fullfn, _ = images.save_image(_image(), str(tmp_path), "", 1, "p", info="x", save_to_dirs=False)
    assert fullfn == str(tmp_path / "renamed.png")
    with Image.open(fullfn) as saved:
        assert saved.size == (4, 4)


def test_our_form_fires_the_callbacks_too(tmp_path, callbacks):
    seen = []
    callbacks("image_saved", lambda params: seen.append((params.filename, params.pnginfo)))
    path = images.save_image(_image(), tmp_path, 7, "a prompt", TEXT, date_dirs=False)
    assert path == tmp_path / "00000-7-a prompt.png"
    assert seen == [(str(path), {"parameters": TEXT})]


def test_image_grid_fires_the_grid_callback(callbacks):
    def one_column(params):
        params.cols, params.rows = 1, len(params.imgs)

    tiles = [_image(8, 8, seed) for seed in range(4)]
    assert images.image_grid(tiles).size == (16, 16)
    callbacks("image_grid", one_column)
    grid = images.image_grid(tiles)
    assert grid.size == (8, 32)
    assert np.array_equal(np.asarray(grid)[24:32], np.asarray(tiles[3]))


def test_flatten_and_resize_image():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert images.flatten(rgba, "#00ff00").getpixel((0, 0)) == (0, 255, 0)
    src = _image(32, 16)
    assert images.resize_image(0, src, 8, 8).size == (8, 8)
    assert images.resize_image(1, src, 16, 16, upscaler_name="Nearest").size == (16, 16)
    with pytest.raises(ValueError, match="upscaler_name 'ESRGAN'.*Lanczos"):
        images.resize_image(0, src, 8, 8, upscaler_name="ESRGAN")
    assert images.sanitize_filename_part("a/b: c.") == "a_b__c"
    names = images.FilenameGenerator(None, 5, "a cat: big", src)
    assert names.apply("[seed]-[prompt_spaces]-[width]x[height][none]-[unknown_tag]") == "5-a cat_ big-32x16-[unknown_tag]"


def test_parse_generation_parameters_gives_a1111_keys_and_fires_infotext_pasted(callbacks):
    def pasted(text, params):
        assert text == TEXT
        params["Steps"] = "40"

    callbacks("infotext_pasted", pasted)
    params = infotext_utils.parse_generation_parameters(TEXT)
    assert params["Prompt"] == "a red square" and params["Negative prompt"] == "blur"
    assert (params["Size-1"], params["Size-2"], params["Seed"], params["CFG scale"]) == ("16", "24", "1234", "7")
    assert params["Steps"] == "40" and "Size" not in params
    assert params["Clip skip"] == "1" and params["Schedule type"] == "Automatic"   # A1111's defaults
    from modules import generation_parameters_copypaste
    assert generation_parameters_copypaste is infotext_utils
    assert generation_parameters_copypaste.parse_generation_parameters is infotext_utils.parse_generation_parameters
    assert infotext_utils.unquote(infotext_utils.quote('a, "b"')) == 'a, "b"'


def test_image_from_url_text_and_paste_registry():
    buf = io.BytesIO()
    _image(5, 3).save(buf, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert infotext_utils.image_from_url_text(data_url).size == (5, 3)
    fd, temp_file = tempfile.mkstemp(suffix=".png")   # where Gradio keeps uploads
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        assert infotext_utils.image_from_url_text([{"path": temp_file}]).size == (5, 3)
    finally:
        os.remove(temp_file)
    with pytest.raises(ValueError, match="not a file the web UI wrote"):
        infotext_utils.image_from_url_text({"path": "/etc/hostname"})
    binding = infotext_utils.ParamBinding("button", "txt2img", source_tabname="img2img")
    infotext_utils.register_paste_params_button(binding)
    assert infotext_utils.registered_param_bindings[-1] is binding
    infotext_utils.registered_param_bindings.remove(binding)


class _RunsCode:
    """Unpickling this would call os.system (the test asserts it never does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"{sys.executable} -c \"open({str(self.marker)!r}, 'w').close()\"",))


def test_safe_load_refuses_a_pickle_with_code(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _RunsCode(marker)}, evil)
    with pytest.raises(ModelFileError, match="evil.pt.*refused"):
        safe.load(str(evil), map_location="cpu")
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "step": 5}, good)
    loaded = safe.load(str(good), map_location="cpu")
    assert loaded["step"] == 5 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert safe.unsafe_torch_load is safe.load
