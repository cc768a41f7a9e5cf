"""Face restoration: GFPGAN and CodeFormer files in their published layouts detected by spandrel, our RetinaFace
(loaded strictly from facexlib's key layout, its anchors, decoding and NMS checked against boxes and landmarks
computed by hand), alignment onto the FFHQ template and paste-back, a whole restore on a synthetic face, the
Extras step (visibility 0 changes nothing), A1111's file choice in the GFPGAN folder, downloads from a local HTTP
server and the offline error.

The GFPGAN file is real-size (its size is fixed by the 512×512 input) and made once per module: about 3 s here.
One GFPGAN pass on a 512×512 crop takes ~9 s on this 2-core CPU; CodeFormer's (~50 s) is the one slow test."""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules import face_restoration
from modules.engine.params import ParamError
from modules.face_restoration import align, restorers, retinaface
from modules.face_restoration import weights as face_weights
from modules.interrogate.weights import WeightFile, WeightPlace
from tests.support import face_factory
from tests.support.download_server import payload, server  # noqa: F401 (fixtures)
from tests.support.server import free_port

MADE: dict[str, float] = {}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("face-models")
    t0 = time.perf_counter()
    face_factory.write_gfpgan(root / "GFPGAN" / "GFPGANv1.4.pth")
    MADE["gfpgan_s"] = time.perf_counter() - t0
    face_factory.write_retinaface(root / "GFPGAN" / "detection_Resnet50_Final.pth")
    t0 = time.perf_counter()
    face_factory.write_codeformer(root / "Codeformer" / "codeformer-v0.1.0.pth")
    MADE["codeformer_s"] = time.perf_counter() - t0
    return root


@pytest.fixture(scope="module")
def loaded(models):
    """The runtime-shaped restorers over those folders, downloads off (a missing file is an error, not a fetch)."""
    return restorers.for_paths(models, allow_download=False)


def face_picture(size=(300, 240)) -> Image.Image:
    """Something face-like: a skin-coloured oval with eyes, nose and mouth on a gray background."""
    image = Image.new("RGB", size, (90, 95, 100))
    d = ImageDraw.Draw(image)
    w, h = size
    d.ellipse((w * 0.3, h * 0.15, w * 0.7, h * 0.85), fill=(225, 185, 160))
    for x in (0.42, 0.58):
        d.ellipse((w * x - 8, h * 0.4 - 5, w * x + 8, h * 0.4 + 5), fill=(40, 30, 30))
    d.polygon([(w * 0.5, h * 0.45), (w * 0.47, h * 0.58), (w * 0.53, h * 0.58)], fill=(200, 150, 130))
    d.line((w * 0.43, h * 0.7, w * 0.57, h * 0.7), fill=(150, 60, 60), width=4)
    return image


# --- the detector ------------------------------------------------------------------------------------------------
def test_retinaface_builds_the_published_layout():
    """Our network under facexlib's names: the key list written independently (tests/support/face_factory.py) with
    the published widths has exactly our keys and shapes, 27.35 M parameters (the 104 MB file)."""
    published = face_factory.retinaface_state_dict(stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3),
                                                   out=256)
    ours = retinaface.RetinaFaceNet().state_dict()
    assert set(published) == set(ours)
    assert all(published[k].shape == ours[k].shape for k in ours)
    assert round(sum(v.numel() for v in published.values()) / 1e6, 2) == 27.35


def test_tiny_detector_loads_strictly_and_runs(models, tmp_path):
    detector = restorers.load_detector(models / "GFPGAN" / "detection_Resnet50_Final.pth", "cpu")
    assert detector.net.body.layer2[1].conv2.weight.shape == (8, 8, 3, 3)   # widths read from the file
    loc, conf, landms = detector.net(torch.zeros(1, 3, 64, 96))
    anchors = len(retinaface.prior_boxes(64, 96))
    assert loc.shape == (1, anchors, 4) and conf.shape == (1, anchors, 2) and landms.shape == (1, anchors, 10)
    assert torch.allclose(conf.sum(-1), torch.ones(1, anchors))
    sd = face_factory.retinaface_state_dict()
    del sd["ssh2.conv7x7_3.1.running_var"]
    with pytest.raises(RuntimeError, match="running_var"):
        retinaface.RetinaFaceNet.from_state_dict(sd)
    with pytest.raises(ValueError, match="not a RetinaFace"):
        retinaface.RetinaFaceNet.from_state_dict({"weight": torch.zeros(1)})


