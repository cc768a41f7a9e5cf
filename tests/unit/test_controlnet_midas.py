"""depth_midas / normal_midas: the MiDaS DPT-Hybrid network in the real file's key layout, loaded strictly through the
restricted unpickler; the depth and normal post-processing on depths built by hand; and both preprocessors end to end
through the registry with weights from a file in an annotator folder.

The real file (dpt_hybrid-midas-501f0c75.pt, 123M floats) is not available offline and a full-size random copy is
too slow for a unit test, so the files here have every key of the real layout at narrower widths
(`NETWORK_SIZE` = TINY); the full-size layout is checked on the meta device. What is checked is the plumbing (keys,
shapes, sizes, value ranges), while the post-processing gets exact synthetic depths."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import dpt_hybrid, loaded_nets, midas
from modules.controlnet.annotator_nets.dpt_hybrid import MidasDptHybrid
from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.models.safe_load import ModelFileError

TINY = dpt_hybrid.Size(stem=32, stages=(128, 128, 128), embed=64, heads=1, grid=4, classes=10, features=32)
CPU = torch.device("cpu")


def random_net(size: dpt_hybrid.Size, seed: int = 0) -> MidasDptHybrid:
    """Random weights that give a depth with relief (default init leaves norms at 1/0 and the position table at 0;
    the last bias keeps the final ReLU from flattening everything)."""
    torch.manual_seed(seed)
    net = MidasDptHybrid(size)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("cls_token", "pos_embed")):
                p.normal_(0, 0.02)
            elif "norm" in name and name.endswith("weight") and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
        net.scratch.output_conv[4].bias.fill_(0.5)
    return net.eval()


def save(net: torch.nn.Module, path) -> None:
    """As the real file is: a plain dict of tensors under the timm/DPT names (fp16 here to keep tests light)."""
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(midas, "NETWORK_SIZE", TINY)
    yield
    loaded_nets.unload()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """An annotator folder with the file in the extension's layout (<dir>/midas/<file>)."""
    root = tmp_path_factory.mktemp("annotators")
    (root / "midas").mkdir()
    save(random_net(TINY), root / "midas" / midas.MIDAS_FILE.filename)
    return root


def store_for(root) -> AnnotatorStore:
    return AnnotatorStore([root], root, allow_download=False)


