"""ControlNet units as clients send them (CONTROLNET-REFERENCE §1.5): every field, the legacy aliases and image forms,
and the errors that name the unit and the field where the extension silently dropped the unit."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from modules.controlnet import infotext
from modules.controlnet.apply import residual_scales
from modules.controlnet.units import ControlNetUnit, parse_unit, parse_units
from modules.engine.params import ParamError


def b64(array: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def shape(h=16, w=24, value=200) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[4:12, 6:18] = value
    return a


def test_defaults_and_every_field():
    u = parse_unit({"enabled": True, "module": "canny", "model": "control_x", "weight": 0.5,
                    "image": b64(shape()), "resize_mode": "Just Resize", "low_vram": True, "processor_res": 256,
                    "threshold_a": 50, "threshold_b": 150, "guidance_start": 0.1, "guidance_end": 0.9,
                    "pixel_perfect": True, "control_mode": "My prompt is more important", "hr_option": "Low res only",
                    "save_detected_map": False, "advanced_weighting": [1] * 13})
    assert (u.enabled, u.module, u.model, u.weight) == (True, "canny", "control_x", 0.5)
    assert u.image.image.shape == (16, 24, 3) and u.image.mask is None
    assert (u.resize_mode, u.low_vram, u.processor_res, u.threshold_a, u.threshold_b) == \
        ("Just Resize", True, 256, 50.0, 150.0)
    assert (u.guidance_start, u.guidance_end, u.pixel_perfect) == (0.1, 0.9, True)
    assert (u.control_mode, u.hr_option, u.save_detected_map) == ("My prompt is more important", "Low res only",
                                                                  False)
    assert u.advanced_weighting == [1.0] * 13
    d = parse_unit({})
    assert d == ControlNetUnit() and not d.enabled and d.module == "none" and d.model == "None"


def test_legacy_aliases_and_positional_form():
    img = b64(shape())
    u = parse_unit({"enabled": True, "input_image": img, "mask_image": b64(np.full((16, 24, 3), 255, np.uint8)),
                    "lowvram": True, "guidance": 0.6, "guessmode": True, "resize_mode": "Inner Fit (Scale to Fit)"})
    assert u.image.image.shape == (16, 24, 3) and u.image.mask.shape == (16, 24) and u.image.mask.min() == 255
    assert u.low_vram and u.guidance_end == 0.6 and u.resize_mode == "Crop and Resize"
    assert u.unknown_fields == []           # guessmode is a known, ignored field
    assert parse_unit({"resize_mode": "Envelope (Outer Fit)"}).resize_mode == "Resize and Fill"
    assert parse_unit({"resize_mode": 0, "control_mode": 2}).resize_mode == "Just Resize"
    old = parse_unit([True, "canny", "control_x", 1.0, img, False, "Just Resize", False, 512, 100, 200, 0.0, 1.0,
                      False, False])
    assert old.enabled and old.module == "canny" and old.image is not None
    assert parse_unit({"enabled": True, "mystery": 1}).unknown_fields == ["mystery"]


def test_image_forms_and_rgba_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (255, 0, 0, 255)           # opaque red square on a transparent background
    u = parse_unit({"enabled": True, "image": "data:image/png;base64," + b64(rgba)})
    assert tuple(u.image.image[0, 0]) == (255, 255, 255) and tuple(u.image.image[3, 3]) == (255, 0, 0)
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[:, :4] = 255
    for form in ({"image": b64(rgba), "mask": b64(mask)}, [b64(rgba), b64(mask)], [{"image": b64(rgba),
                                                                                     "mask": b64(mask)}]):
        got = parse_unit({"enabled": True, "image": form})
        assert got.image.mask is not None and got.image.mask[0, 0] == 255 and got.image.mask[0, 7] == 0
    grey = parse_unit({"enabled": True, "image": shape()[..., 0]})       # a 2-D array (the UI sends arrays)
    assert grey.image.image.shape == (16, 24, 3)


@pytest.mark.parametrize("unit, field, words", [
    ({"enabled": True, "weight": 2.5}, "weight", "between 0.0 and 2.0"),
    ({"enabled": True, "guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start", "after"),
    ({"enabled": True, "control_mode": "Loud"}, "control_mode", "Balanced"),
    ({"enabled": True, "resize_mode": 7}, "resize_mode", "Crop and Resize"),
    ({"enabled": True, "image": "not base64!"}, "image", "base64"),
    ({"enabled": True, "image": "https://example.com/a.png"}, "image", "URL"),
    ({"enabled": "maybe"}, "enabled", "true or false"),
    ({"enabled": True, "image": {"image": b64(shape()), "mask": b64(np.zeros((4, 4, 3), np.uint8))}}, "image.mask",
     "same size"),
])
def test_bad_fields_name_the_unit_and_field(unit, field, words):
    with pytest.raises(ParamError) as err:
        parse_unit(unit, 1)
    assert f"args[1].{field}" in str(err.value) and words in str(err.value)


def test_unit_count_is_enforced_not_silently_cut():
    parse_units([{}, {}, {}], 3)
    with pytest.raises(ParamError, match="control_net_unit_count"):
        parse_units([{}, {}, {}, {}], 3)


def test_enabled_default_false_unless_a_model_or_image_is_named():
    assert not parse_unit({"module": "canny"}).enabled
    assert parse_unit({"model": "control_x"}).enabled
    assert not parse_unit({"model": "control_x", "enabled": False}).enabled


def test_infotext_round_trip():
    u = parse_unit({"enabled": True, "module": "canny", "model": "control_x [abcd1234]", "weight": 0.75,
                    "threshold_a": 100, "pixel_perfect": True})
    text = infotext.unit_text(u)
    assert text.startswith("Module: canny, Model: control_x [abcd1234], Weight: 0.75, Resize Mode: Crop and Resize")
    back = infotext.units_from_infotext({"ControlNet 0": text, "Steps": 20})
    assert back[0]["module"] == "canny" and back[0]["weight"] == 0.75 and back[0]["pixel_perfect"] is True
    assert back[0]["enabled"] is True and back[0]["threshold_a"] == 100.0
    assert infotext.unit_text(parse_unit({"model": "a, b"})) is None    # a comma: nothing is written


def test_residual_scales_per_control_mode():
    assert residual_scales(13, 0.5, "Balanced") == [0.5] * 13
    soft = residual_scales(13, 1.0, "My prompt is more important")
    assert soft[-1] == 1.0 and soft[0] == pytest.approx(0.825 ** 12) and soft[11] == pytest.approx(0.825)
    assert residual_scales(13, 1.0, "ControlNet is more important") == soft
    xl = residual_scales(10, 1.0, "My prompt is more important", family="sdxl")
    assert xl[-1] == pytest.approx(0.825 ** 3) and xl[0] == pytest.approx(0.825 ** 12)
    assert residual_scales(4, 2.0, "My prompt is more important", kind="t2i_adapter") == [0.5, 1.24, 1.65, 2.0]
    assert residual_scales(13, 1.0, "Balanced", soft=True) == soft        # canny/mlsd in the hires pass
    assert residual_scales(4, 9.0, "Balanced", advanced=[1, 2, 3, 4]) == [1, 2, 3, 4]
