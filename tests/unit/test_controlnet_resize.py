"""Control map sizes (modules.controlnet.resize): the resize modes' geometry, the map-aware interpolation, inpaint
maps, pixel perfect and the preprocessor's padded working size, on drawn maps."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from modules.controlnet.resize import (RESIZE_MODES, pixel_perfect_resolution, preprocess_resize, resize_map,
                                       resize_mode_name)

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def two_colour(h: int = 100, w: int = 200) -> np.ndarray:
    """Left half red, right half blue, a green 10-px square in the top right corner: a segmentation map. (Three
    colours: a map of exactly two colours spanning black to white counts as a binary edge map.)"""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = RED
    img[:, w // 2:] = BLUE
    img[:10, w - 10:] = GREEN
    return img


def colours(img: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in np.unique(img.reshape(-1, img.shape[2]), axis=0)}


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_every_mode_gives_the_target_size(mode):
    out = resize_map(two_colour(), 128, 64, mode)
    assert out.shape == (64, 128, 3) and out.dtype == np.uint8


def test_sizes_are_floored_to_multiples_of_8():
    assert resize_map(two_colour(), 515, 300, "Just Resize").shape == (296, 512, 3)


def test_crop_and_resize_scales_to_cover_and_crops_the_centre():
    # 100×200 → cover 64×64: scale 0.64 → 64×128, then columns 32..95 are kept: the red/blue boundary (column 64
    # of the scaled map) lands at column 32, the green corner is cropped away
    out = resize_map(two_colour(), 64, 64, "Crop and Resize")
    assert (out[:, :32] == RED).all() and (out[:, 32:] == BLUE).all()


def test_resize_and_fill_fits_inside_and_fills_with_the_border_median():
    img = two_colour()
    img[:, :] = GREEN
    img[10:90, 10:190] = RED           # the border is green all round
    img[40:60, 150:170] = BLUE
    out = resize_map(img, 128, 128, "Resize and Fill")
    # scale 0.64 → 128×64 pasted at row (128 − 64) // 2 = 32
    assert (out[:32] == GREEN).all() and (out[96:] == GREEN).all()
    assert (out[32 + 10:32 + 54, 10:90] == RED).all()
    assert (out[32 + 28:32 + 36, 98:106] == BLUE).all()
    # the fill is the median of the border pixels, not simply black
    mixed = two_colour()                # border: half red, half blue → channel medians (127 or 128, 0, 127 or 128)
    fill = resize_map(mixed, 128, 128, "Resize and Fill")[0, 0]
    border = np.concatenate([mixed[0], mixed[-1], mixed[:, 0], mixed[:, -1]])
    assert tuple(fill) == tuple(np.median(border, axis=0).astype(np.uint8))


def test_few_colour_maps_resize_with_nearest():
    seg = np.zeros((30, 45, 3), np.uint8)
    seg[:, :15] = RED
    seg[:, 15:30] = GREEN
    seg[:, 30:] = BLUE
    for w, h in ((104, 72), (24, 16)):
        out = resize_map(seg, w, h, "Just Resize")
        assert colours(out) <= colours(seg)
    # a photo-like map (many colours) is interpolated: new in-between values appear
    ramp = np.repeat(np.repeat(np.arange(0, 250, 1, np.uint8)[None, :, None], 10, axis=0), 3, axis=2)
    assert len(colours(resize_map(ramp, 496, 16, "Just Resize"))) > 3


def test_shrinking_many_colours_uses_area():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = resize_map(img, 32, 32, "Just Resize")
    expected = img.reshape(32, 2, 32, 2, 3).astype(np.float32).mean(axis=(1, 3))
    assert np.abs(out.astype(np.float32) - expected).max() <= 1


def test_binary_thin_lines_stay_binary_and_thin_when_enlarged():
    lines = np.zeros((64, 64, 3), np.uint8)
    cv2.line(lines, (4, 20), (60, 20), (255, 255, 255), 1)
    cv2.line(lines, (8, 30), (56, 60), (255, 255, 255), 1)
    out = resize_map(lines, 256, 256, "Just Resize")
    assert set(np.unique(out)) <= {0, 255}
    grey = out[:, :, 0]
    assert (grey > 0).sum() > 200                            # the lines are still there ...
    columns = grey[60:100, 40:200] > 0                       # ... the horizontal one 1–2 px thick (not 4× thicker)
    assert columns.any(axis=0).all()
    assert columns.sum(axis=0).max() <= 2
    # a plain cubic resize would have made it 4+ px wide and grey
    plain = cv2.resize(lines, (256, 256), interpolation=cv2.INTER_CUBIC)[60:100, 40:200, 0]
    assert (plain > 0).sum(axis=0).max() >= 4


def test_binary_filled_shapes_are_thresholded_not_thinned():
    blob = np.zeros((32, 32, 3), np.uint8)
    blob[8:24, 8:24] = 255
    out = resize_map(blob, 128, 128, "Just Resize")
    assert set(np.unique(out)) == {0, 255}
    assert (out[40:88, 40:88] == 255).all() and (out[:24] == 0).all()


def test_inpaint_maps_keep_a_binary_mask_and_fill_with_inpaint():
    rgba = np.zeros((100, 200, 4), np.uint8)
    rgba[:, :, :3] = 90
    rgba[:, 100:, 3] = 200            # > 127 → inpaint
    rgba[:, :100, 3] = 50             # ≤ 127 → keep
    out = resize_map(rgba, 128, 128, "Resize and Fill")
    assert out.shape == (128, 128, 4)
    assert set(np.unique(out[:, :, 3])) == {0, 255}
    assert (out[:32, :, 3] == 255).all() and (out[96:, :, 3] == 255).all()    # the filled border: outpaint there
    assert (out[40:90, 5:60, 3] == 0).all() and (out[40:90, 70:123, 3] == 255).all()
    crop = resize_map(rgba, 64, 64, "Crop and Resize")
    assert crop.shape == (64, 64, 4) and set(np.unique(crop[:, :, 3])) == {0, 255}


def test_unknown_mode_names_the_allowed_values():
    with pytest.raises(ValueError, match="Just Resize, Crop and Resize, Resize and Fill"):
        resize_map(two_colour(), 64, 64, "Stretch")
    assert resize_mode_name("Envelope (Outer Fit)") == "Resize and Fill"
    assert resize_mode_name("Inner Fit (Scale to Fit)") == "Crop and Resize"


def test_pixel_perfect_resolution():
    # input 300×400 (H×W), target 512×768: k = 512/300 and 768/400
    assert pixel_perfect_resolution((300, 400), (512, 768), "Crop and Resize") == 576
    assert pixel_perfect_resolution((300, 400), (512, 768), "Just Resize") == 576
    assert pixel_perfect_resolution((300, 400), (512, 768), "Resize and Fill") == 512
    assert pixel_perfect_resolution((512, 512), (512, 768), "Crop and Resize") == 768
    assert pixel_perfect_resolution((512, 512), (512, 768), "Resize and Fill") == 512
    assert pixel_perfect_resolution((1000, 600), (512, 512), "Crop and Resize") == 512
    assert pixel_perfect_resolution((1000, 600), (512, 512), "Resize and Fill") == 307


def test_preprocess_resize_pads_to_64_and_crops_back():
    img = np.zeros((300, 400, 3), np.uint8)
    img[:, -1] = 200                                   # the right edge column, repeated into the padding
    padded, crop = preprocess_resize(img, 512)
    assert padded.shape == (512, 704, 3)               # 512×683 padded to 64s
    assert (padded[:, 683:, 0] > 150).all()
    assert crop(padded).shape == (512, 683, 3)
    small, crop_small = preprocess_resize(np.zeros((600, 800, 3), np.uint8), 300)
    assert small.shape == (320, 448, 3) and crop_small(small).shape == (300, 400, 3)
    grey, _ = preprocess_resize(np.zeros((64, 64), np.uint8), 64)
    assert grey.shape == (64, 64, 3)
