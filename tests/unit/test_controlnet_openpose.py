"""Openpose JSON → skeleton image (CONTROLNET-REFERENCE §6.2, §6.3): colours, geometry, the accepted body formats,
coordinates, hands, face, animals and the errors bad documents get."""
from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

from modules.controlnet.openpose import draw as draw_mod
from modules.controlnet.openpose.draw import COLORS, LIMBS, draw
from modules.controlnet.openpose.pose_json import parse_document, parse_documents, to_json

W = H = 512
# a standing person facing the viewer, COCO-18 order (nose, neck, R arm, L arm, R leg, L leg, eyes, ears)
BODY = [(256, 100), (256, 160), (196, 160), (166, 240), (150, 320), (316, 160), (346, 240), (362, 320),
        (226, 300), (220, 390), (216, 480), (286, 300), (292, 390), (296, 480), (240, 85), (272, 85),
        (220, 95), (292, 95)]
# COCO-17 (DWPose/mmpose) index → COCO-18 index
COCO17_FROM_18 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)


def flat(points, missing=()):
    out = []
    for i, p in enumerate(points):
        out += [0, 0, 0] if i in missing or p is None else [p[0], p[1], 1]
    return out


def doc(body=BODY, missing=(), width=W, height=H, **person):
    return {"canvas_width": width, "canvas_height": height,
            "people": [{"pose_keypoints_2d": flat(body, missing), **person}]}


def render(document, **kw):
    return draw(parse_document(document), **kw)


def limb_colour(i):
    return tuple(int(c * 0.6) for c in COLORS[i])


def test_joints_have_their_colour_and_limb_midpoints_colour_times_0_6():
    img = render(doc())
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    for k, (x, y) in enumerate(BODY):
        assert tuple(img[y, x]) == COLORS[k], f"joint {k}"
    for i, (a, b) in enumerate(LIMBS):
        mx, my = (BODY[a][0] + BODY[b][0]) // 2, (BODY[a][1] + BODY[b][1]) // 2
        assert tuple(img[my, mx]) == limb_colour(i), f"limb {i}"
    assert limb_colour(0) == (153, 0, 0)
    assert tuple(img[5, 5]) == (0, 0, 0)              # background black


def test_limb_is_an_ellipse_four_pixels_wide():
    img = render(doc())
    # limb 7 (R hip → R knee) runs nearly vertically around x≈223 at y=345: half-width 4 across it
    row = img[345]
    coloured = [x for x in range(200, 250) if tuple(row[x]) == limb_colour(7)]
    assert 7 <= len(coloured) <= 10


def test_missing_joint_draws_neither_it_nor_its_limbs():
    img = render(doc(missing={3}))                     # right elbow absent
    for limb in (2, 3):                                 # R shoulder–R elbow, R elbow–R wrist
        a, b = LIMBS[limb]
        mx, my = (BODY[a][0] + BODY[b][0]) // 2, (BODY[a][1] + BODY[b][1]) // 2
        assert tuple(img[my, mx]) == (0, 0, 0)
    assert tuple(img[BODY[3][1], BODY[3][0]]) == (0, 0, 0)
    assert tuple(img[BODY[4][1], BODY[4][0]]) == COLORS[4]    # the wrist itself is still there


def test_confidence_below_one_counts_as_absent():
    document = doc()
    document["people"][0]["pose_keypoints_2d"][3 * 3 + 2] = 0.99
    assert np.array_equal(render(document), render(doc(missing={3})))


