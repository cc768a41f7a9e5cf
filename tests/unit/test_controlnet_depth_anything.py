"""depth_anything / depth_anything_v2: DINOv2 + DPT in the real files' key layout, loaded strictly (the v1 .pth
through the restricted unpickler, the v2 .safetensors); the pre- and post-processing on inputs built by hand; both
preprocessors end to end through the registry with weights from files in an annotator folder.

The real files (335M floats each) are not available offline and full-size random copies are too slow for a unit
test, so the files here have every key of the real layout at narrower widths (`NETWORK_SIZE` = TINY); the
full-size layout is checked on the meta device."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import depth_anything, dinov2_dpt, loaded_nets
from modules.controlnet.annotator_nets.dinov2_dpt import DepthAnything
from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.models.safe_load import ModelFileError

TINY = dinov2_dpt.Size(embed=32, heads=2, grid=4, taps=(16, 16, 32, 32), features=16)
CPU = torch.device("cpu")


def random_net(version: int, seed: int = 0) -> DepthAnything:
    """Random weights that give a depth with relief (the last bias keeps the final ReLUs from flattening it)."""
    torch.manual_seed(seed)
    net = DepthAnything(version, TINY)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("cls_token", "pos_embed", "mask_token")):
                p.normal_(0, 0.02)
            elif name.endswith("gamma"):
                p.copy_(0.1 + 0.05 * torch.randn_like(p))
            elif "norm" in name and name.endswith("weight") and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
        net.depth_head.scratch.output_conv2[2].bias.fill_(0.5)
    return net.eval()


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(depth_anything, "NETWORK_SIZE", TINY)
    yield
    loaded_nets.unload()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """An annotator folder with both files in the extension's layout (<dir>/depth_anything[_v2]/<file>): v1 a
    torch pickle, v2 safetensors, as published."""
    root = tmp_path_factory.mktemp("annotators")
    for version, f in depth_anything.FILES.items():
        (root / f.subdir).mkdir()
        state = {k: v.half().contiguous() for k, v in random_net(version, seed=version).state_dict().items()}
        if f.filename.endswith(".safetensors"):
            save_file(state, str(root / f.subdir / f.filename))
        else:
            torch.save(state, root / f.subdir / f.filename)
    return root


def store_for(root) -> AnnotatorStore:
    return AnnotatorStore([root], root, allow_download=False)


def scene(height: int = 120, width: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([40 + xx * 100 // width, 60 + yy * 120 // height, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    cv2.rectangle(img, (20, 30), (70, 90), (200, 60, 40), -1)
    cv2.circle(img, (115, 70), 25, (230, 220, 90), -1)
    return img


# --- network and files -------------------------------------------------------------------------------------------

def test_full_size_layout_is_the_files():
    with torch.device("meta"):
        state = DepthAnything(1).state_dict()
        assert sorted(DepthAnything(2).state_dict()) == sorted(state)        # v1 and v2 differ only in the taps
    assert len(state) == 407 and sum(v.numel() for v in state.values()) == 335_315_649
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["pretrained.pos_embed"] == (1, 1370, 1024) and shapes["pretrained.mask_token"] == (1, 1024)
    assert shapes["pretrained.patch_embed.proj.weight"] == (1024, 3, 14, 14)
    assert shapes["pretrained.blocks.23.ls2.gamma"] == (1024,)
    assert shapes["pretrained.blocks.0.attn.qkv.weight"] == (3072, 1024)
    assert shapes["depth_head.projects.1.weight"] == (512, 1024, 1, 1)
    assert shapes["depth_head.resize_layers.0.weight"] == (256, 256, 4, 4)      # transposed convolution
    assert shapes["depth_head.resize_layers.3.weight"] == (1024, 1024, 3, 3)
    assert shapes["depth_head.scratch.layer4_rn.weight"] == (256, 1024, 3, 3)
    assert shapes["depth_head.scratch.output_conv2.2.weight"] == (1, 32, 1, 1)
    assert not any("readout" in k or "register" in k for k in state)
    assert sorted(DepthAnything(1, TINY).state_dict()) == sorted(state)          # the test files: same keys


@pytest.mark.parametrize("version", [1, 2])
def test_files_load_strictly(weights_dir, tiny, version):
    f = depth_anything.FILES[version]
    net = depth_anything.load(version, weights_dir / f.subdir / f.filename)
    expected = random_net(version, seed=version).state_dict()
    state = net.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[k], expected[k].half().float()) for k in state)
    assert not net.training and net.taps == (dinov2_dpt.TAPS_V1 if version == 1 else dinov2_dpt.TAPS_V2)


def test_wrong_files_are_refused_naming_the_keys(tmp_path, tiny):
    state = {k: v.contiguous() for k, v in DepthAnything(2, TINY).state_dict().items()}
    state["pretrained.register_tokens"] = torch.zeros(1, 4, 32)             # a DINOv2-with-registers backbone
    del state["pretrained.mask_token"]
    state["pretrained.patch_embed.proj.weight"] = torch.zeros(32, 3, 16, 16)
    save_file(state, str(tmp_path / "depth_anything_v2_vitl.safetensors"))
    with pytest.raises(ModelFileError, match=r"not the Depth Anything V2 .*missing pretrained\.mask_token \(1\); "
                                             r"unexpected pretrained\.register_tokens \(1\); wrong shape "
                                             r"pretrained\.patch_embed\.proj\.weight \(1\)"):
        depth_anything.load(2, tmp_path / "depth_anything_v2_vitl.safetensors")


def test_taps_are_the_normed_patch_tokens_of_the_chosen_blocks():
    net = random_net(1).pretrained
    seen = {}
    for i, block in enumerate(net.blocks):
        block.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, out))
    with torch.no_grad():
        taps = net(torch.randn(1, 3, 42, 56), dinov2_dpt.TAPS_V2)
    assert len(taps) == 4 and taps[0].shape == (1, 12, 32)                    # 3×4 patches, class token dropped
    for got, i in zip(taps, dinov2_dpt.TAPS_V2):
        assert torch.allclose(got, net.norm(seen[i])[:, 1:])


def test_network_gives_non_negative_depth_at_the_input_size():
    net = random_net(2)
    with torch.no_grad():
        depth = net(torch.randn(1, 3, 56, 84))
    assert depth.shape == (1, 56, 84) and (depth >= 0).all() and depth.std() > 0
    with pytest.raises(ValueError, match="multiples of 14"):
        net(torch.zeros(1, 3, 56, 80))
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        DepthAnything(3, TINY)


def test_position_table_keeps_the_class_entry_and_the_training_grid():
    net = random_net(1).pretrained
    assert net.position_embeddings(TINY.grid, TINY.grid) is net.pos_embed
    table = net.position_embeddings(3, 5)
    assert table.shape == (1, 1 + 15, 32) and torch.equal(table[:, 0], net.pos_embed[:, 0])
    by_size = torch.nn.functional.interpolate(
        net.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2), size=(3, 5), mode="bicubic")
    assert not torch.allclose(table[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, 15, 32))   # scale, not size


# --- pre- and post-processing ------------------------------------------------------------------------------------

def test_network_size_is_at_least_518_in_multiples_of_14():
    assert depth_anything.network_size(512, 683) == (518, 686)
    assert depth_anything.network_size(683, 512) == (686, 518)
    assert depth_anything.network_size(100, 100) == (518, 518)
    assert depth_anything.network_size(1024, 2048) == (518, 1036)


def test_network_input_is_bgr_imagenet_normalised():
    red = np.zeros((64, 96, 3), np.uint8)
    red[:, :, 0] = 255
    x = depth_anything.network_input(red)
    assert x.shape == (3, 518, 784) and x.dtype == np.float32         # 96 × 518/64 = 777 → 55.5 × 14 → 56 × 14
    assert np.allclose(x[0], (0 - 0.485) / 0.229) and np.allclose(x[1], (0 - 0.456) / 0.224)
    assert np.allclose(x[2], (1 - 0.406) / 0.225)                  # the red channel arrives last: the network sees BGR


def test_depth_map_stretches_and_truncates():
    depth = torch.linspace(2.0, 4.0, 64).reshape(8, 8)
    out = depth_anything.depth_map(depth)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert out.ravel()[21] == int(float((depth.ravel()[21] - 2.0) / 2.0 * 255.0))
    assert not depth_anything.depth_map(torch.full((4, 4), 3.0)).any()


# --- end to end --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["depth_anything", "depth_anything_v2"])
def test_preprocessor_through_the_registry(weights_dir, tiny, module):
    out = preprocessors.get(module).run(scene(), 96, 0.5, 0.5, store=store_for(weights_dir)).image
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 0], out[:, :, 2])
    assert out.std() > 5


def test_run_is_the_network_on_the_padded_image_resized_back(weights_dir, tiny):
    from modules.controlnet.resize import preprocess_resize
    image = scene(100, 130)
    padded, remove_pad = preprocess_resize(image, 64)
    path = weights_dir / depth_anything.V1_FILE.subdir / depth_anything.V1_FILE.filename
    net = depth_anything.load(1, path)
    with torch.no_grad():
        depth = depth_anything.predict_depth(net, padded, CPU)
    assert tuple(depth.shape) == padded.shape[:2] == (64, 128)
    expected = remove_pad(depth_anything.depth_map(depth))
    got = depth_anything.run(image, 64, store_for(weights_dir), version=1, device=CPU).image
    assert got.shape == (64, 83, 3) and np.array_equal(got[:, :, 0], expected)
    v2 = depth_anything.run(image, 64, store_for(weights_dir), version=2, device=CPU).image
    assert not np.array_equal(v2, got)


def test_missing_file_and_bad_version_are_named(tmp_path):
    with pytest.raises(AnnotatorMissing, match="depth_anything_v2_vitl.safetensors"):
        preprocessors.get("depth_anything_v2").run(scene(), 64, 0, 0, store=store_for(tmp_path))
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        depth_anything.run(scene(), 64, store_for(tmp_path), version=3)


def test_annotator_files_are_the_catalogs():
    assert depth_anything.V1_FILE == preprocessors.get("depth_anything").weights[0]
    assert depth_anything.V2_FILE == preprocessors.get("depth_anything_v2").weights[0]
