"""PiDiNet soft edges (softedge_pidinet, softedge_pidisafe, scribble_pidinet, t2ia_sketch_pidi): the network in
table5_pidinet.pth's layout (the authors' training checkpoint: "state_dict", DataParallel's "module." prefix, the
pixel-difference kernels stored unconverted), loaded strictly; the pixel-difference convolutions checked against
their definitions; the post-processing of each variant on hand-set network outputs; and the preprocessors end to
end from an annotator folder.

The whole preprocessors were compared with sd-webui-controlnet's on the same random weights and real photos:
identical maps (and the networks agree to 1e-12 in float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import edge_maps, loaded_nets, pidinet
from modules.controlnet.annotators import AnnotatorStore
from modules.controlnet.preprocessors import catalog
from modules.models.safe_load import ModelFileError

CPU = torch.device("cpu")
RD_BLOCKS = ("block1_2", "block2_3", "block3_3", "block4_3")


def random_pidinet(seed: int = 0) -> pidinet.PiDiNet:
    """Random weights scaled so the residual stream stays O(1), as in a trained network."""
    torch.manual_seed(seed)
    net = pidinet.PiDiNet()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, (2.0 / p[0].numel()) ** 0.5)
                if name.startswith("block") and ".conv2." in name:
                    p.mul_(0.3)
            else:
                p.normal_(0.0, 0.1)
        net.classifier.weight.mul_(3.0)
    return net


def checkpoint(net: torch.nn.Module) -> dict:
    """As the real file is: the authors' training checkpoint with DataParallel's key prefix."""
    return {"epoch": 19, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}


def picture(height: int = 72, width: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([80 + xx, 60 + yy, 140 - xx // 2], axis=2).astype(np.float32)
    img[20:50, 15:45] = (230, 40, 30)
    img[10:22, 50:86] = (20, 20, 200)
    img += np.random.default_rng(0).normal(0, 3, img.shape)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    (root / "pidinet").mkdir()
    torch.save(checkpoint(random_pidinet()), root / "pidinet" / "table5_pidinet.pth")
    yield AnnotatorStore([root], root, allow_download=False)
    loaded_nets.unload()


# --- the file ---------------------------------------------------------------------------------------------------

def test_the_checkpoint_loads_strictly_in_the_real_layout(store):
    path = store.ensure(pidinet.PIDINET_FILE)
    stored = torch.load(path, weights_only=True)["state_dict"]
    net = pidinet.load(path)
    state = net.state_dict()
    assert sorted("module." + k for k in state) == sorted(stored) and len(state) == 83
    assert sum(v.numel() for v in state.values()) == 710_149       # the paper's 710k parameters
    assert tuple(state["init_block.weight"].shape) == (60, 3, 3, 3)
    assert all(tuple(state[f"{b}.conv1.weight"].shape) == (state[f"{b}.conv1.weight"].shape[0], 1, 3, 3)
               for b in RD_BLOCKS)                                 # radial-difference kernels stored as 3×3
    assert tuple(state["block2_1.shortcut.weight"].shape) == (120, 60, 1, 1)
    assert tuple(state["dilations.3.conv1.weight"].shape) == (24, 240, 1, 1)
    assert tuple(state["classifier.weight"].shape) == (1, 4, 1, 1)
    assert all(torch.equal(state[k], stored["module." + k]) for k in state)
    assert not net.training


def test_a_plain_state_dict_without_the_prefix_loads_too(tmp_path):
    net = random_pidinet(3)
    torch.save(net.state_dict(), tmp_path / "table5_pidinet.pth")
    loaded = pidinet.load(tmp_path / "table5_pidinet.pth")
    assert torch.equal(loaded.block3_3.conv1.weight, net.block3_3.conv1.weight)


def test_a_converted_checkpoint_and_other_files_are_refused_naming_the_keys(tmp_path):
    state = {k: v.clone() for k, v in random_pidinet().state_dict().items()}
    for b in RD_BLOCKS:                                             # the authors' "converted" layout: 5×5 kernels
        w = state[f"{b}.conv1.weight"]
        state[f"{b}.conv1.weight"] = torch.zeros(w.shape[0], 1, 5, 5)
    torch.save({"state_dict": state}, tmp_path / "converted.pth")
    with pytest.raises(ModelFileError, match=r"converted\.pth: not the PiDiNet \(table5_pidinet\.pth\) network "
                                             r"\(wrong shape block1_2\.conv1\.weight, block2_3\.conv1\.weight, "
                                             r"block3_3\.conv1\.weight … \(4\)\)"):
        pidinet.load(tmp_path / "converted.pth")
    del state["classifier.bias"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(ModelFileError, match=r"missing classifier\.bias \(1\)"):
        pidinet.load(tmp_path / "broken.pth")


# --- pixel-difference convolutions against their definitions ----------------------------------------------------

OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]   # row-major 3×3
CLOCKWISE_NEXT = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[y + dy, x + dx] with zeros outside (the convolutions' zero padding)."""
    pad = F.pad(x, (2, 2, 2, 2))
    h, w = x.shape[-2:]
    return pad[..., 2 + dy:2 + dy + h, 2 + dx:2 + dx + w]


