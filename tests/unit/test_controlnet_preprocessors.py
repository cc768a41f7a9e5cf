"""ControlNet preprocessors on real drawn images (modules.controlnet.preprocessors), the registry as
/controlnet/module_list shows it, and control types (modules.controlnet.control_types)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from modules.controlnet import control_types as ct
from modules.controlnet import preprocessors as P
from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.controlnet.preprocessors import PreprocessorUnavailable

H, W = 128, 192
TOP, LEFT, BOTTOM, RIGHT = 32, 48, 95, 143   # the rectangle, inclusive


def rectangle() -> np.ndarray:
    """A white filled rectangle on black."""
    img = np.zeros((H, W, 3), np.uint8)
    cv2.rectangle(img, (LEFT, TOP), (RIGHT, BOTTOM), (255, 255, 255), thickness=-1)
    return img


def outline() -> np.ndarray:
    """A black 2-px rectangle outline on white (line art)."""
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.rectangle(img, (LEFT, TOP), (RIGHT, BOTTOM), (0, 0, 0), thickness=2)
    return img


def gradient() -> np.ndarray:
    """Grey ramp 0..255 left to right."""
    row = np.linspace(0, 255, W).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], H, axis=0), 3, axis=2)


def near_outline(mask: np.ndarray, margin: int) -> bool:
    """Every set pixel of `mask` lies within `margin` px of the rectangle's border."""
    ys, xs = np.nonzero(mask)
    d_out = np.maximum.reduce([TOP - ys, ys - BOTTOM, LEFT - xs, xs - RIGHT])            # >0 outside
    d_in = np.minimum.reduce([ys - TOP, BOTTOM - ys, xs - LEFT, RIGHT - xs])            # >=0 inside
    return bool(np.all(np.where(d_out > 0, d_out, d_in) <= margin))


def run(name: str, image: np.ndarray, res: int = H, a: float = -1, b: float = -1, seed: int = 0):
    pre = P.get(name)
    r, a2, b2 = pre.clamp(res, a, b)
    return pre.run(image, r, a2, b2, seed=seed)


# --- the §3.2 modules -------------------------------------------------------------------------------------------
def test_canny_finds_the_rectangle_border_and_nothing_inside():
    out = run("canny", rectangle()).image
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    edges = out[:, :, 0] > 0
    assert near_outline(edges, 1)
    assert not edges[TOP + 5:BOTTOM - 4, LEFT + 5:RIGHT - 4].any()
    for x in range(LEFT + 2, RIGHT - 1):                     # every side is traced
        assert edges[TOP - 1:TOP + 2, x].any() and edges[BOTTOM - 1:BOTTOM + 2, x].any()
    for y in range(TOP + 2, BOTTOM - 1):
        assert edges[y, LEFT - 1:LEFT + 2].any() and edges[y, RIGHT - 1:RIGHT + 2].any()
    # the thresholds decide: a faint rectangle (grey 20) is below the defaults but found with low thresholds
    faint = rectangle() // 255 * 20
    assert run("canny", faint).image.max() == 0
    assert near_outline(run("canny", faint, a=10, b=30).image[:, :, 0] > 0, 1)
    assert run("canny", faint, a=10, b=30).image.max() == 255


def test_canny_works_at_processor_resolution_and_crops_the_padding():
    out = run("canny", rectangle(), res=64).image
    assert out.shape == (64, 96, 3)


def test_invert_and_none():
    img = gradient()
    assert np.array_equal(run("invert", img).image, 255 - img)
    assert np.array_equal(run("none", img).image, img)
    grey = img[:, :, 0]
    assert run("none", grey).image.shape == (H, W, 3)


def test_threshold_splits_at_a():
    out = run("threshold", gradient(), a=127).image
    ramp = gradient()[0, :, 0]
    assert np.array_equal(out[0, :, 0] == 255, ramp > 127)
    assert set(np.unique(out)) == {0, 255}


@pytest.mark.parametrize("name,image", [("scribble_xdog", outline()),
                                        ("lineart_standard (from white bg & black line)", outline())])
