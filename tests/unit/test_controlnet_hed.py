"""HED soft edges (softedge_hed, softedge_hedsafe, scribble_hed): the network in ControlNetHED.pth's key layout,
loaded strictly through the restricted unpickler; the post-processing shared by the soft-edge preprocessors (safe
steps, scribble strokes) on synthetic maps; the loaded-network cache; and the three preprocessors end to end from an
annotator folder.

Real weights are not available offline, so the network carries random or hand-set weights. The whole preprocessors
were compared with sd-webui-controlnet's on the same random weights and real photos: identical maps."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import edge_maps, hed, loaded_nets
from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.controlnet.preprocessors import catalog
from modules.models.safe_load import ModelFileError

CPU = torch.device("cpu")


def random_hed(seed: int = 0) -> hed.HedNet:
    torch.manual_seed(seed)
    net = hed.HedNet()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1))
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                p.normal_(0.0, (2.0 / p[0].numel()) ** 0.5)
            elif name != "norm":
                p.normal_(0.0, 0.1)
    return net


def save(net: torch.nn.Module, path) -> None:
    """As the real file is: a plain state dict (fp16, 29 MB for the real one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)


def picture(height: int = 72, width: int = 96) -> np.ndarray:
    """A small RGB scene: a lit gradient, a disc, a bar and a little sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([80 + xx, 60 + yy, 140 - xx // 2], axis=2).astype(np.float32)
    cv2.circle(img, (width // 3, height // 2), height // 4, (230, 40, 30), -1)
    cv2.rectangle(img, (width // 2, height // 5), (width - 10, height // 5 + 12), (20, 20, 200), -1)
    img += np.random.default_rng(0).normal(0, 3, img.shape)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    save(random_hed(), root / "hed" / "ControlNetHED.pth")
    yield AnnotatorStore([root], root, allow_download=False)
    loaded_nets.unload()


# --- the network and its file -----------------------------------------------------------------------------------

def test_the_file_loads_strictly_in_the_real_key_layout(store):
    path = store.ensure(hed.HED_FILE)
    stored = torch.load(path, weights_only=True)
    net = hed.load(path)
    state = net.state_dict()
    assert sorted(state) == sorted(stored) and len(state) == 37
    assert sum(v.numel() for v in state.values()) == 14_716_168     # VGG16's 13 convolutions + 5 projections
    assert tuple(state["norm"].shape) == (1, 3, 1, 1)
    assert tuple(state["block5.convs.2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(state["block3.projection.weight"].shape) == (1, 256, 1, 1)
    assert all(torch.equal(state[k], stored[k].float()) for k in state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_wrong_files_are_refused_naming_the_keys(tmp_path):
    state = {k: v.half() for k, v in hed.HedNet().state_dict().items()}
    del state["block2.projection.bias"]
    state["block6.convs.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "ControlNetHED.pth")
    with pytest.raises(ModelFileError, match=r"ControlNetHED\.pth: not the HED \(ControlNetHED\.pth\) network "
                                             r"\(missing block2\.projection\.bias \(1\); unexpected "
                                             r"block6\.convs\.0\.weight \(1\)\)"):
        hed.load(tmp_path / "ControlNetHED.pth")
    state = hed.HedNet().state_dict()
    state["block1.convs.0.weight"] = torch.zeros(64, 4, 3, 3)      # a 4-channel first layer
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(ModelFileError, match=r"wrong shape block1\.convs\.0\.weight \(1\)"):
        hed.load(tmp_path / "wide.pth")


class NotATensor:
    pass


def test_a_pickle_with_code_is_refused(tmp_path):
    torch.save({"norm": NotATensor()}, tmp_path / "ControlNetHED.pth")
    with pytest.raises(ModelFileError, match="refused"):
        hed.load(tmp_path / "ControlNetHED.pth")


def test_the_five_maps_go_from_full_size_to_a_sixteenth():
    with torch.no_grad():
        maps = random_hed()(torch.rand(1, 3, 32, 48) * 255)
    assert [tuple(m.shape) for m in maps] == [(1, 1, 32, 48), (1, 1, 16, 24), (1, 1, 8, 12), (1, 1, 4, 6),
                                              (1, 1, 2, 3)]


def test_edge_strength_is_the_sigmoid_of_the_mean_of_the_five_maps():
    net = hed.HedNet()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for i, bias in enumerate((-1.0, 0.5, 1.0, 2.0, 2.5), start=1):     # constant maps, mean 1.0
            getattr(net, f"block{i}").projection.bias.fill_(bias)
        edge = hed.edge_strength(net.eval(), np.zeros((64, 64, 3), np.uint8), CPU)
    assert edge.shape == (64, 64) and edge.dtype == np.float64
    assert np.allclose(edge, 1 / (1 + np.exp(-1.0)))


# --- post-processing shared by the soft-edge preprocessors ------------------------------------------------------

def test_safe_step_quantises_to_the_given_number_of_levels():
    x = np.array([0.0, 0.2, 0.34, 0.5, 0.66, 0.7, 0.99, 1.0])
    assert edge_maps.safe_step(x).tolist() == [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.5]
    assert edge_maps.to_uint8(edge_maps.safe_step(x)).tolist() == [0, 0, 127, 127, 127, 255, 255, 255]
    assert edge_maps.safe_step(np.array([0.3, 0.9]), 4).tolist() == [0.25, 1.0]


def ridge_map() -> np.ndarray:
    """A soft-edge map with a strong vertical ridge (peak 255) at x=20 and a weak one (peak 100) at x=60, both
    σ 3 wide (after NMS's σ3 blur: peaks of about 180 and 70, either side of the threshold 127)."""
    xx = np.arange(80, dtype=np.float32)
    row = 255 * np.exp(-((xx - 20) ** 2) / 18) + 100 * np.exp(-((xx - 60) ** 2) / 18)
    return np.repeat(row[None], 50, axis=0).astype(np.uint8)


def test_ridge_nms_keeps_the_crest_of_strong_ridges_only():
    # the two ridges on a slope rising downwards, so no pixel is a maximum along the ridges' own direction
    sloped = ridge_map().astype(np.float32) + 0.5 * np.arange(50, dtype=np.float32)[:, None]
    kept = edge_maps.ridge_nms(sloped, 127, 3.0)
    assert kept.dtype == np.uint8 and set(np.unique(kept)) == {0, 255}
    assert all(np.array_equal(np.flatnonzero(kept[y]), [20]) for y in range(15, 35))   # the crest; weak ridge gone
    # without the slope every pixel of a straight ridge is a maximum along it: the band above 127 stays
    band = np.flatnonzero(edge_maps.ridge_nms(ridge_map(), 127, 3.0)[25])
    assert band.min() < 20 < band.max() and not (band > 40).any()


def test_scribble_turns_a_soft_map_into_binary_strokes_around_strong_ridges():
    strokes = edge_maps.scribble(ridge_map())
    assert strokes.dtype == np.uint8 and set(np.unique(strokes)) == {0, 255}
    lit = np.flatnonzero(strokes[25])
    band = np.flatnonzero(edge_maps.ridge_nms(ridge_map(), 127, 3.0)[25])
    assert np.array_equal(lit, np.arange(lit.min(), lit.max() + 1)) and lit.min() + lit.max() == 40  # centred
    assert 4 <= band.min() - lit.min() <= 8 and 4 <= lit.max() - band.max() <= 8    # the ridge widened by σ3
    assert not strokes[:, 40:].any()


# --- the preprocessors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["softedge_hed", "softedge_hedsafe", "scribble_hed"])
def test_the_preprocessors_run_end_to_end_from_an_annotator_folder(store, name):
    detected = preprocessors.get(name).run(picture(), 64, 0, 0, store=store)
    image = detected.image
    assert image.shape == (64, 85, 3) and image.dtype == np.uint8     # short side 64, padding cropped off
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    levels = set(np.unique(image))
    if name == "softedge_hedsafe":
        assert levels <= {0, 127, 255} and len(levels) >= 2
    elif name == "scribble_hed":
        assert levels <= {0, 255}
    else:
        assert len(levels) > 20


def test_safe_and_scribble_are_the_plain_map_post_processed(store):
    img = picture()
    plain = hed.run(img, 64, store, device=CPU).image[..., 0]
    path = store.ensure(hed.HED_FILE)
    padded, remove_pad = preprocessors_resize(img)
    edge = hed.edge_strength(loaded_nets.cached("hed", path, hed.load), padded, CPU)
    assert np.array_equal(plain, remove_pad(edge_maps.to_uint8(edge)))
    safe = hed.run(img, 64, store, safe=True, device=CPU).image[..., 0]
    assert np.array_equal(safe, remove_pad(edge_maps.to_uint8(edge_maps.safe_step(edge))))
    scribble = hed.run(img, 64, store, scribble=True, device=CPU).image[..., 0]
    assert np.array_equal(scribble, edge_maps.scribble(plain))


def preprocessors_resize(img):
    from modules.controlnet.resize import preprocess_resize
    return preprocess_resize(img, 64)


def test_the_catalog_names_the_file_the_network_loads():
    assert catalog.HED == hed.HED_FILE
    for name in ("hed", "hed_safe", "scribble_hed"):
        assert preprocessors.get(name).weights == (hed.HED_FILE,)


def test_a_missing_file_is_named_before_anything_runs(tmp_path):
    offline = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    with pytest.raises(AnnotatorMissing, match=r"ControlNetHED\.pth is missing .*lllyasviel/Annotators"):
        preprocessors.get("softedge_hed").run(picture(), 64, 0, 0, store=offline)


def test_a_replaced_file_is_loaded_again(tmp_path):
    path = tmp_path / "hed" / "ControlNetHED.pth"
    save(random_hed(1), path)
    first = loaded_nets.cached("hed-test", path, hed.load)
    assert loaded_nets.cached("hed-test", path, hed.load) is first
    save(random_hed(2), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    second = loaded_nets.cached("hed-test", path, hed.load)
    assert second is not first
    assert not torch.equal(first.block1.convs[0].weight, second.block1.convs[0].weight)
    loaded_nets.unload()
