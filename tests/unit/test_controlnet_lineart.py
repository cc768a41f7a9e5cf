"""The line-art preprocessors' networks: lineart_realistic / lineart_coarse (sk_model.pth, sk_model2.pth),
lineart_anime (netG.pth) and lineart_anime_denoise (manga_line/erika.pth).

Real weights are not available offline, so the files hold random weights in the real key layouts (written to an
annotator folder as the extension lays it out). Checked: strict loading (keys, shapes, DataParallel's "module."
prefix, wrong files refused naming the keys), the map's size, type and inversion (with output layers wired to a known
constant), and the whole preprocessor through the registry. That these modules compute what the extension computes
was checked outside the test suite against its code with shared random weights (identical maps)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from modules.controlnet import preprocessors
from modules.controlnet.annotator_nets import lineart, lineart_anime, loaded_nets, manga_line
from modules.controlnet.annotators import AnnotatorMissing, AnnotatorStore
from modules.models.safe_load import ModelFileError

NETWORKS = {  # module → (network class, annotator file)
    "lineart": (lineart.LineartGenerator, lineart.LINEART_FILE),
    "lineart_coarse": (lineart.LineartGenerator, lineart.LINEART_COARSE_FILE),
    "lineart_anime": (lineart_anime.LineartAnimeUnet, lineart_anime.LINEART_ANIME_FILE),
    "lineart_anime_denoise": (manga_line.MangaLineNet, manga_line.MANGA_LINE_FILE),
}


def half(state: dict) -> dict:
    """fp16 copies of the floating tensors, to keep the files light (the loader makes them float32)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def save(net_or_state, path, prefix: str = "") -> None:
    """A plain dict of tensors, as the real files are."""
    state = net_or_state if isinstance(net_or_state, dict) else half(net_or_state.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({prefix + k: v for k, v in state.items()}, path)


def trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """Batch norms with statistics like a trained network's (the defaults, mean 0 and variance 1, meet the manga
    network's 0..255 input and saturate its map)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return net


def layout(cls) -> dict:
    """The network's state dict on the meta device (names and shapes only; nothing is initialised)."""
    with torch.device("meta"):
        return cls().state_dict()


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    """A small scene: a grey wall, a dark frame, a light disc, a diagonal stroke."""
    img = np.full((height, width, 3), 150, np.uint8)
    cv2.rectangle(img, (6, 8), (30, 40), (40, 30, 20), 2)
    cv2.circle(img, (46, 22), 10, (230, 220, 200), -1)
    cv2.line(img, (0, height - 1), (width - 1, 0), (10, 10, 10), 1)
    return img


@pytest.fixture(scope="module")
def states():
    """Random weights for each network, fp16, built once."""
    torch.manual_seed(0)
    return {name: half(trained_like(cls()).state_dict()) for name, (cls, _) in NETWORKS.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory, states):
    """An annotator folder with the four files (netG.pth as DataParallel saved it, with "module.")."""
    root = tmp_path_factory.mktemp("annotators")
    for name, (_, f) in NETWORKS.items():
        save(states[name], root / f.subdir / f.filename, prefix="module." if name == "lineart_anime" else "")
    yield AnnotatorStore([root], root, allow_download=False)
    loaded_nets.unload()


# --- layouts and loading -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,keys,layer,shape", [
    (lineart.LineartGenerator, 24, "model2.2.conv_block.5.weight", (256, 256, 3, 3)),
    (lineart_anime.LineartAnimeUnet, 32, "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.3.weight",
     (512, 512, 4, 4)),
    (manga_line.MangaLineNet, 707, "block4.model.11.residual.model.2.weight", (384, 384, 3, 3)),
])
def test_networks_have_the_real_files_key_layout(cls, keys, layer, shape):
    state = layout(cls)
    assert len(state) == keys and tuple(state[layer].shape) == shape


