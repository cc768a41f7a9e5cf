"""The neural openpose preprocessor: the three CMU networks in the real files' key layout, loaded strictly through the
restricted unpickler; peak finding and PAF grouping on heatmaps and PAFs built by hand; hand and face crops; and the
whole `detect.run` on an image with weights from files in an annotator folder.

Real weights are not available offline, so the networks carry random (or hand-wired) weights: what is checked is
the plumbing (keys, shapes, coordinates, crops, JSON), while the grouping algorithm gets exact synthetic inputs."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.controlnet.openpose import body, detect, hand_face
from modules.controlnet.openpose.networks import BodyPoseNet, FacePoseNet, HandPoseNet
from modules.controlnet.openpose.pose_json import Person, parse_document
from modules.models.safe_load import ModelFileError

CPU = torch.device("cpu")


def save(net: torch.nn.Module, path) -> None:
    """As the real files are: a plain dict of tensors under the Caffe layer names (fp16 here to keep tests light)."""
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """An annotator folder with the three files in the extension's layout (<dir>/openpose/<file>)."""
    root = tmp_path_factory.mktemp("annotators")
    (root / "openpose").mkdir()
    torch.manual_seed(0)
    for cls, f in ((BodyPoseNet, detect.BODY_FILE), (HandPoseNet, detect.HAND_FILE), (FacePoseNet, detect.FACE_FILE)):
        save(cls(), root / "openpose" / f.filename)
    yield root
    detect.unload()


# --- networks and files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,keys,params,layer,shape", [
    ("body", 184, 52_311_446, "Mconv7_stage6_L2.weight", (19, 128, 1, 1)),
    ("hand", 104, 36_832_324, "conv6_2_CPM.weight", (22, 512, 1, 1)),
    ("face", 104, 38_425_706, "Mconv1_stage2.weight", (128, 199, 7, 7)),
])
def test_files_load_strictly_in_the_real_key_layout(weights_dir, kind, keys, params, layer, shape):
    f = {"body": detect.BODY_FILE, "hand": detect.HAND_FILE, "face": detect.FACE_FILE}[kind]
    path = weights_dir / "openpose" / f.filename
    stored = torch.load(path, weights_only=True)
    net = detect.load_network(kind, path)
    state = net.state_dict()
    assert sorted(state) == sorted(stored) and len(state) == keys
    assert all(k.count(".") == 1 for k in state)            # flat Caffe names: "<layer>.weight"
    assert "conv1_1.weight" in state and tuple(state[layer].shape) == shape
    assert sum(v.numel() for v in state.values()) == params  # the real files: 52.3M / 36.8M / 38.4M floats
    assert all(torch.equal(state[k], stored[k].float()) for k in state)
    assert not net.training


def test_network_outputs_have_the_stride_8_map_shapes():
    x = torch.zeros(1, 3, 32, 24)
    with torch.no_grad():
        pafs, heat = BodyPoseNet()(x)
        hand = HandPoseNet()(x)
    assert pafs.shape == (1, 38, 4, 3) and heat.shape == (1, 19, 4, 3) and hand.shape == (1, 22, 4, 3)
    assert (heat >= 0).all()            # stage 6's heatmaps pass a ReLU, as in the reference implementations


