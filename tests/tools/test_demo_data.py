"""The demo model's procedural data set: deterministic, captions match pixels, held-out combinations stay out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tools.demo_model import analysis, data


def test_same_seed_same_images_and_captions():
    a_img, a_cap = data.make_batch(np.random.default_rng(7), 24)
    b_img, b_cap = data.make_batch(np.random.default_rng(7), 24)
    assert a_cap == b_cap
    assert np.array_equal(a_img, b_img)
    c_img, c_cap = data.make_batch(np.random.default_rng(8), 24)
    assert c_cap != a_cap


def test_images_are_64x64_rgb_uint8():
    img, caps = data.make_batch(np.random.default_rng(0), 4)
    assert img.shape == (4, 64, 64, 3) and img.dtype == np.uint8
    assert len(caps) == 4


def test_caption_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = data.random_scene(rng)
        background, objs = data.parse_caption(scene.caption)
        assert background == scene.background
        assert [(o["color"], o["shape"], o["size"], o["position"]) for o in objs] == \
            [(o.color, o.shape, o.size, o.position) for o in scene.objects]


def test_caption_format():
    scene = data.Scene("blue", (data.Obj("red", "circle", "large", "left", 16, 32, 13.5),))
    assert scene.caption == "a large red circle on the left, blue background"
    two = data.Scene("gray", (data.Obj("red", "circle", "small", "top", 32, 16, 8),
                              data.Obj("white", "triangle", "large", "bottom", 32, 48, 13.5)))
    assert two.caption == "a small red circle at the top and a large white triangle at the bottom, gray background"
    with pytest.raises(ValueError):
        data.parse_caption("a cat")


def test_partial_captions_leave_out_one_kind_of_attribute():
    two = "a small red circle at the top and a large white triangle at the bottom, gray background"
    assert data.partial_caption(two, "position") == "a small red circle and a large white triangle, gray background"
    assert data.partial_caption(two, "color") == \
        "a small circle at the top and a large triangle at the bottom, gray background"
    assert data.partial_caption(two, "background") == \
        "a small red circle at the top and a large white triangle at the bottom"
    rng = np.random.default_rng(5)
    for _ in range(100):
        scene = data.random_scene(rng)
        words = {kind: data.partial_caption(scene.caption, kind).replace(",", " ").split() for kind in data.PARTIAL_KINDS}
        for o in scene.objects:
            assert o.color not in words["color"] and o.color in words["position"] + words["background"]
            assert o.shape in words["color"] and o.shape in words["position"] and o.size in words["background"]
        assert "background" not in words["background"] and words["color"][-2:] == [scene.background, "background"]
        assert not {"left", "right", "top", "bottom", "center"} & set(words["position"])
    with pytest.raises(ValueError, match="leave_out must be one of"):
        data.partial_caption(two, "size")


def test_partial_caption_ids_line_up_with_their_captions():
    from tools.demo_model import models, unet

    tok = models.load_tokenizer()
    caps = ["a large red circle on the left, blue background", "a small green square at the top, gray background",
            "a large red circle on the left, blue background"]
    ids = unet.partial_caption_ids(tok, caps)
    assert ids.shape == (len(data.PARTIAL_KINDS), 3, 77)
    for k, kind in enumerate(data.PARTIAL_KINDS):
        want = models.token_ids(tok, [data.partial_caption(c, kind) for c in caps])
        assert ids[k].long().equal(want)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_pixels_match_single_object_captions(split):
    """The evaluation's pixel analysis reads back exactly what the caption says from rendered scenes."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        scene = data.random_scene(rng, split, n_objects=1)
        img = data.render(scene)
        res = analysis.analyze(img)
        obj = scene.objects[0]
        assert res.found, scene.caption
        assert (res.color, res.position, res.shape, res.size) == (obj.color, obj.position, obj.shape, obj.size), \
            scene.caption
        assert np.allclose(res.background_rgb, data.BACKGROUNDS[scene.background], atol=1)
        assert res.background == scene.background


def test_two_object_scenes_have_both_objects_where_the_caption_says():
    rng = np.random.default_rng(5)
    for _ in range(40):
        scene = data.random_scene(rng, "train", n_objects=2)
        a, b = scene.objects
        assert a.position != b.position
        img = data.render(scene).astype(np.float32)
        for obj in scene.objects:
            # the pixel at the object's centre (a triangle's centre of mass is lower) has the object's colour
            x, y = int(obj.cx), int(obj.cy + (obj.extent / 3 if obj.shape == "triangle" else 0))
            assert np.linalg.norm(img[y, x] - data.COLORS[obj.color]) < 30, scene.caption
        # the background shows in the corners
        assert np.allclose(img[0, 0], data.BACKGROUNDS[scene.background], atol=1)


def test_backgrounds_contrast_with_objects():
    rng = np.random.default_rng(9)
    for _ in range(300):
        scene = data.random_scene(rng)
        for obj in scene.objects:
            assert obj.color != scene.background
            assert data.background_ok(scene.background, [obj.color])


def test_heldout_combinations_never_in_training():
    held = set(data.HELDOUT)
    assert len(held) == len(data.HELDOUT) == 16
    rng = np.random.default_rng(0)
    for _ in range(3000):
        scene = data.random_scene(rng, "train")
        for obj in scene.objects:
            assert obj.combo not in held, scene.caption


def test_heldout_split_still_covers_every_attribute_pair_in_training():
    """Composition test, not unseen words: every (colour, shape), (colour, position), (shape, position) pair of a
    held-out combination also occurs in a training combination."""
    train = [c for c in itertools.product(data.COLORS, data.SHAPES, data.POSITIONS) if not data.is_heldout(*c)]
    for col, shp, pos in data.HELDOUT:
        assert any(c[0] == col and c[1] == shp for c in train)
        assert any(c[0] == col and c[2] == pos for c in train)
        assert any(c[1] == shp and c[2] == pos for c in train)


def test_heldout_eval_captions():
    caps = data.heldout_captions()
    assert len(caps) >= 200
    assert len(set(caps)) == len(caps)
    assert caps == data.heldout_captions()  # deterministic
    held = set(data.HELDOUT)
    for cap in caps:
        background, objs = data.parse_caption(cap)
        assert len(objs) == 1
        o = objs[0]
        assert (o["color"], o["shape"], o["position"]) in held
        assert data.background_ok(background, [o["color"]])
    # the first 24 (the CI subset) cover all 16 held-out combinations
    first = {tuple(data.parse_caption(c)[1][0][k] for k in ("color", "shape", "position")) for c in caps[:24]}
    assert first == held


def test_heldout_scenes_render_their_captions():
    for scene in data.heldout_scenes(20):
        assert data.is_heldout(*scene.objects[0].combo)
        assert data.scene_from_caption(scene.caption).caption == scene.caption
