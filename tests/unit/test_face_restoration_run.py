""""Restore faces" in a generation (tiny model): the restorer the run was given runs on each decoded image before
the postprocess_image scripts, with the model p names or the face_restoration_model setting; restore_faces None
follows the face_restoration setting; the infotext and the API info say "Face restoration: <name>" as A1111
writes it; a run asking for it without restorers fails naming the field."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from modules import processing
from modules.engine.hooks import Hooks
from modules.engine.params import GenerationParams, ParamError
from tests.support.engine_helpers import load_tiny, pixels, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("faces-run"))


class Options(dict):
    def get(self, key, default=None):
        return super().get(key, default)


def inverting_restorer(calls: list):
    """A restorer that shows it ran: it inverts the image and records the model it was asked for."""
    def restore(image: Image.Image, name: str) -> Image.Image:
        calls.append((name, image.size))
        return ImageOps.invert(image.convert("RGB"))
    return restore


def run_with(model, restorer, options=None, hooks=None, **fields):
    base = {"prompt": "a red circle", "steps": 2, "width": 32, "height": 32, "seed": 5, "sampler_name": "Euler"}
    ctx = processing.RunContext(model, None, processing.RunOptions(), hooks or Hooks(), options=options,
                                face_restorer=restorer)
    params = GenerationParams(**{**base, **fields})
    params.mode = "txt2img"
    with processing.current_run(ctx):
        p = processing.from_params(params)
        p.do_not_save_grid = True
        return processing.process_images(p)


def test_restore_faces_runs_the_restorer_and_writes_the_infotext(model):
    # the same batch size on both sides: bf16 kernels without AMX may round a batch of 4 rows differently from 2
    plain = run(model, steps=2, batch_size=2)
    calls: list = []
    restored = run_with(model, inverting_restorer(calls), restore_faces=True, batch_size=2)
    assert calls == [("CodeFormer", (32, 32)), ("CodeFormer", (32, 32))]   # the setting's default model
    assert np.array_equal(pixels(restored.images[0]), 255 - pixels(plain.images[0]))
    assert "Face restoration: CodeFormer" in restored.infotexts[0]
    text = restored.infotexts[0].splitlines()[-1]
    assert text.index("Seed:") < text.index("Face restoration:") < text.index("Size:")   # A1111's order
    info = json.loads(restored.js())
    assert info["restore_faces"] is True and info["face_restoration_model"] == "CodeFormer"
    assert "Face restoration" not in plain.infotexts[0]


def test_model_from_p_then_setting_and_the_setting_turns_it_on(model):
    calls: list = []
    options = Options(face_restoration=True, face_restoration_model="GFPGAN")
    done = run_with(model, inverting_restorer(calls), options)   # restore_faces None: the setting decides
    assert calls == [("GFPGAN", (32, 32))] and "Face restoration: GFPGAN" in done.infotexts[0]
    calls.clear()
    run_with(model, inverting_restorer(calls), options, restore_faces=False)   # an explicit False wins
    assert calls == []
    calls.clear()
    run_with(model, inverting_restorer(calls), Options(face_restoration=False))
    assert calls == []


def test_restorer_runs_before_postprocess_image_scripts(model):
    seen = []
    hooks = Hooks()
    hooks.add("postprocess_image", lambda p, args: seen.append(np.asarray(args.image)[0, 0].tolist()))
    calls: list = []
    done = run_with(model, inverting_restorer(calls), hooks=hooks, restore_faces=True)
    assert seen == [np.asarray(done.images[0])[0, 0].tolist()]   # the script saw the restored image


def test_without_restorers_the_field_is_named(model):
    with pytest.raises(ParamError, match="restore_faces"):
        run(model, steps=2, restore_faces=True)
