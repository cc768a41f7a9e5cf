"""TEED soft edges (softedge_teed, slider Safe Steps): the network in 7_model.pth's key layout, loaded strictly; its
Smish activation; the Safe Steps quantisation on hand-set network outputs; and the preprocessor end to end from an
annotator folder.

The whole preprocessor was compared with sd-webui-controlnet's on the same random weights and real photos at safe
steps 0, 2 and 5: identical maps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import edge_maps, loaded_nets, teed
from modules.controlnet.annotators import AnnotatorStore
from modules.controlnet.preprocessors import catalog
from modules.models.safe_load import ModelFileError

CPU = torch.device("cpu")


def random_teed(seed: int = 0) -> teed.TeedNet:
    """Random weights scaled so the edge logits vary by about ±2 on 0..255 input (not saturated)."""
    torch.manual_seed(seed)
    net = teed.TeedNet()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 2.0 / p[0].numel() ** 0.5)
            else:
                p.normal_(0.0, 0.1)
        net.block_1.conv1.weight.div_(32.0)
    return net


def constant_net(logit: float) -> teed.TeedNet:
    """A network whose four maps average to `logit` everywhere: only the first head's last bias is set."""
    net = teed.TeedNet()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.up_block_1.features[2].bias.fill_(4 * logit)
    return net.eval()


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
    (root / "TEED").mkdir()
    torch.save(random_teed().state_dict(), root / "TEED" / "7_model.pth")
    yield AnnotatorStore([root], root, allow_download=False)
    loaded_nets.unload()


def test_the_file_loads_strictly_in_the_real_key_layout(store):
    path = store.ensure(teed.TEED_FILE)
    stored = torch.load(path, weights_only=True)
    net = teed.load(path)
    state = net.state_dict()
    assert sorted(state) == sorted(stored) and len(state) == 36
    assert sum(v.numel() for v in state.values()) == 58_910          # "TEED: 58K parameters"
    assert tuple(state["block_1.conv1.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["dblock_3.denselayer1.conv1.weight"].shape) == (48, 32, 3, 3)
    assert tuple(state["up_block_3.features.2.weight"].shape) == (16, 16, 4, 4)      # transposed conv, ×2
    assert tuple(state["up_block_3.features.5.weight"].shape) == (1, 1, 4, 4)
    assert tuple(state["block_cat.DWconv1.weight"].shape) == (24, 1, 3, 3)
    assert all(torch.equal(state[k], stored[k]) for k in state)
    assert not net.training


def test_wrong_files_are_refused_naming_the_keys(tmp_path):
    state = teed.TeedNet().state_dict()
    del state["block_cat.DWconv2.bias"]
    state["block_cat.conv3.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "7_model.pth")
    with pytest.raises(ModelFileError, match=r"7_model\.pth: not the TEED \(7_model\.pth\) network \(missing "
                                             r"block_cat\.DWconv2\.bias \(1\); unexpected block_cat\.conv3\.weight"):
        teed.load(tmp_path / "7_model.pth")


def test_smish_is_x_tanh_log_1_plus_sigmoid():
    x = torch.tensor([-20.0, -1.0, 0.0, 1.0, 20.0], dtype=torch.float64)
    expected = [v * math.tanh(math.log(1 + 1 / (1 + math.exp(-v)))) for v in x.tolist()]
    assert torch.allclose(teed.smish(x), torch.tensor(expected, dtype=torch.float64))
    assert abs(float(teed.smish(torch.tensor(20.0))) - 20 * 0.6) < 1e-5    # tanh(ln 2) = 0.6 for large x


def test_the_four_maps_are_full_size():
    with torch.no_grad():
        maps = random_teed()(torch.rand(1, 3, 32, 48) * 255)
    assert [tuple(m.shape) for m in maps] == [(1, 1, 32, 48)] * 4


@pytest.mark.parametrize("steps,value", [(0, 146), (1, 255), (2, 127), (5, 153)])
def test_safe_steps_quantise_the_strength(tmp_path, steps, value):
    # sigmoid(0.3) = 0.574: steps 0 keeps it (146); n steps give floor(0.574·(n+1))/n
    strength = np.array([1 / (1 + math.exp(-0.3))])
    expected = edge_maps.safe_step(strength, steps) if steps else strength
    assert int(edge_maps.to_uint8(expected)[0]) == value
    (tmp_path / "TEED").mkdir()
    torch.save(constant_net(0.3).state_dict(), tmp_path / "TEED" / "7_model.pth")
    offline = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    image = teed.run(picture(), 64, offline, safe_steps=steps, device=CPU).image
    assert image.shape == (64, 85, 3) and np.all(image == value)
    loaded_nets.unload()


@pytest.mark.parametrize("steps,levels", [(2, {0, 127, 255}), (0, None)])
def test_the_preprocessor_runs_end_to_end_from_an_annotator_folder(store, steps, levels):
    p = preprocessors.get("softedge_teed")
    assert [(s.name, s.value, s.minimum, s.maximum) for s in p.sliders()][1] == ("Safe Steps", 2, 0, 10)
    image = p.run(picture(), 64, steps, 0, store=store).image
    assert image.shape == (64, 85, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    found = set(np.unique(image).tolist())
    if levels is None:
        assert len(found) > 20
    else:
        assert found <= levels and len(found) >= 2


def test_the_catalog_names_the_file_the_network_loads():
    assert catalog.TEED == teed.TEED_FILE
    assert preprocessors.get("softedge_teed").weights == (teed.TEED_FILE,)