def test_wrong_files_are_refused_naming_the_problem(tmp_path):
    net = HandPoseNet()
    state = {k: v.half() for k, v in net.state_dict().items()}
    del state["Mconv7_stage6.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "hand.pth")
    with pytest.raises(ModelFileError, match=r"hand\.pth: not the openpose hand network \(missing "
                                             r"Mconv7_stage6\.bias \(1\); unexpected extra\.weight \(1\)\)"):
        detect.load_network("hand", tmp_path / "hand.pth")
    # a body file is not a face network
    torch.save({k: v.half() for k, v in net.state_dict().items()}, tmp_path / "facenet.pth")
    with pytest.raises(ModelFileError, match="not the openpose face network .*wrong shape"):
        detect.load_network("face", tmp_path / "facenet.pth")


class NotATensor:
    pass


def test_a_pickle_with_code_is_refused(tmp_path):
    torch.save({"conv1_1.weight": NotATensor()}, tmp_path / "body_pose_model.pth")
    with pytest.raises(ModelFileError, match="refused"):
        detect.load_network("body", tmp_path / "body_pose_model.pth")


# --- body: peaks and PAF grouping on synthetic maps ---------------------------------------------------------------

SKELETON = [(64, 25), (64, 40), (49, 40), (41, 60), (37, 80), (79, 40), (86, 60), (90, 80), (56, 75), (55, 97),
            (54, 120), (71, 75), (73, 97), (74, 120), (60, 21), (68, 21), (55, 24), (73, 24)]


def person_at(dx, dy, missing=()):
    return [None if i in missing else (x + dx, y + dy) for i, (x, y) in enumerate(SKELETON)]


def synthetic_maps(people, h=150, w=220):
    """Gaussian heat blobs at every part, unit PAF vectors (2 px either side) along every pair both ends of which
    exist; the shape of what the body network outputs for clearly separated people."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    heat = np.zeros((h, w, 19))
    paf = np.zeros((h, w, 38))
    for person in people:
        for k, p in enumerate(person):
            if p is not None:
                heat[:, :, k] = np.maximum(heat[:, :, k], np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / 8.0))
        for (a, b), (cx, cy) in zip(body.PAIRS, body.PAF_CHANNELS):
            pa, pb = person[a], person[b]
            if pa is None or pb is None:
                continue
            v = np.subtract(pb, pa, dtype=float)
            length = np.hypot(*v)
            u = v / length
            t = ((xx - pa[0]) * u[0] + (yy - pa[1]) * u[1])
            dist = np.abs((xx - pa[0]) * u[1] - (yy - pa[1]) * u[0])
            near = (t >= 0) & (t <= length) & (dist <= 2)
            paf[near, cx], paf[near, cy] = u[0], u[1]
    return heat, paf


def detect_people(heat, paf):
    peaks = body.find_peaks(heat)
    return body.skeletons_to_points(peaks, body.group(peaks, body.connect(peaks, paf, heat.shape[0])))


def as_int(points):
    return [None if p is None else (int(p[0]), int(p[1])) for p in points]


def test_two_people_become_two_skeletons_with_the_right_joints():
    first, second = person_at(-30, 10), person_at(70, 20)
    found = detect_people(*synthetic_maps([first, second]))
    assert len(found) == 2
    found.sort(key=lambda pts: pts[1][0])
    assert as_int(found[0]) == first and as_int(found[1]) == second


def test_missing_parts_stay_absent_and_fragments_are_dropped():
    first = person_at(-30, 10, missing={5, 6, 7})          # no left arm
    fragment = [None] * 18
    fragment[8], fragment[9], fragment[10] = (170, 60), (172, 85), (174, 110)   # a lone leg: 3 parts
    found = detect_people(*synthetic_maps([first, fragment]))
    assert len(found) == 1
    assert as_int(found[0]) == first


def test_groups_without_a_neck_are_joined_through_the_shoulder_ear_pairs():
    """No neck: arms, legs and head start as separate groups; the shoulder–ear pairs merge the arms into the head,
    and the legs (three parts each, nothing joining them) are dropped."""
    found = detect_people(*synthetic_maps([person_at(0, 0, missing={1})]))
    assert len(found) == 1
    expected = person_at(0, 0, missing={1, 8, 9, 10, 11, 12, 13})
    assert as_int(found[0]) == expected


def test_without_affinity_fields_nobody_is_assembled():
    heat, paf = synthetic_maps([person_at(-30, 10), person_at(70, 20)])
    peaks = body.find_peaks(heat)
    assert [len(p) for p in peaks] == [2] * 18
    assert [p.id for part in peaks for p in part] == list(range(36))
    assert peaks[0][0].score == pytest.approx(1.0)
    assert detect_people(heat, np.zeros_like(paf)) == []


def test_crossed_limbs_between_people_are_not_connected():
    """Parts of two people with the PAFs of only one: the other's parts are not attached to the first."""
    first, second = person_at(-30, 10), person_at(70, 20)
    heat, _ = synthetic_maps([first, second])
    _, paf_first = synthetic_maps([first])
    found = detect_people(heat, paf_first)
    assert [as_int(p) for p in found] == [first]


def test_body_network_maps_come_back_at_the_image_size():
    image = np.zeros((100, 76, 3), np.uint8)
    heat, paf = body.network_maps(BodyPoseNet().eval(), image, CPU)
    assert heat.shape == (100, 76, 19) and paf.shape == (100, 76, 38)


# --- hands and faces ---------------------------------------------------------------------------------------------

def test_hand_boxes_follow_the_forearm_and_stay_in_the_image():
    pts = [None] * 18
    pts[5], pts[6], pts[7] = (100, 100), (100, 160), (100, 220)      # left arm pointing down
    assert hand_face.hand_boxes(pts, 400, 400) == [(55, 194, 90, True)]
    assert hand_face.hand_boxes(pts, 400, 250) == [(55, 194, 55, True)]   # cut at the bottom edge
    pts[2], pts[3], pts[4] = (50, 100), (50, 105), (50, 110)        # a tiny right arm: box under 20 px
    assert hand_face.hand_boxes(pts, 400, 400) == [(55, 194, 90, True)]


def test_face_box_from_nose_eyes_and_ears():
    pts = [None] * 18
    pts[0], pts[14], pts[15], pts[16] = (100, 100), (90, 95), (110, 95), (80, 100)
    assert hand_face.face_box(pts, 400, 400) == (70, 70, 60)
    assert hand_face.face_box(pts, 99 + 1, 400) == (70, 70, 60)
    assert hand_face.face_box(pts, 99, 400) == (70, 70, 29)          # the reference's edge rule
    pts[14] = pts[15] = pts[16] = None
    assert hand_face.face_box(pts, 400, 400) is None                 # a nose alone places no face


def wired(net, points: int):
    """Every convolution passes channel 0 through (centre tap 1) and the map layers copy it to every output, so each
    output map is the input's first (blue) channel, max-pooled ×8: a bright blue spot becomes every keypoint."""
    with torch.no_grad():
        for conv in net.children():
            conv.weight.zero_()
            conv.bias.zero_()
            k = conv.kernel_size[0] // 2
            if conv.out_channels == points:
                conv.weight[:, 0, k, k] = 1.0
            else:
                conv.weight[0, 0, k, k] = 1.0
        net.conv1_1.bias[0] = 0.5           # x/256 − 0.5 → ≥ 0, so the ReLUs keep the spot
    return net.eval()


def spot_image(h, w, centre, radius=5):
    import cv2
    image = np.zeros((h, w, 3), np.uint8)
    cv2.circle(image, centre, radius, (255, 0, 0), thickness=-1)     # BGR: blue
    return image


@pytest.fixture(scope="module")
def wired_nets():
    return {"hand": wired(HandPoseNet(), 22), "face": wired(FacePoseNet(), 71)}


def test_hand_points_found_at_the_spot_in_crop_pixels(wired_nets):
    crop = spot_image(96, 96, (30, 60))
    points = hand_face.estimate_hand(wired_nets["hand"], crop, CPU, scales=(64, 96))
    assert len(points) == 21 and all(p is not None for p in points)
    assert all(abs(x - 30) <= 10 and abs(y - 60) <= 10 for x, y in points)
    blank = hand_face.estimate_hand(wired_nets["hand"], np.zeros((40, 40, 3), np.uint8), CPU, scales=(32,))
    assert blank == [None] * 21


def test_face_points_found_at_the_spot(wired_nets):
    crop = spot_image(80, 60, (40, 20))
    points = hand_face.estimate_face(wired_nets["face"], crop, CPU, size=64)
    assert len(points) == 70
    assert all(abs(x - 40) <= 10 and abs(y - 20) <= 10 for x, y in points)


def test_hands_and_face_land_in_image_coordinates(wired_nets, monkeypatch):
    monkeypatch.setattr(hand_face, "HAND_SCALES", (64, 96))
    monkeypatch.setattr(hand_face, "FACE_INPUT", 64)
    pts = [None] * 18
    pts[5], pts[6], pts[7] = (100, 100), (100, 160), (100, 220)      # hand box (55, 194, 90)
    pts[0], pts[14], pts[15] = (250, 100), (240, 95), (260, 95)      # face box (220, 70, 60)
    image = spot_image(300, 320, (100, 240))
    import cv2
    cv2.circle(image, (250, 100), 5, (255, 0, 0), thickness=-1)
    person = Person(body=pts)
    detect.add_hands_and_face(person, image, wired_nets, CPU)
    assert person.right_hand is None
    hand_hits = [p for p in person.left_hand if abs(p[0] - 100) <= 10 and abs(p[1] - 240) <= 10]
    assert len(hand_hits) == 21
    assert all(abs(x - 250) <= 10 and abs(y - 100) <= 10 for x, y in person.face)


# --- the preprocessor ------------------------------------------------------------------------------------------

def test_run_gives_the_map_at_processor_resolution_and_the_pose_json(weights_dir):
    store = AnnotatorStore([weights_dir], weights_dir, allow_download=False)
    rng = np.random.default_rng(0)
    image = (rng.random((150, 100, 3)) * 255).astype(np.uint8)
    result = detect.run(image, 128, store, body=True, hand=True, face=True, device=CPU)
    assert result.image.shape == (192, 128, 3) and result.image.dtype == np.uint8
    pose = result.pose
    assert (pose["canvas_width"], pose["canvas_height"]) == (128, 192)   # padded to multiples of 64
    for person in pose["people"]:
        assert len(person["pose_keypoints_2d"]) == 54
        assert all(abs(v) <= 1 for v in person["pose_keypoints_2d"])
    parse_document(pose)                                                  # the JSON reads back
    # drawing the returned JSON gives the returned map (the JSON is what the map shows)
    from modules.controlnet.openpose.draw import draw
    assert np.array_equal(draw(parse_document(pose))[:192, :128], result.image)


def test_run_names_a_missing_weight_file(tmp_path):
    (tmp_path / "openpose").mkdir()
    save(BodyPoseNet(), tmp_path / "openpose" / "body_pose_model.pth")
    store = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    with pytest.raises(AnnotatorMissing, match="facenet.pth"):
        detect.run(np.zeros((64, 64, 3), np.uint8), 64, store, face=True, device=CPU)


def test_networks_are_cached_until_the_file_changes(weights_dir):
    path = weights_dir / "openpose" / detect.HAND_FILE.filename
    first = detect.cached_network("hand", path)
    assert detect.cached_network("hand", path) is first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert detect.cached_network("hand", path) is not first


def test_annotator_files_are_the_extensions():
    assert [(f.filename, f.subdir) for f in detect.ANNOTATOR_FILES] == [
        ("body_pose_model.pth", "openpose"), ("hand_pose_model.pth", "openpose"), ("facenet.pth", "openpose")]
    assert all(f.url == f"https://huggingface.co/lllyasviel/Annotators/resolve/main/{f.filename}"
               for f in detect.ANNOTATOR_FILES)