def test_line_extractors_draw_the_outline(name, image):
    out = run(name, image).image
    lines = out[:, :, 0] > 64
    assert lines.sum() > 100
    assert near_outline(lines, 4)
    assert out[H // 2 - 8:H // 2 + 8, W // 2 - 8:W // 2 + 8].max() == 0   # centre of the shape: nothing
    assert out[:8, :8].max() == 0                                        # far outside: nothing


def test_blur_smooths_the_step():
    sharp = rectangle()
    out = run("blur_gaussian", sharp, a=4.0).image
    row = out[H // 2, :, 0].astype(int)
    assert 20 < row[LEFT] < 235                          # the step got intermediate values
    assert np.abs(np.diff(row)).max() < 60               # and no jump is left
    assert row[W // 2] == 255 and row[0] == 0


def test_tile_resample_shrinks_by_the_rate():
    img = gradient()
    assert run("tile_resample", img, a=1.0).image.shape == (H, W, 3)
    assert run("tile_resample", img, a=2.0).image.shape == (H // 2, W // 2, 3)
    assert run("tile_resample", img, a=3.0).image.shape == (int(H / 3), int(W / 3), 3)


def test_color_grid_gives_64_pixel_blocks():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = run("t2ia_color_grid", img, res=128).image
    assert out.shape == (128, 192, 3)
    for y in range(0, 128, 64):
        for x in range(0, 192, 64):
            block = out[y:y + 64, x:x + 64].reshape(-1, 3)
            assert len(np.unique(block, axis=0)) == 1
    assert len(np.unique(out.reshape(-1, 3), axis=0)) > 1


def test_shuffle_is_deterministic_per_seed_and_differs_between_seeds():
    rng = np.random.default_rng(1)
    img = cv2.resize(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
    one = run("shuffle", img, seed=1).image
    assert np.array_equal(one, run("shuffle", img, seed=1).image)
    assert not np.array_equal(one, run("shuffle", img, seed=2).image)
    assert not np.array_equal(one, img)
    # hidden resolution: any processor_res runs at 512 (short side)
    assert one.shape == (512, 768, 3)


def test_recolor_gives_grey_and_gamma_darkens():
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (200, 40, 40)
    img[:, W // 2:] = (40, 160, 220)
    for name in ("recolor_luminance", "recolor_intensity"):
        out = run(name, img, a=1.0).image
        assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])
        darker = run(name, img, a=2.0).image
        assert (darker[:, :, 0].astype(int) <= out[:, :, 0]).all() and (darker < out).any()
    assert run("recolor_intensity", img, a=1.0).image[0, 0, 0] == 200   # V = the largest channel


def test_reference_and_colorfix_pass_the_image_through():
    img = gradient()
    for name in ("reference_only", "reference_adain", "reference_adain+attn", "tile_colorfix", "tile_colorfix+sharp"):
        assert np.array_equal(run(name, img).image, img)


def test_inpaint_keeps_rgba_and_shows_the_mask_half_transparent():
    rgba = np.dstack([gradient(), np.zeros((H, W), np.uint8)])
    rgba[40:80, 50:100, 3] = 255
    for name in ("inpaint_global_harmonious", "inpaint_only"):
        d = run(name, rgba)
        assert d.image.shape == (H, W, 4) and np.array_equal(d.image, rgba)
        assert d.display[45, 60, 3] == 128 and d.display[0, 0, 3] == 255
    no_mask = run("inpaint_only", gradient()).image
    assert no_mask.shape == (H, W, 4) and no_mask[:, :, 3].max() == 0


# --- clamp (§0.4) -----------------------------------------------------------------------------------------------
def test_clamp_replaces_out_of_range_values_by_defaults():
    canny = P.get("canny")
    assert canny.clamp(-1, -1, -1) == (512, 100, 200)
    assert canny.clamp(300, 50, 250) == (300, 50, 250)
    assert canny.clamp(4096, 0, 256) == (512, 100, 200)
    openpose = P.get("openpose")
    assert openpose.clamp(512, 64, 0.25) == (512, 0.5, 0.25)      # hidden sliders: [0, 1], default 0.5
    assert P.get("shuffle").clamp(1024, -1, -1)[0] == 512
    anyline = P.get("softedge_anyline")
    assert anyline.clamp(-1, -1, -1) == (1280, 2, 0.5)
    assert isinstance(canny.clamp(-1, -1, -1)[1], int)            # defaults keep their int form (infotext)


def test_bad_image_is_refused_with_the_module_named():
    with pytest.raises(ValueError, match="canny"):
        P.get("canny").run(np.zeros((8, 8, 3), np.float32), 64, 100, 200)


# --- registry, module_list --------------------------------------------------------------------------------------
def test_get_by_name_label_and_case():
    assert P.get("depth").label == "depth_midas"
    assert P.get("depth_midas").name == "depth"
    assert P.get("SoftEdge_PIDINET").name == "pidinet"
    assert P.get("inpaint_global_harmonious").name == "inpaint"
    assert P.get("fake_scribble") is None and P.get("binary") is None and P.get("") is None


def test_module_list_order_and_shape():
    body = P.module_list(False)
    names = body["module_list"]
    assert len(names) == 72 and names[0] == "none" and names[1] == "ip-adapter-auto"
    ordered = P.all_preprocessors()[1:]
    keys = [(p.priority, p.label) for p in ordered]
    assert keys == sorted(keys, reverse=True)
    assert set(body["module_detail"]) == set(names)
    assert body["module_detail"]["canny"] == {"model_free": False, "sliders": [
        {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}]}
    assert body["module_detail"]["invert"]["sliders"] == []
    assert body["module_detail"]["reference_only"]["model_free"] is True
    assert [s["name"] for s in body["module_detail"]["depth_leres"]["sliders"]] == [
        "Resolution", "Remove Near %", "Remove Background %"]
    aliases = P.module_list(True)
    assert "depth_midas" in aliases["module_list"] and "depth" not in aliases["module_list"]
    assert aliases["module_list"].index("depth_midas") == names.index("depth")
    free = {n for n, d in aliases["module_detail"].items() if d["model_free"]}
    assert free == {"reference_only", "reference_adain", "reference_adain+attn", "revision_clipvision",
                    "revision_ignore_prompt"}


def test_every_weights_file_has_a_download_source():
    for p in P.all_preprocessors():
        for f in p.weights:
            assert f.url.startswith("https://huggingface.co/") and f.subdir and f.filename
            assert f.sha256 is None or len(f.sha256) == 64
    assert P.get("depth_leres++").weights[-1].filename == "latest_net_G.pth"
    assert {f.filename for f in P.get("openpose").weights} == {"body_pose_model.pth", "hand_pose_model.pth",
                                                               "facenet.pth"}


# --- neural modules: weights first, then an honest refusal --------------------------------------------------------
def test_neural_module_offline_names_the_missing_file(tmp_path):
    store = AnnotatorStore([tmp_path / "search"], tmp_path / "downloads", allow_download=False)
    with pytest.raises(AnnotatorMissing) as err:
        run_with(P.get("depth_midas"), store)
    assert "dpt_hybrid-midas-501f0c75.pt" in str(err.value)
    assert str(tmp_path / "downloads" / "midas") in str(err.value)
    with pytest.raises(AnnotatorMissing, match="body_pose_model.pth"):
        run_with(P.get("openpose_full"), store)


def test_neural_module_with_weights_present_says_it_is_not_built_in(tmp_path):
    (tmp_path / "normal_bae").mkdir()
    (tmp_path / "normal_bae" / "scannet.pt").write_bytes(b"weights")
    store = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    with pytest.raises(PreprocessorUnavailable, match="normal_bae.*not built"):
        run_with(P.get("normal_bae"), store)
    with pytest.raises(ValueError, match="no annotator store"):
        P.get("depth").run(rectangle(), 128, 0.5, 0.5)


def run_with(pre, store):
    return pre.run(rectangle(), 128, 0.5, 0.5, store=store)


# --- control types ------------------------------------------------------------------------------------------------
TITLES = [
    "control_sd15_canny [fef5e48e]", "control_v11p_sd15_canny [d14c016b]", "control_v11f1p_sd15_depth [cfd03158]",
    "control_v11p_sd15_openpose [cab727d4]", "control_sd15_openpose [fef5e48e]", "control_v11p_sd15_inpaint [ebff9138]",
    "control_v11p_sd15_lineart [43d4be0d]", "t2iadapter_canny_sd14v1 [80bfbf2a]", "diffusers_xl_canny_full [2b69fca4]",
    "controlnet-union-sdxl-1.0 [15e6ad5d]", "control_v11f1e_sd15_tile [a371b31b]", "control_v11e_sd15_ip2p [c4bb465c]",
    "control_v11p_sd15_seg [e1f51eb9]", "ip-adapter_sd15 [6a3f6166]", "control_v11p_sd15_softedge [a8575a2a]",
]


def test_control_types_keys_and_defaults():
    body = ct.control_types(TITLES)["control_types"]
    assert list(body) == ["All", "Canny", "Depth", "IP-Adapter", "Inpaint", "Instant-ID", "InstructP2P", "Lineart",
                          "MLSD", "NormalMap", "OpenPose", "Recolor", "Reference", "Revision", "Scribble",
                          "Segmentation", "Shuffle", "SoftEdge", "SparseCtrl", "T2I-Adapter", "Tile"]
    defaults = {k: v["default_option"] for k, v in body.items()}
    assert defaults == {
        "All": "none", "Canny": "canny", "Depth": "depth_midas", "IP-Adapter": "ip-adapter-auto",
        "Inpaint": "inpaint_only", "Instant-ID": "instant_id_face_keypoints", "InstructP2P": "none",
        "Lineart": "lineart_standard (from white bg & black line)", "MLSD": "mlsd", "NormalMap": "normal_bae",
        "OpenPose": "openpose_full", "Recolor": "recolor_luminance", "Reference": "reference_only",
        "Revision": "revision_clipvision", "Scribble": "scribble_pidinet", "Segmentation": "seg_ofade20k",
        "Shuffle": "shuffle", "SoftEdge": "softedge_pidinet", "SparseCtrl": "scribble_pidinet",
        "T2I-Adapter": "t2ia_style_clipvision", "Tile": "tile_resample"}
    canny = body["Canny"]
    assert canny["module_list"] == ["none", "canny", "invert (from white bg & black line)"]
    assert canny["model_list"] == ["None", "control_sd15_canny [fef5e48e]", "control_v11p_sd15_canny [d14c016b]",
                                   "t2iadapter_canny_sd14v1 [80bfbf2a]", "diffusers_xl_canny_full [2b69fca4]",
                                   "controlnet-union-sdxl-1.0 [15e6ad5d]"]
    assert canny["default_model"] == "control_v11p_sd15_canny [d14c016b]"
    assert body["OpenPose"]["default_model"] == "control_v11p_sd15_openpose [cab727d4]"
    assert body["InstructP2P"]["model_list"] == ["None", "control_v11e_sd15_ip2p [c4bb465c]"]
    assert body["Segmentation"]["model_list"][1:] == ["controlnet-union-sdxl-1.0 [15e6ad5d]",
                                                      "control_v11p_sd15_seg [e1f51eb9]"]
    assert body["IP-Adapter"]["model_list"] == ["None", "ip-adapter_sd15 [6a3f6166]"]
    assert body["Revision"]["model_list"] == ["None"] and body["Revision"]["default_model"] == "None"
    everything = body["All"]
    assert everything["model_list"] == ["None", *TITLES] and everything["default_model"] == "None"
    assert everything["module_list"] == [p.label for p in P.all_preprocessors()]


def test_default_model_without_a_1_1_model_is_the_first():
    assert ct.control_type("Canny", ["control_canny-fp16 [e3fe7712]", "x_canny [1]"])["default_model"] == \
        "control_canny-fp16 [e3fe7712]"


def test_models_for_tag_by_sd_version():
    assert ct.models_for_tag("Canny", TITLES, "sdxl") == ["None", "diffusers_xl_canny_full [2b69fca4]",
                                                         "controlnet-union-sdxl-1.0 [15e6ad5d]"]
    assert "diffusers_xl_canny_full [2b69fca4]" not in ct.models_for_tag("Canny", TITLES, "sd1")
    with pytest.raises(ValueError, match="sd_version"):
        ct.models_for_tag("Canny", TITLES, "sd3")


@pytest.mark.parametrize("title,label", [
    ("control_v11p_sd15_canny [d14c016b]", "canny"),
    ("t2iadapter_canny_sd14v1", "canny"),
    ("control_v11f1p_sd15_depth [cfd03158]", "depth_midas"),
    ("control_v11p_sd15_openpose", "openpose_full"),
    ("control_sd15_openpose [fef5e48e]", "openpose"),
    ("control_v11p_sd15_normalbae", "normal_bae"),
    ("control_sd15_normal", "normal_midas"),
    ("control_v11p_sd15s2_lineart_anime", "lineart_anime"),
    ("control_v11p_sd15_scribble", "scribble_pidinet"),
    ("control_v11p_sd15_softedge", "softedge_pidinet"),
    ("control_sd15_hed", "softedge_hed"),
    ("control_v11e_sd15_shuffle", "shuffle"),
    ("control_v11e_sd15_ip2p", "none"),
    ("control_v11f1e_sd15_tile", "tile_resample"),
    ("control_v11p_sd15_inpaint", "inpaint_only"),
    ("control_v11p_sd15_seg", "seg_ofade20k"),
    ("t2iadapter_color_sd14v1", "t2ia_color_grid"),
    ("t2iadapter_style_sd14v1", "t2ia_style_clipvision"),
    ("controlnet-union-sdxl-1.0", None),
    ("qrcode_monster", None),
])
def test_suggest_preprocessor(title, label):
    assert ct.suggest_preprocessor(title) == label
    if label is not None:
        assert P.get(label) is not None


def test_registry_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.get("canny").priority = 1