@pytest.mark.parametrize("width,height", [(512, 512), (640, 480)])
def test_normalised_and_pixel_coordinates_give_the_same_image(width, height):
    body = [(x * width // 512, y * height // 512) for x, y in BODY]
    normalised = [(x / width, y / height) for x, y in body]
    pixel_img = render(doc(body, width=width, height=height))
    norm_img = render(doc(normalised, width=width, height=height))
    assert pixel_img.any()
    assert np.array_equal(pixel_img, norm_img)


def test_body25_and_coco17_give_the_coco18_skeleton():
    reference = render(doc())
    body25 = BODY[:8] + [(256, 300)] + BODY[8:] + [(200 + 5 * i, 500) for i in range(6)]   # mid-hip, feet
    assert len(body25) == 25
    assert np.array_equal(render(doc(body25)), reference)
    coco17 = [BODY[i] for i in COCO17_FROM_18]          # no neck: it is the mean of the shoulders
    assert np.array_equal(render(doc(coco17)), reference)


def test_coco17_without_a_shoulder_has_no_neck():
    coco17 = [BODY[i] for i in COCO17_FROM_18]
    person = parse_document(doc(coco17, missing={6})).people[0]   # COCO-17 6 = right shoulder
    assert person.body[1] is None and person.body[2] is None and person.body[5] == (316.0, 160.0)


def hand_points(x0, y0):
    """21 points: the wrist, then five fingers of four points spreading upwards."""
    pts = [(x0, y0)]
    for f in range(5):
        pts += [(x0 - 40 + 20 * f, y0 - 20 * j) for j in range(1, 5)]
    return pts


def test_hand_edges_in_hsv_colours_and_points_in_blue():
    hand = hand_points(100, 400)
    img = render(doc(hand_right_keypoints_2d=flat(hand)))
    for x, y in hand:
        assert tuple(img[y, x]) == (0, 0, 255)
    # edge 5 (index finger, points 5→6) is a 2-px line of HSV(5/20, 1, 1); its midpoint is 10 px from each point
    (x1, y1), (x2, y2) = hand[5], hand[6]
    expected = np.array(colorsys.hsv_to_rgb(5 / 20, 1, 1)) * 255
    got = img[(y1 + y2) // 2, (x1 + x2) // 2].astype(float)
    assert np.abs(got - expected).max() <= 1
    # the wrist → thumb edge (edge 0) is red
    mid = ((hand[0][0] + hand[1][0]) // 2, (hand[0][1] + hand[1][1]) // 2)
    assert tuple(img[mid[1], mid[0]]) == (255, 0, 0)


def test_hand_point_at_origin_is_skipped_with_its_edges():
    hand = hand_points(100, 400)
    hand[1] = (0, 0)
    img = render(doc(hand_left_keypoints_2d=flat(hand)))
    assert tuple(img[0, 0]) == (0, 0, 0)
    assert tuple(img[300, 75]) == (0, 0, 0)           # no line from the wrist (100, 400) to the origin …
    assert tuple(img[190, 30]) == (0, 0, 0)           # … nor from the thumb's second point (60, 380)
    assert tuple(img[hand[2][1], hand[2][0]]) == (0, 0, 255)


def test_face_points_are_white_circles_of_radius_3():
    face = [(200 + 4 * (i % 10) * 3, 40 + 12 * (i // 10)) for i in range(70)]
    img = render(doc(face_keypoints_2d=flat(face)))
    x, y = face[0]
    assert tuple(img[y, x]) == (255, 255, 255)
    assert tuple(img[y, x + 3]) == (255, 255, 255) and tuple(img[y, x + 5]) == (0, 0, 0)


def test_parts_can_be_left_out_of_the_drawing():
    face = [(60 + 5 * i, 30) for i in range(70)]
    document = parse_document(doc(face_keypoints_2d=flat(face)))
    no_body = draw(document, body=False)
    assert tuple(no_body[BODY[1][1], BODY[1][0]]) == (0, 0, 0)
    assert tuple(no_body[30, 60]) == (255, 255, 255)
    assert tuple(draw(document, face=False)[30, 60]) == (0, 0, 0)


def test_several_people_on_one_canvas():
    left = [(x // 2, y) for x, y in BODY]
    right = [(x // 2 + 256, y) for x, y in BODY]
    document = {"canvas_width": W, "canvas_height": H,
                "people": [{"pose_keypoints_2d": flat(left)}, {"pose_keypoints_2d": flat(right)}]}
    img = render(document)
    for body in (left, right):
        for k in (0, 1, 4, 10):
            x, y = body[k]
            assert tuple(img[y, x]) == COLORS[k]


def test_drawing_at_another_size_scales_coordinates_and_optionally_strokes():
    document = parse_document(doc())
    big = draw(document, 1024, 1024)
    assert big.shape == (1024, 1024, 3)
    x, y = BODY[5]
    assert tuple(big[2 * y, 2 * x]) == COLORS[5]
    assert tuple(big[2 * y, 2 * x + 7]) != COLORS[5]                    # radius stays 4
    thick = draw(document, 1024, 1024, scale_strokes=True)
    assert tuple(thick[2 * y, 2 * x + 7]) == COLORS[5]                  # radius 8 at 1024 px
    wide = draw(document, 1024, 512)
    assert tuple(wide[y, 2 * x]) == COLORS[5]


def test_animals_drawn_with_the_ap10k_table():
    animal = [(100 + 10 * i, 200 + (i % 3) * 40) for i in range(17)]
    document = {"canvas_width": W, "canvas_height": H, "animals": [flat(animal)]}
    img = render(document)
    (a, b), colour = draw_mod.ANIMAL_LIMBS[3], draw_mod.ANIMAL_COLORS[3]
    # pick a point on the segment away from the other lines: a quarter of the way along
    x = (3 * animal[a][0] + animal[b][0]) // 4
    y = (3 * animal[a][1] + animal[b][1]) // 4
    assert tuple(img[y, x]) == colour


def test_to_json_round_trip_in_pixels_and_normalised():
    hand = hand_points(100, 400)
    document = parse_document(doc(missing={9}, hand_left_keypoints_2d=flat(hand)))
    out = to_json(document)
    assert out["canvas_width"] == W and out["people"][0]["hand_right_keypoints_2d"] is None
    assert out["people"][0]["pose_keypoints_2d"][9 * 3: 9 * 3 + 3] == [0.0, 0.0, 0.0]
    assert parse_document(json.dumps(out)) == document
    normalised = to_json(document, normalised=True)
    values = [v for v in normalised["people"][0]["pose_keypoints_2d"]]
    assert max(values) <= 1.0 and normalised["people"][0]["pose_keypoints_2d"][0] == BODY[0][0] / W
    assert parse_document(normalised) == document


def test_documents_as_list_json_text_and_bytes():
    one = doc()
    docs = parse_documents([one, json.dumps(one)])
    assert len(docs) == 2 and docs[0] == docs[1]
    assert parse_documents(json.dumps([one, one]).encode()) == docs
    assert parse_documents([]) == []
    # unknown keys, empty parts and an animals-only document are fine
    extra = dict(doc(hand_left_keypoints_2d=[], face_keypoints_2d=None), version="1.0")
    assert parse_document(extra).people[0].left_hand is None
    assert parse_document({"canvas_width": 64, "canvas_height": 64, "animals": []}).people == []


@pytest.mark.parametrize("value,message", [
    (5, "pose 0: must be an object with canvas_width, canvas_height and people (got a number)"),
    ({"people": []}, "pose 0: canvas_width must be an integer from 1 to 8192 (missing)"),
    ({"canvas_width": 0, "canvas_height": 5, "people": []}, "pose 0: canvas_width must be an integer"),
    ({"canvas_width": 64, "canvas_height": 64.5, "people": []}, "pose 0: canvas_height must be an integer"),
    ({"canvas_width": 64, "canvas_height": 64, "people": {}}, "pose 0: people must be a list"),
    ({"canvas_width": 64, "canvas_height": 64, "people": [7]}, "pose 0: people[0] must be an object"),
    ({"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": [1, 2, 1] * 19 + [1]}]},
     "pose 0: people[0].pose_keypoints_2d must be a flat list of x, y, confidence triples (18, 25 or 17 points); "
     "got 58 numbers"),
    ({"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": "1,2,3"}]},
     "people[0].pose_keypoints_2d must be a flat list of x, y, confidence triples (18, 25 or 17 points); got a string"),
    ({"canvas_width": 64, "canvas_height": 64, "people": [{"face_keypoints_2d": [1, "a", 1]}]},
     "people[0].face_keypoints_2d must be a flat list of x, y, confidence triples (70 or 68 points); item 1 is 'a'"),
    ({"canvas_width": 64, "canvas_height": 64, "animals": [[1, 2, 1]]},
     "pose 0: animals[0] must be a flat list of x, y, confidence triples (17 points)"),
    ("{not json", "pose 0: not valid JSON"),
])
def test_bad_documents_name_the_field(value, message):
    with pytest.raises(ValueError) as info:
        parse_documents(value)
    assert message in str(info.value)


def test_the_bad_document_and_person_are_named_in_a_list():
    bad = doc(hand_left_keypoints_2d=[1.0, 2.0, 1.0])
    bad["people"].insert(0, {"pose_keypoints_2d": flat(BODY)})
    with pytest.raises(ValueError, match=r"^pose 1: people\[1\]\.hand_left_keypoints_2d must be a flat list .*"
                                         r"\(21 points\); got 3 numbers$"):
        parse_documents([doc(), bad])