def test_layouts_in_detail():
    sk = layout(lineart.LineartGenerator)
    assert tuple(sk["model0.1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sk["model3.0.weight"].shape) == (256, 128, 3, 3)      # transposed: (in, out, k, k)
    assert tuple(sk["model4.1.weight"].shape) == (1, 64, 7, 7)
    assert not any("running" in k for k in sk)                        # instance norms without statistics
    unet = layout(lineart_anime.LineartAnimeUnet)
    assert tuple(unet["model.model.0.weight"].shape) == (64, 3, 4, 4)
    assert tuple(unet["model.model.3.weight"].shape) == (128, 1, 4, 4)   # outermost up: 2×64 in, 1 out
    assert tuple(unet["model.model.1.model.5.weight"].shape) == (256, 64, 4, 4)
    erika = layout(manga_line.MangaLineNet)
    assert tuple(erika["block0.model.0.conv1.model.2.weight"].shape) == (24, 1, 3, 3)
    assert tuple(erika["block5.model.0.shortcut.model.0.weight"].shape) == (192, 384, 1, 1)
    assert tuple(erika["conv15.model.2.weight"].shape) == (1, 16, 1, 1)
    assert "block1.model.0.shortcut.model.0.weight" in erika          # 24 → 48 channels
    assert "block1.model.1.shortcut.model.0.weight" not in erika      # 48 → 48, same size: identity
    assert "block1.model.2.shortcut.model.0.weight" in erika          # the halving block
    assert not any(k.startswith("res") for k in erika)                # the skip additions have no weights


@pytest.mark.parametrize("name", list(NETWORKS))
def test_files_load_strictly(store, name):
    cls, f = NETWORKS[name]
    path = store.find(f)
    stored = torch.load(path, weights_only=True)
    loader = {"lineart": lineart, "lineart_coarse": lineart, "lineart_anime": lineart_anime,
              "lineart_anime_denoise": manga_line}[name].load_network
    net = loader(path)
    state = net.state_dict()
    assert sorted(state) == sorted(k.removeprefix("module.") for k in stored)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert all(torch.equal(state[k.removeprefix("module.")], v.float()) for k, v in stored.items()
               if v.is_floating_point())
    assert not net.training


def test_wrong_files_are_refused_naming_the_keys(tmp_path, states):
    state = dict(states["lineart"])
    del state["model4.1.bias"]
    state["model5.1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "sk_model.pth")
    with pytest.raises(ModelFileError, match=r"sk_model\.pth: not the lineart network \(missing model4\.1\.bias "
                                             r"\(1\); unexpected model5\.1\.weight \(1\)\)"):
        lineart.load_network(tmp_path / "sk_model.pth")
    # the anime generator's file is not the manga-line network, nor the reverse
    save(states["lineart"], tmp_path / "netG.pth")
    with pytest.raises(ModelFileError, match=r"not the lineart_anime network \(missing model\.model\.0\.bias"):
        lineart_anime.load_network(tmp_path / "netG.pth")
    save(states["lineart_anime_denoise"], tmp_path / "erika.pth")
    with pytest.raises(ModelFileError, match="not the lineart network .*unexpected block0"):
        lineart.load_network(tmp_path / "erika.pth")


def test_a_wrongly_shaped_tensor_is_named(tmp_path, states):
    state = dict(states["lineart_anime_denoise"])
    state["conv15.model.2.weight"] = torch.zeros(2, 16, 1, 1)
    torch.save(state, tmp_path / "erika.pth")
    with pytest.raises(ModelFileError, match=r"wrong shape conv15\.model\.2\.weight \(1\)"):
        manga_line.load_network(tmp_path / "erika.pth")


# --- the maps ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,label", [("lineart", "lineart_realistic"), ("lineart_coarse", "lineart_coarse"),
                                        ("lineart_anime", "lineart_anime"),
                                        ("lineart_anime_denoise", "lineart_anime_denoise")])
def test_each_preprocessor_runs_end_to_end(store, name, label):
    p = preprocessors.get(label)
    assert p.name == name
    detected = p.run(photo(), 64, 0.5, 0.5, store=store)
    img = detected.image
    # short side 48 → 64: 64 × round(64 · 64/48) = 64 × 85 (the padding to 128 cropped off again)
    assert img.shape == (64, 85, 3) and img.dtype == np.uint8
    assert np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2])
    assert len(np.unique(img)) > 2                  # a grey-level map, not a constant
    other = p.run(255 - photo(), 64, 0.5, 0.5, store=store).image
    assert not np.array_equal(img, other)           # the network sees the picture