def by_definition(kind: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One channel, one 3×3 weight: the pixel differences summed as the paper defines them."""
    out = torch.zeros_like(x)
    for i, (dy, dx) in enumerate(OFFSETS):
        if kind == "cd":
            out += w[i] * (shifted(x, dy, dx) - x)
        elif kind == "ad" and i != 4:
            ny, nx = OFFSETS[CLOCKWISE_NEXT[i]]
            out += w[i] * (shifted(x, dy, dx) - shifted(x, ny, nx))
        elif kind == "rd" and i >= 1:
            # stored weights 1..8 go to the 8 directions in order (weight 0 is unused)
            ddy, ddx = [o for o in OFFSETS if o != (0, 0)][i - 1]
            out += w[i] * (shifted(x, 2 * ddy, 2 * ddx) - shifted(x, ddy, ddx))
    return out


@pytest.mark.parametrize("kind", ["cd", "ad", "rd"])
def test_pixel_difference_convolutions_match_their_definitions(kind):
    torch.manual_seed(1)
    x = torch.randn(1, 1, 9, 11, dtype=torch.float64)
    conv = pidinet.PixelDifferenceConv(kind, 1, 1).double()
    with torch.no_grad():
        conv.weight.normal_()
        got = conv(x)
        kernel, padding = pidinet.difference_kernel(kind, conv.weight)
        plain = F.conv2d(x, kernel, padding=padding)
    expected = by_definition(kind, x, conv.weight.flatten())
    assert torch.allclose(got, expected, atol=1e-12) and torch.allclose(plain, expected, atol=1e-12)


def test_an_unknown_difference_type_is_refused():
    with pytest.raises(ValueError, match="one of cv, cd, ad, rd"):
        pidinet.difference_kernel("xd", torch.zeros(1, 1, 3, 3))


def test_the_network_gives_a_full_size_strength_in_0_1():
    with torch.no_grad():
        out = random_pidinet()(torch.rand(1, 3, 32, 48))
    assert out.shape == (1, 1, 32, 48) and float(out.min()) > 0 and float(out.max()) < 1


# --- post-processing of each variant ------------------------------------------------------------------------------

def constant_net(logit: float) -> pidinet.PiDiNet:
    """A network whose fused output is sigmoid(logit) everywhere."""
    net = pidinet.PiDiNet()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.classifier.bias.fill_(logit)
    return net.eval()


@pytest.mark.parametrize("logit,plain,safe,sketch", [
    (0.1, 133, 127, 255),     # sigmoid 0.525: ×3 → 1 step of 2 → ½
    (-0.1, 121, 127, 0),      # 0.475: below the sketch threshold ½
    (1.0, 186, 255, 255),     # 0.731: ×3 → 2 steps → 1
    (-2.0, 30, 0, 0),         # 0.119
])
def test_each_variant_post_processes_the_strength(tmp_path, logit, plain, safe, sketch):
    folder = tmp_path / "pidinet"
    folder.mkdir()
    torch.save(checkpoint(constant_net(logit)), folder / "table5_pidinet.pth")
    offline = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    img = picture()
    got = {name: pidinet.run(img, 64, offline, device=CPU, **{name: True} if name else {}).image
           for name in ("", "safe", "sketch", "scribble")}
    for name, value in (("", plain), ("safe", safe), ("sketch", sketch)):
        assert got[name].shape == (64, 85, 3) and np.all(got[name] == value), name
    # every pixel of a flat map is a "ridge" (a maximum along each direction): all strokes above 127, none below
    assert np.all(got["scribble"] == (255 if plain > 127 else 0))
    loaded_nets.unload()


def test_scribble_is_the_plain_map_as_strokes(store):
    img = picture()
    plain = pidinet.run(img, 64, store, device=CPU).image[..., 0]
    strokes = pidinet.run(img, 64, store, scribble=True, device=CPU).image[..., 0]
    assert np.array_equal(strokes, edge_maps.scribble(plain))


# --- the preprocessors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,levels", [
    ("softedge_pidinet", None), ("softedge_pidisafe", {0, 127, 255}), ("scribble_pidinet", {0, 255}),
    ("t2ia_sketch_pidi", {0, 255})])
def test_the_preprocessors_run_end_to_end_from_an_annotator_folder(store, name, levels):
    image = preprocessors.get(name).run(picture(), 64, 0, 0, store=store).image
    assert image.shape == (64, 85, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    found = set(np.unique(image).tolist())
    if levels is None:
        assert len(found) > 20
    else:
        assert found <= levels


def test_the_catalog_names_the_file_the_network_loads():
    assert catalog.PIDINET == pidinet.PIDINET_FILE
    for name in ("pidinet", "pidinet_safe", "pidinet_scribble", "pidinet_sketch"):
        assert preprocessors.get(name).weights == (pidinet.PIDINET_FILE,)