def test_prior_boxes_follow_facexlib_order():
    priors = retinaface.prior_boxes(640, 640)
    assert len(priors) == (80 * 80 + 40 * 40 + 20 * 20) * 2
    # first cell of the first level: both sizes (16 and 32 px) at (4, 4); then the next column
    assert torch.allclose(priors[0] * 640, torch.tensor([4.0, 4.0, 16.0, 16.0]))
    assert torch.allclose(priors[1] * 640, torch.tensor([4.0, 4.0, 32.0, 32.0]))
    assert torch.allclose(priors[2] * 640, torch.tensor([12.0, 4.0, 16.0, 16.0]))
    # the last anchor: the 512 px one in the bottom-right cell of the stride-32 level
    assert torch.allclose(priors[-1] * 640, torch.tensor([624.0, 624.0, 512.0, 512.0]))
    non_square = retinaface.prior_boxes(100, 130)   # sizes relative to each side
    assert len(non_square) == (13 * 17 + 7 * 9 + 4 * 5) * 2
    assert torch.allclose(non_square[0], torch.tensor([4 / 130, 4 / 100, 16 / 130, 16 / 100]))


def encode(box, points, prior):
    """The inverse of the SSD decoding, by hand: what the network would output for this box and these points."""
    pcx, pcy, pw, ph = prior
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    loc = [(cx - pcx) / (0.1 * pw), (cy - pcy) / (0.1 * ph), math.log(w / pw) / 0.2, math.log(h / ph) / 0.2]
    landms = []
    for x, y in points:
        landms += [(x - pcx) / (0.1 * pw), (y - pcy) / (0.1 * ph)]
    return loc, landms


def test_decoding_and_threshold_give_back_known_faces():
    height, width = 200, 320
    priors = retinaface.prior_boxes(height, width)
    n = len(priors)
    loc, landms = torch.zeros(n, 4), torch.zeros(n, 10)
    conf = torch.tensor([[0.9, 0.1]]).repeat(n, 1)
    faces = {   # anchor index → (box, five points) in pixels
        5: ((10.0, 20.0, 60.0, 90.0), [(25, 45), (45, 44), (35, 58), (27, 72), (44, 73)]),
        n - 3: ((150.0, 40.0, 300.0, 190.0), [(190, 90), (260, 92), (225, 125), (195, 160), (255, 158)]),
    }
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    for index, (box, points) in faces.items():
        rel_box = [v / s for v, s in zip(box, (width, height, width, height))]
        rel_points = [(x / width, y / height) for x, y in points]
        l_, m_ = encode(rel_box, rel_points, priors[index].tolist())
        loc[index], landms[index] = torch.tensor(l_), torch.tensor(m_)
        conf[index] = torch.tensor([0.01, 0.99])
    conf[7] = torch.tensor([0.04, 0.96])   # below A1111's 0.97: dropped
    found = retinaface.faces_from_outputs(loc, conf, landms, height, width)
    assert len(found) == 2
    for face, (box, points) in zip(found, [faces[5], faces[n - 3]]):
        assert np.allclose(face.box, box, atol=1e-3)
        assert np.allclose(face.landmarks, np.array(points, dtype=np.float32), atol=1e-3)
        assert face.score == pytest.approx(0.99)
    assert scale.shape == (4,)
    with pytest.raises(ValueError, match="anchors"):
        retinaface.faces_from_outputs(loc[:-1], conf[:-1], landms[:-1], height, width)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5], [21, 21, 29, 29.0]])
    scores = torch.tensor([0.90, 0.95, 0.85, 0.99, 0.5])
    # IoU(0,1) = 81/119 = 0.68: 0 goes under 1; IoU(3,1) = 36/114 < 0.4 and IoU(3,0) = 0.5 (0 is gone anyway);
    # IoU(4,2) = 64/100: 4 goes under 2
    assert retinaface.nms(boxes, scores, 0.4).tolist() == [3, 1, 2]
    assert retinaface.nms(boxes, scores, 0.7).tolist() == [3, 1, 0, 2, 4]
    assert retinaface.nms(boxes[:0], scores[:0], 0.4).tolist() == []