def test_maps_follow_the_processor_resolution(store):
    img = preprocessors.get("lineart_realistic").run(photo(40, 90), 96, 0, 0, store=store).image
    assert img.shape == (96, 216, 3)                # 40 × 90 → 96 × 216 (padded to 128 × 256 while it ran)


LAST_LAYER = {"lineart": "model4.1", "lineart_coarse": "model4.1", "lineart_anime": "model.model.3",
              "lineart_anime_denoise": "conv15.model.2"}


def _constant_output_store(tmp_path, states, name: str, value: float) -> AnnotatorStore:
    """A file whose network answers `value` everywhere at its last layer (weights 0, bias = value)."""
    _, f = NETWORKS[name]
    state = dict(states[name])
    layer = LAST_LAYER[name]
    state[layer + ".weight"] = torch.zeros_like(state[layer + ".weight"])
    state[layer + ".bias"] = torch.full_like(state[layer + ".bias"], value, dtype=torch.float32)
    save(state, tmp_path / f.subdir / f.filename)
    loaded_nets.unload()
    return AnnotatorStore([tmp_path], tmp_path, allow_download=False)


@pytest.mark.parametrize("name,bias,expected", [
    ("lineart", float(np.log(0.25 / 0.75)), 192),  # paper = sigmoid(bias) = 0.25 → 255 − 63
    ("lineart_coarse", -20.0, 255),                # all ink → white
    ("lineart_anime", 0.0, 128),                   # paper = tanh(0) · 127.5 + 127.5 → 127 → 255 − 127
    ("lineart_anime_denoise", 55.0, 200),          # paper brightness is the output itself
])
def test_the_map_is_the_inverted_network_output(tmp_path, states, monkeypatch, name, bias, expected):
    store = _constant_output_store(tmp_path, states, name, bias)
    inputs = []
    original = lineart_anime.LineartAnimeUnet.forward
    monkeypatch.setattr(lineart_anime.LineartAnimeUnet, "forward",
                        lambda self, x: inputs.append(tuple(x.shape)) or original(self, x))
    try:
        img = preprocessors.get(name).run(photo(), 64, 0.5, 0.5, store=store).image
    finally:
        loaded_nets.unload()
    assert img.shape == (64, 85, 3)
    assert np.unique(img).tolist() == [expected]
    if name == "lineart_anime":    # pix2pix's 8 halvings: the 64 × 128 canvas ran enlarged to 256 × 256
        assert inputs == [(1, 3, 256, 256)]


def test_post_processing_of_synthetic_outputs():
    # lineart: paper in 0..1 → 255 − trunc(255 · paper), out-of-range values clipped
    paper = np.array([[0.0, 0.25, 0.5, 1.0, 1.7, -0.3]], np.float32)
    assert lineart.ink_map(paper).tolist() == [[255, 192, 128, 0, 0, 255]]
    # manga line: paper in 0..255 → 255 − paper, clipped, truncated
    paper = np.array([[0.0, 55.0, 254.6, 300.0, -10.0]], np.float32)
    assert manga_line.ink_map(paper).tolist() == [[255, 200, 0, 0, 255]]
    # lineart_anime: paper at the enlarged size, brought back by cubic resize, then inverted
    paper = np.full((256, 256), 127.5, np.float32)
    paper[:, 128:] = 300.0
    out = lineart_anime.ink_map(paper, 128, 64)
    assert out.shape == (64, 128) and out.dtype == np.uint8
    assert set(np.unique(out[:, :60]).tolist()) == {128} and set(np.unique(out[:, 68:]).tolist()) == {0}


def test_a_missing_file_is_named_before_anything_runs(tmp_path):
    empty = AnnotatorStore([tmp_path], tmp_path, allow_download=False)
    for label, filename in (("lineart_realistic", "sk_model.pth"), ("lineart_coarse", "sk_model2.pth"),
                            ("lineart_anime", "netG.pth"), ("lineart_anime_denoise", "erika.pth")):
        with pytest.raises(AnnotatorMissing, match=filename):
            preprocessors.get(label).run(photo(), 64, 0.5, 0.5, store=empty)
