"""The mlsd preprocessor: M-LSD's large network (mlsd_large_512_fp32.pth) in the real key layout, loaded strictly;
the segment decoding (centre peaks, value and distance thresholds, ends scaled to the image) on network outputs
built by hand; the drawing; and the whole preprocessor through the registry with its two sliders.

Real weights are not available offline: files hold random weights, or weights wired so that the network's output
is known. That the module computes what the extension computes was checked outside the test suite against its
code with shared random weights (identical maps)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import loaded_nets, mlsd
from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.models.safe_load import ModelFileError

F = mlsd.MLSD_FILE


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    """A room corner: two walls, a floor line, a window frame."""
    img = np.full((height, width, 3), 200, np.uint8)
    img[:, width // 2:] = 160
    cv2.line(img, (0, height - 12), (width - 1, height - 8), (60, 50, 40), 2)
    cv2.rectangle(img, (8, 8), (22, 24), (90, 90, 120), 2)
    return img


def save(state: dict, root) -> AnnotatorStore:
    (root / F.subdir).mkdir(parents=True, exist_ok=True)
    torch.save(state, root / F.subdir / F.filename)
    loaded_nets.unload()
    return AnnotatorStore([root], root, allow_download=False)


@pytest.fixture(scope="module")
def random_state():
    torch.manual_seed(0)
    return mlsd.MlsdLarge().state_dict()


@pytest.fixture(scope="module")
def store(tmp_path_factory, random_state):
    yield save(random_state, tmp_path_factory.mktemp("annotators"))
    loaded_nets.unload()


def wired_state(random_state, centre: float, ends: tuple[float, float, float, float]) -> dict:
    """The head's 1×1 projection answers a constant everywhere: centre logit `centre` (output channel 0, the
    head's channel 7) and displacements `ends` (channels 1..4)."""
    state = dict(random_state)
    weight = state["block23.conv3.weight"].clone()
    bias = state["block23.conv3.bias"].clone()
    weight[7:12] = 0
    bias[7:12] = torch.tensor([centre, *ends])
    state["block23.conv3.weight"], state["block23.conv3.bias"] = weight, bias
    return state


# --- layout and loading ------------------------------------------------------------------------------------------

def test_the_network_has_the_real_files_key_layout():
    with torch.device("meta"):
        state = mlsd.MlsdLarge().state_dict()
    assert len(state) == 362
    assert tuple(state["backbone.features.0.0.weight"].shape) == (32, 4, 3, 3)    # RGB + the constant plane
    assert tuple(state["backbone.features.1.conv.0.0.weight"].shape) == (32, 1, 3, 3)   # depthwise, no expansion
    assert tuple(state["backbone.features.13.conv.3.weight"].shape) == (96,)
    assert "backbone.features.14.conv.0.0.weight" not in state                  # the trunk stops at 96 channels
    assert tuple(state["block15.conv1.0.weight"].shape) == (64, 96, 1, 1)
    assert tuple(state["block23.conv1.0.weight"].shape) == (64, 64, 3, 3)
    assert tuple(state["block23.conv3.weight"].shape) == (16, 64, 1, 1)
    assert "backbone.features.0.1.num_batches_tracked" in state
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == 1_552_624


def test_the_file_loads_strictly(store, random_state):
    net = mlsd.load_network(store.find(F))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in random_state.items())
    assert not net.training
    with torch.no_grad():
        out = net(torch.zeros(1, 4, 64, 96))
    assert out.shape == (1, 9, 32, 48)                 # half size: centre, 4 displacements, 4 more