# --- alignment ---------------------------------------------------------------------------------------------------
def similarity(scale, degrees, tx, ty):
    a = math.radians(degrees)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def test_alignment_puts_landmarks_on_the_ffhq_template():
    # a face 0.3 times the template's size, turned 12°, somewhere in a 400×300 image
    to_image = similarity(0.3, 12, -20, 60)   # the crop's corner (0, 0) falls left of the image
    points = np.hstack([align.FFHQ_TEMPLATE_512, np.ones((5, 1))]) @ to_image.T
    matrix = align.face_transform(points)
    mapped = np.hstack([points, np.ones((5, 1))]) @ matrix.T
    assert np.allclose(mapped, align.FFHQ_TEMPLATE_512, atol=0.05)
    image = np.full((300, 400, 3), 50, np.uint8)
    for x, y in points:
        cv2.circle(image, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    crop = align.crop_face(image, matrix)
    assert crop.shape == (512, 512, 3)
    for x, y in align.FFHQ_TEMPLATE_512:   # each dot lands where the template has its landmark
        assert crop[int(y), int(x)].min() > 200
    assert tuple(crop[0, 0]) == align.BORDER_GRAY   # outside the image: facexlib's gray


def test_paste_back_changes_only_the_face():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    matrix = align.face_transform(np.hstack([align.FFHQ_TEMPLATE_512, np.ones((5, 1))]) @
                                  similarity(0.3, -8, 150, 70).T)
    white = np.full((512, 512, 3), 255, np.uint8)
    out = align.paste_face(image, white, matrix)
    inverse = cv2.invertAffineTransform(matrix)
    centre = inverse @ np.array([256, 256, 1.0])
    assert out[int(centre[1]), int(centre[0])].tolist() == [255, 255, 255]   # the face's middle: all new
    corners = inverse @ np.array([[0, 0, 1.0], [511, 0, 1], [0, 511, 1], [511, 511, 1]]).T
    left, top = np.floor(corners.min(axis=1)).astype(int)
    right, bottom = np.ceil(corners.max(axis=1)).astype(int)
    outside = np.ones(image.shape[:2], bool)
    outside[max(top, 0):bottom + 1, max(left, 0):right + 1] = False
    assert np.array_equal(out[outside], image[outside])                 # beyond the face's square: untouched
    edge = out[int(centre[1]), max(left, 0) + 1].astype(int)            # the rim is feathered, not pasted hard
    assert not np.array_equal(edge, [255, 255, 255])
    same = align.paste_face(image, align.crop_face(image, matrix), matrix)   # the crop pasted back: near-identity
    assert np.abs(same.astype(int) - image.astype(int)).mean() < 12


# --- spandrel, the restorers --------------------------------------------------------------------------------------
def test_spandrel_detects_both_architectures(models):
    gfpgan = restorers.load_spandrel(models / "GFPGAN" / "GFPGANv1.4.pth", "GFPGAN", "cpu")
    assert type(gfpgan).__name__ == "GFPGANv1Clean"
    codeformer = restorers.load_spandrel(models / "Codeformer" / "codeformer-v0.1.0.pth", "CodeFormer", "cpu")
    assert type(codeformer).__name__ == "CodeFormer" and codeformer.n_layers == 1 and codeformer.dim_embd == 64
    with pytest.raises(ValueError, match="is a GFPGAN model, expected CodeFormer"):
        restorers.load_spandrel(models / "GFPGAN" / "GFPGANv1.4.pth", "CodeFormer", "cpu")
    print(f"\nmade GFPGAN file in {MADE['gfpgan_s']:.1f} s, CodeFormer in {MADE['codeformer_s']:.1f} s")


def test_gfpgan_restores_a_face_where_it_is(loaded):
    """A face at known landmarks (the picture's eyes, nose tip and mouth corners): aligned, one GFPGAN pass,
    pasted back — the face changes, the picture's corners do not."""
    gfpgan = loaded.find("GFPGAN")
    gfpgan._load()
    w, h = 300, 240
    picture = np.asarray(face_picture((w, h)))
    points = np.array([[0.42 * w, 0.4 * h], [0.58 * w, 0.4 * h], [0.5 * w, 0.52 * h], [0.43 * w, 0.7 * h],
                       [0.57 * w, 0.7 * h]], dtype=np.float32)
    face = retinaface.Face(np.array([0.3 * w, 0.15 * h, 0.7 * w, 0.85 * h]), 0.99, points)
    t0 = time.perf_counter()
    out = gfpgan.restore_found(picture, [face])
    print(f"\nGFPGAN pass on 512x512 with alignment and paste-back: {time.perf_counter() - t0:.1f} s")
    assert out.shape == picture.shape and out.dtype == np.uint8
    assert not np.array_equal(out[int(0.5 * h), int(0.5 * w)], picture[int(0.5 * h), int(0.5 * w)])
    assert np.array_equal(out[:10, :10], picture[:10, :10]) and np.array_equal(out[-10:, -10:], picture[-10:, -10:])


@pytest.mark.slow
def test_codeformer_restores_an_aligned_crop_with_its_weight(loaded):
    codeformer = loaded.find("CodeFormer")
    codeformer._load()
    crop = np.asarray(face_picture((512, 512)))
    seen = {}
    original = codeformer.net.forward

    def forward(x, weight=0.5, **kwargs):   # the real forward; records the fidelity it was given
        seen["weight"] = weight
        return original(x, weight=weight, **kwargs)
    codeformer.net.forward = forward
    try:
        t0 = time.perf_counter()
        out = codeformer.restore_aligned(crop, w=0.8)
        print(f"\nCodeFormer pass on 512x512: {time.perf_counter() - t0:.1f} s")
    finally:
        del codeformer.net.forward
    assert seen["weight"] == 0.8
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8 and out.std() > 0


def test_restore_without_a_detected_face_returns_the_image(loaded):
    """The whole path on a face-like picture: both files load, the detector runs on the 640-scaled copy; the
    detector file answers "background" everywhere (face_factory: no_faces), so the picture comes back as it was."""
    picture = np.asarray(face_picture())
    out = loaded.restore(picture, "GFPGAN")
    gfpgan = loaded.find("GFPGAN")
    assert gfpgan.net is not None and gfpgan.detector is not None
    assert out.shape == picture.shape and np.array_equal(out, picture)
    assert gfpgan.detect(picture) == []


def test_unknown_restorer_is_named(loaded):
    with pytest.raises(ParamError, match="face_restoration_model.*'GPEN'.*CodeFormer.*GFPGAN"):
        loaded.find("GPEN")
    assert loaded.names() == ["CodeFormer", "GFPGAN"]
    assert loaded.describe()[1]["name"] == "GFPGAN" and loaded.describe()[1]["cmd_dir"].endswith("GFPGAN")


def test_extras_visibility_zero_changes_nothing_and_loads_nothing(tmp_path):
    empty = restorers.for_paths(tmp_path, allow_download=False)   # no files at all: nothing may be needed
    picture = face_picture()
    out, info = face_restoration.postprocess(picture, empty, 0, 0, 0.5)
    assert out is picture and info == {}
    with pytest.raises(ParamError, match="codeformer_visibility"):
        face_restoration.postprocess(picture, empty, 0, 1.5, 0.5)
    with pytest.raises(face_weights.WeightsMissing, match="GFPGANv1.4.pth"):
        face_restoration.postprocess(picture, empty, 0.5, 0, 0.5)


def test_extras_blend_and_infotext(loaded):
    picture = face_picture()
    out, info = face_restoration.postprocess(picture, loaded, 0.5, 0.25, 0.7)
    assert info == {"GFPGAN visibility": 0.5, "CodeFormer visibility": 0.25, "CodeFormer weight": 0.7}
    assert out.size == picture.size   # the detector finds no face: a blend of identical images
    assert np.array_equal(np.asarray(out), np.asarray(picture))


# --- files -------------------------------------------------------------------------------------------------------
def test_gfpgan_folder_choice_follows_a1111(tmp_path):
    folder = tmp_path / "GFPGAN"
    folder.mkdir()
    (folder / "detection_Resnet50_Final.pth").write_bytes(b"x")
    places = face_weights.default_places(tmp_path)
    assert places["GFPGAN"].find() is None          # the detector's .pth is not a GFPGAN model
    assert places["detector"].find() == folder / "detection_Resnet50_Final.pth"
    (folder / "GFPGANv1.3.pth").write_bytes(b"x")
    assert places["GFPGAN"].find() == folder / "GFPGANv1.3.pth"
    (folder / "GFPGANv1.4.pth").write_bytes(b"x")
    assert places["GFPGAN"].find() == folder / "GFPGANv1.4.pth"   # the download name first
    other = tmp_path / "elsewhere"
    custom = face_weights.default_places(tmp_path, gfpgan_models_path=str(other),
                                         codeformer_models_path=str(tmp_path / "cf"))
    assert custom["GFPGAN"].download_dir == other and custom["CodeFormer"].download_dir == tmp_path / "cf"
    assert custom["GFPGAN"].find() == folder / "GFPGANv1.4.pth"    # models/GFPGAN is still looked in


def test_a1111_urls_and_names():
    assert face_weights.GFPGAN.url == "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
    assert face_weights.CODEFORMER.url.endswith("/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth")
    assert face_weights.CODEFORMER.filename == "codeformer-v0.1.0.pth"
    assert face_weights.DETECTOR.url.endswith("/xinntao/facexlib/releases/download/v0.1.0/"
                                              "detection_Resnet50_Final.pth")


def test_downloaded_on_first_use(tmp_path, server, payload):  # noqa: F811
    place = WeightPlace(WeightFile("GFPGAN model", "GFPGANv1.4.pth", server.url("/file.bin"), (".pth",)),
                        tmp_path / "GFPGAN")
    path = face_weights.ensure(place)
    assert path == tmp_path / "GFPGAN" / "GFPGANv1.4.pth" and path.read_bytes() == payload
    assert face_weights.ensure(place) == path and len(server.requests) == 1   # found, not fetched again


def test_offline_error_names_file_url_and_folder(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/GFPGANv1.4.pth"   # nothing listens there
    place = WeightPlace(WeightFile("GFPGAN model", "GFPGANv1.4.pth", url, (".pth",)), tmp_path / "GFPGAN")
    with pytest.raises(face_weights.WeightsMissing) as caught:
        face_weights.ensure(place)
    message = str(caught.value)
    assert "GFPGANv1.4.pth" in message and url in message and str(tmp_path / "GFPGAN") in message
    assert "download failed" in message
    assert not (tmp_path / "GFPGAN" / "GFPGANv1.4.pth").exists()
    with pytest.raises(face_weights.WeightsMissing, match="downloads are turned off"):
        face_weights.ensure(place, allow_download=False)


# --- A1111's names ------------------------------------------------------------------------------------------------
def test_a1111_module_surface(tmp_path, models, monkeypatch):
    """shared.face_restorers is the runtime's list (an extension may append to it, and Settings offers what it
    appends); face_restoration.restore_faces(np_image) uses the face_restoration_model setting."""
    from modules import cmd_args, shared
    from modules.runtime import Runtime
    (tmp_path / "models").mkdir()
    for name in ("GFPGAN", "Codeformer"):
        (tmp_path / "models" / name).symlink_to(models / name, target_is_directory=True)
    rt = Runtime(cmd_args.parse(["--data-dir", str(tmp_path), "--no-half"], env={}))
    for name in ("_runtime", "_model_view", "_upscalers", "config_filename", "device", "data_path", "models_path"):
        monkeypatch.setattr(shared, name, getattr(shared, name))
    monkeypatch.setattr(face_restoration, "_current", None)
    shared.bind(rt)
    assert [r.name() for r in shared.face_restorers] == ["CodeFormer", "GFPGAN"]
    assert shared.face_restorers[1].cmd_dir == str(tmp_path / "models" / "GFPGAN")

    class Mirror(face_restoration.FaceRestoration):   # what an extension's restorer looks like
        def name(self):
            return "Mirror"

        def restore(self, np_image):
            return np_image[:, ::-1]
    shared.face_restorers.append(Mirror())
    rt.options.set("face_restoration_model", "Mirror")
    picture = np.asarray(face_picture())
    assert np.array_equal(face_restoration.restore_faces(picture), picture[:, ::-1])
    rt.options.set("face_restoration_model", "GFPGAN")
    assert np.array_equal(face_restoration.restore_faces(picture), picture)   # no face found: unchanged