def scene(height: int = 120, width: int = 160) -> np.ndarray:
    """A drawn room: a floor gradient, a box and a ball."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([40 + xx * 100 // width, 60 + yy * 120 // height, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    cv2.rectangle(img, (20, 30), (70, 90), (200, 60, 40), -1)
    cv2.circle(img, (115, 70), 25, (230, 220, 90), -1)
    return img


# --- network and file --------------------------------------------------------------------------------------------

def test_full_size_layout_is_the_files():
    with torch.device("meta"):
        state = MidasDptHybrid().state_dict()
    assert len(state) == 368 and sum(v.numel() for v in state.values()) == 123_146_985
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["pretrained.model.pos_embed"] == (1, 577, 768)
    assert shapes["pretrained.model.patch_embed.backbone.stem.conv.weight"] == (64, 3, 7, 7)
    assert shapes["pretrained.model.patch_embed.backbone.stages.2.blocks.8.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["pretrained.model.patch_embed.backbone.stages.1.blocks.0.downsample.conv.weight"] == (512, 256, 1, 1)
    assert shapes["pretrained.model.patch_embed.proj.weight"] == (768, 1024, 1, 1)
    assert shapes["pretrained.model.blocks.11.attn.qkv.weight"] == (2304, 768)
    assert shapes["pretrained.model.head.weight"] == (1000, 768)
    assert shapes["pretrained.act_postprocess3.0.project.0.weight"] == (768, 1536)
    assert shapes["pretrained.act_postprocess4.4.weight"] == (768, 768, 3, 3)
    assert shapes["scratch.layer1_rn.weight"] == (256, 256, 3, 3)
    assert shapes["scratch.refinenet4.resConfUnit1.conv1.weight"] == (256, 256, 3, 3)
    assert shapes["scratch.output_conv.4.weight"] == (1, 32, 1, 1)
    assert not any("act_postprocess1" in k or "act_postprocess2" in k for k in state)   # hybrid: ResNet maps
    assert sorted(MidasDptHybrid(TINY).state_dict()) == sorted(state)    # the test files: same keys


def test_file_loads_strictly(weights_dir, tiny):
    path = weights_dir / "midas" / midas.MIDAS_FILE.filename
    stored = torch.load(path, weights_only=True)
    net = midas.load(path)
    state = net.state_dict()
    assert sorted(state) == sorted(stored)
    assert all(torch.equal(state[k], stored[k].float()) for k in state)
    assert not net.training and all(v.dtype == torch.float32 for v in state.values())


def test_wrong_files_are_refused_naming_the_keys(tmp_path, tiny):
    state = {k: v.half() for k, v in MidasDptHybrid(TINY).state_dict().items()}
    del state["scratch.output_conv.4.bias"]
    state["pretrained.model.dist_token"] = torch.zeros(1, 1, 64)
    state["scratch.layer1_rn.weight"] = torch.zeros(32, 96, 3, 3)
    torch.save(state, tmp_path / "dpt.pt")
    with pytest.raises(ModelFileError, match=r"dpt\.pt: not the MiDaS DPT-Hybrid .*missing scratch\.output_conv\.4"
                                             r"\.bias \(1\); unexpected pretrained\.model\.dist_token \(1\); "
                                             r"wrong shape scratch\.layer1_rn\.weight \(1\)"):
        midas.load(tmp_path / "dpt.pt")


def test_a_vit_large_dpt_file_is_not_taken_for_the_hybrid(tmp_path, tiny):
    """dpt_large-midas has no ResNet (patch_embed.proj is a 16×16 convolution) and 24 blocks."""
    state = {k: v for k, v in MidasDptHybrid(TINY).state_dict().items() if ".backbone." not in k}
    state["pretrained.model.patch_embed.proj.weight"] = torch.zeros(64, 3, 16, 16)
    state["pretrained.model.blocks.23.norm1.weight"] = torch.zeros(64)
    torch.save(state, tmp_path / "dpt_large-midas-2f21e586.pt")
    with pytest.raises(ModelFileError, match=r"missing pretrained\.model\.patch_embed\.backbone\..*unexpected "
                                             r"pretrained\.model\.blocks\.23\.norm1\.weight.*wrong shape "
                                             r"pretrained\.model\.patch_embed\.proj\.weight"):
        midas.load(tmp_path / "dpt_large-midas-2f21e586.pt")


def test_network_gives_non_negative_depth_at_the_input_size():
    net = random_net(TINY)
    with torch.no_grad():
        depth = net(torch.rand(2, 3, 64, 96) * 2 - 1)
    assert depth.shape == (2, 64, 96) and (depth >= 0).all() and depth.std() > 0
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 64, 80))


def test_position_table_is_resized_to_the_token_grid():
    net = random_net(TINY)
    table = net.pretrained.model.position_embeddings(3, 5)
    assert table.shape == (1, 1 + 15, 64)
    assert torch.equal(table[:, 0], net.pretrained.model.pos_embed[:, 0])      # the class token's stays
    same = net.pretrained.model.position_embeddings(TINY.grid, TINY.grid)
    assert torch.allclose(same, net.pretrained.model.pos_embed)                # trained grid size: unchanged


def test_same_padding_puts_the_odd_pixel_right_and_bottom():
    x = torch.ones(1, 1, 4, 6)
    padded = dpt_hybrid._same_pad(x, 3, 2)                 # out 2×3: needs 1 row and 1 column, both at the end
    assert padded.shape == (1, 1, 5, 7) and padded[0, 0, 4].sum() == 0 and padded[0, 0, :, 6].sum() == 0
    assert padded[0, 0, 0, 0] == 1
    assert dpt_hybrid._same_pad(x, 7, 2).shape == (1, 1, 9, 11)          # 7×7 stride 2: 2 before, 3 after


# --- post-processing ---------------------------------------------------------------------------------------------

def test_depth_map_stretches_to_the_full_range():
    depth = np.linspace(3.0, 7.0, 64, dtype=np.float32).reshape(8, 8)
    out = midas.depth_map(depth)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)
    assert out.ravel()[32] == int((depth.ravel()[32] - 3.0) / 4.0 * 255.0)    # truncated, not rounded
    assert not midas.depth_map(np.full((4, 4), 2.5, np.float32)).any()      # no relief: black, not NaN


def test_normals_of_a_slope_and_the_background_threshold():
    slope = 0.75
    depth = np.tile(np.arange(16, dtype=np.float32) * slope, (16, 1))       # depth rises to the right
    out = midas.normal_map(depth, background=0.0)
    gx = 8.0 * slope                                                         # 3×3 Sobel of a ramp: 8 × slope
    n = np.array([gx, 0.0, midas.NORMAL_Z]) / np.hypot(gx, midas.NORMAL_Z)
    expected = (n * 127.5 + 127.5).astype(np.uint8)[::-1]                    # stored as (z, y, x)
    assert np.array_equal(out[5, 5], expected) and np.array_equal(out[12, 3], expected)
    # columns whose stretched depth is below the threshold face the viewer: (z, y, x) = (1, 0, 0)
    cut = midas.normal_map(depth, background=0.5)
    near = midas.normalised(depth) >= 0.5
    assert np.all(cut[~near] == [255, 127, 127]) and np.array_equal(cut[5, 12], expected)


# --- end to end --------------------------------------------------------------------------------------------------

def test_depth_midas_through_the_registry(weights_dir, tiny):
    image = scene()
    out = preprocessors.get("depth_midas").run(image, 96, 0.5, 0.5, store=store_for(weights_dir)).image
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8            # short side 120 → 96 (160 → 128)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 0], out[:, :, 2])
    assert out.max() > 200 and out.std() > 5


def test_normal_midas_through_the_registry(weights_dir, tiny):
    image = scene()
    pre = preprocessors.get("normal_midas")
    assert pre.name == "normal_map" and pre.slider_a.name == "Normal Background Threshold"
    res, a, b = pre.clamp(96, -1, -1)                                     # the API's -1: the default 0.4
    out = pre.run(image, res, a, b, store=store_for(weights_dir)).image
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    assert out[:, :, 0].min() >= 127                                      # z towards the viewer
    flat = pre.run(image, 96, 1.0, 0, store=store_for(weights_dir)).image  # everything is background
    assert (np.all(flat == [255, 127, 127], axis=2)).mean() > 0.99
    steep = pre.run(image, 96, 0.0, 0, store=store_for(weights_dir)).image
    assert not np.array_equal(steep, flat)


def test_run_matches_the_network_on_the_padded_image(weights_dir, tiny):
    """The map is the network's depth on the resized, edge-padded image, cropped back: nothing else in between."""
    from modules.controlnet.resize import preprocess_resize
    image = scene(100, 130)
    padded, remove_pad = preprocess_resize(image, 64)
    net = midas.load(weights_dir / "midas" / midas.MIDAS_FILE.filename)
    with torch.no_grad():
        depth = midas.predict_depth(net, padded, CPU)
    assert depth.shape == padded.shape[:2] == (64, 128)
    expected = remove_pad(midas.depth_map(depth))
    got = midas.run(image, 64, store_for(weights_dir), device=CPU).image
    assert got.shape == (64, 83, 3) and np.array_equal(got[:, :, 0], expected)


def test_missing_file_and_bad_threshold_are_named(tmp_path, weights_dir, tiny):
    with pytest.raises(AnnotatorMissing, match="dpt_hybrid-midas-501f0c75.pt"):
        preprocessors.get("depth_midas").run(scene(), 64, 0, 0, store=store_for(tmp_path))
    with pytest.raises(ValueError, match="Normal Background Threshold must be within 0..1"):
        midas.run(scene(), 64, store_for(weights_dir), normals=True, background=1.5)


def test_annotator_file_is_the_catalogs():
    depth, normal = preprocessors.get("depth_midas"), preprocessors.get("normal_midas")
    assert midas.MIDAS_FILE == depth.weights[0] == normal.weights[0]