def test_wrong_files_are_refused(tmp_path, random_state):
    state = dict(random_state)
    del state["block23.conv3.bias"]
    state["block24.conv3.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(ModelFileError, match=r"a\.pth: not the mlsd network \(missing block23\.conv3\.bias \(1\); "
                                             r"unexpected block24\.conv3\.weight \(1\)\)"):
        mlsd.load_network(tmp_path / "a.pth")
    torch.save({"model0.1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "sk_model.pth")   # a lineart file
    with pytest.raises(ModelFileError, match=r"not the mlsd network \(missing backbone"):
        mlsd.load_network(tmp_path / "sk_model.pth")


# --- decoding and drawing ----------------------------------------------------------------------------------------

def network_output(h: int = 16, w: int = 16, peaks=()) -> torch.Tensor:
    """1×9×h×w: centre logits −10 except at `peaks` ((y, x, logit, (dx0, dy0, dx1, dy1)), ...)."""
    out = torch.zeros(1, 9, h, w)
    out[0, 0] = -10.0
    for y, x, logit, ends in peaks:
        out[0, 0, y, x] = logit
        out[0, 1:5, y, x] = torch.tensor(ends)
    return out


def test_a_centre_and_its_displacements_become_a_segment_in_image_pixels():
    out = network_output(peaks=[(5, 7, 3.0, (-4.0, 0.0, 4.0, 1.5))])
    segments = mlsd.decode_segments(out, 0.1, 0.1)
    assert segments.tolist() == [[6.0, 10.0, 22.0, 13.0]]          # 2 · (7 − 4, 5, 7 + 4, 5 + 1.5)


def test_thresholds_on_score_and_length():
    out = network_output(peaks=[(5, 7, 3.0, (-4.0, 0.0, 4.0, 0.0))])     # score sigmoid(3) ≈ 0.953, length 8
    assert len(mlsd.decode_segments(out, 0.95, 0.1)) == 1
    assert len(mlsd.decode_segments(out, 0.96, 0.1)) == 0                # value threshold (slider a)
    assert len(mlsd.decode_segments(out, 0.1, 7.9)) == 1
    assert len(mlsd.decode_segments(out, 0.1, 8.0)) == 0                 # distance threshold (slider b), half-size px


def test_only_local_maxima_of_the_centre_map_count():
    out = network_output(peaks=[(5, 7, 3.0, (-4.0, 0.0, 4.0, 0.0)),
                                (5, 8, 2.0, (0.0, -4.0, 0.0, 4.0)),      # next to a stronger one: suppressed
                                (5, 10, 2.0, (0.0, -3.0, 0.0, 3.0))])    # two pixels away: its own peak
    segments = mlsd.decode_segments(out, 0.1, 0.1)
    assert sorted(segments.tolist()) == [[6.0, 10.0, 22.0, 10.0], [20.0, 4.0, 20.0, 16.0]]


def test_at_most_200_candidates():
    out = network_output(h=32, w=32)
    out[0, 0, ::2, ::2] = 5.0                                            # 256 isolated peaks
    out[0, 1:5] = torch.tensor([-2.0, 0.0, 2.0, 0.0])[:, None, None]
    assert len(mlsd.decode_segments(out, 0.1, 0.1)) == mlsd.TOP_K == 200


def test_segments_are_drawn_as_one_pixel_white_lines():
    canvas = mlsd.draw_segments(np.array([[6.0, 10.0, 22.9, 10.0], [-0.5, 3.7, -0.5, 8.2]]), 16, 32)
    assert canvas.dtype == np.uint8 and set(np.unique(canvas).tolist()) == {0, 255}
    assert np.flatnonzero(canvas[10]).tolist() == list(range(6, 23))    # 22.9 truncated to 22
    assert np.flatnonzero(canvas[:, 0]).tolist() == [3, 4, 5, 6, 7, 8]  # −0.5 → 0, 3.7 → 3, 8.2 → 8
    assert np.count_nonzero(canvas) == 17 + 6
    assert not mlsd.draw_segments(np.zeros((0, 4)), 8, 8).any()


# --- the preprocessor --------------------------------------------------------------------------------------------

def test_mlsd_runs_end_to_end_with_its_sliders(store):
    p = preprocessors.get("mlsd")
    assert [s.name for s in p.sliders()] == ["Resolution", "MLSD Value Threshold", "MLSD Distance Threshold"]
    # random weights: scores near 0.47 and displacements under 0.1 half-size px, so only the lowest thresholds
    # let segments (dots, here) through
    img = p.run(photo(), 64, 0.01, 0.01, store=store).image
    assert img.shape == (64, 85, 3) and img.dtype == np.uint8          # 48 × 64 → 64 × 85
    assert set(np.unique(img).tolist()) == {0, 255}
    assert not p.run(photo(), 64, 0.1, 0.1, store=store).image.any()
    assert np.array_equal(img[:, :, 0], img[:, :, 2])
    assert not p.run(photo(), 64, 2.0, 0.1, store=store).image.any()    # no score exceeds 2


def test_wired_network_draws_where_the_sliders_allow(tmp_path, random_state):
    """Every centre scores sigmoid(2) ≈ 0.88 and points to a horizontal segment 6 half-size pixels long, so the
    map's lines are horizontal, 12 px, and vanish when a slider asks for more."""
    store = save(wired_state(random_state, 2.0, (-3.0, 0.0, 3.0, 0.0)), tmp_path)
    p = preprocessors.get("mlsd")
    try:
        lines = p.run(photo(), 64, 0.5, 5.9, store=store).image[:, :, 0] > 0
        rows = np.flatnonzero(lines.any(axis=1))
        assert len(rows) > 0 and np.all(rows % 2 == 0)  # centres on the half-size grid: even rows
        for y in rows:                                  # runs of at least 13 px (both ends drawn) inside the map
            padded = np.concatenate([[False], lines[y], [False]]).astype(np.int8)
            starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
            inner = (starts > 0) & (ends < lines.shape[1])
            assert np.all((ends - starts)[inner] >= 13)
        assert not p.run(photo(), 64, 0.9, 0.1, store=store).image.any()    # score 0.88 < 0.9
        assert not p.run(photo(), 64, 0.1, 6.0, store=store).image.any()    # length 6 is not > 6
    finally:
        loaded_nets.unload()


def test_a_missing_file_is_named(tmp_path):
    empty = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    with pytest.raises(AnnotatorMissing, match="mlsd_large_512_fp32.pth"):
        preprocessors.get("mlsd").run(photo(), 64, 0.1, 0.1, store=empty)
