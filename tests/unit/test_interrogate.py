"""Interrogate CLIP (BLIP caption + CLIP ranking over category lists) and DeepBooru, on tiny random-weight files in
the real layouts (tests/support/interrogate_factory.py): key conversions checked against the transformers models the
files were made from, the text A1111 builds, loading without running code, downloads and the offline error."""
from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from modules.interrogate import blip, categories, clip_model, deepbooru, service, weights
from modules.interrogate.deepdanbooru_net import DeepDanbooruNet
from modules.models import safe_load, torchscript_tensors
from modules.models.loader import tokenizer
from tests.support import interrogate_factory as factory
from tests.support.download_server import server  # noqa: F401 (fixture)

TAGS = ["1girl", "solo", "rating:safe", "smile_(happy)", "long_hair", "blue_sky"]


def picture(w: int = 48, h: int = 40) -> Image.Image:
    import numpy as np
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xx * 5 % 256, yy * 6 % 256, (xx + yy) * 3 % 256], -1).astype("uint8"))


def settings(**values):
    return lambda key, default=None: values.get(key, default)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrogate")
    models = root / "models"
    made = {
        "blip": factory.write_blip(models / "BLIP" / "model_base_caption_capfilt_large.pth"),
        "clip": factory.write_clip(models / "CLIP" / "ViT-L-14.pt"),
        "dd": factory.write_deepdanbooru(models / "torch_deepdanbooru" / "model-resnet_custom_v3.pt", TAGS),
    }
    lists = dict(factory.CATEGORIES)
    lists["flavors.top2"] = lists.pop("flavors")
    factory.write_categories(root / "interrogate", lists)
    return root, made


def make_interrogator(root: Path, allow_download: bool = False) -> service.Interrogator:
    return service.Interrogator(weights.default_places(root / "models"), root / "interrogate",
                                root / "cache" / "clip-tokenizer", allow_download=allow_download)


# --- DeepDanbooru ------------------------------------------------------------------------------------------------
def test_deepdanbooru_network_has_the_ported_files_layout():
    with torch.device("meta"):
        net = DeepDanbooruNet(9176)
    sd = net.state_dict()
    assert sorted(sd) == sorted([f"n_Conv_{i}.weight" for i in range(179)] +
                                [f"n_Conv_{i}.bias" for i in range(178)])
    shapes = {1: (256, 64, 1, 1), 11: (512, 256, 1, 1), 13: (128, 128, 3, 3), 36: (1024, 512, 1, 1),
              97: (256, 1024, 1, 1), 98: (256, 256, 3, 3), 100: (1024, 1024, 1, 1), 158: (2048, 1024, 1, 1),
              168: (4096, 2048, 1, 1), 178: (9176, 4096, 1, 1)}
    for i, shape in shapes.items():
        assert tuple(sd[f"n_Conv_{i}.weight"].shape) == shape, i
    strided = {i for i in range(179) if getattr(net, f"n_Conv_{i}").stride == (2, 2)}
    assert strided == {0, 11, 13, 36, 38, 98, 100, 158, 160, 168, 170}


def test_deepbooru_tags_follow_a1111s_settings(files):
    root, made = files
    path = root / "models" / "torch_deepdanbooru" / "model-resnet_custom_v3.pt"
    net = deepbooru.load(path)
    assert net.tags == TAGS
    probs = deepbooru.probabilities(net, picture())
    with torch.no_grad():   # the file's network, run directly, gives the same numbers
        import numpy as np
        from modules.engine.image_ops import resize_image
        x = torch.from_numpy(np.asarray(resize_image(2, picture(), 512, 512), dtype="float32")[None] / 255)
        direct = made["dd"](x)[0]
    assert torch.allclose(torch.tensor([probs[t] for t in TAGS]), direct, atol=1e-6)

    out = make_interrogator(root).interrogate(picture(), "deepdanbooru",
                                              settings(interrogate_deepbooru_score_threshold=0.0))
    assert out == "1girl, blue sky, long hair, smile \\(happy\\), solo"   # sorted, spaces, escaped, no rating


def test_format_tags_table():
    probs = {"b_tag": 0.9, "a_(x)": 0.6, "rating:general": 0.99, "low": 0.2, "c": 0.7}
    assert deepbooru.format_tags(probs) == "a \\(x\\), b tag, c"
    assert deepbooru.format_tags(probs, sort_alpha=False) == "b tag, c, a \\(x\\)"
    assert deepbooru.format_tags(probs, use_spaces=False, escape=False) == "a_(x), b_tag, c"
    assert deepbooru.format_tags(probs, threshold=0.65) == "b tag, c"
    assert deepbooru.format_tags(probs, filter_tags="b tag, c") == "a \\(x\\)"
    assert deepbooru.format_tags(probs, include_ranks=True, threshold=0.8) == "(b tag:0.900)"


def test_deepbooru_file_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    path = tmp_path / "model-resnet_custom_v3.pt"
    torch.save({"n_Conv_0.weight": torch.zeros(1), "tags": Evil()}, path)
    with pytest.raises(safe_load.ModelFileError, match="refused"):
        deepbooru.load(path)


# --- CLIP interrogator -------------------------------------------------------------------------------------------
def test_blip_file_gives_the_original_models_caption(files):
    root, made = files
    cap = blip.BlipCaptioner(root / "models" / "BLIP" / "model_base_caption_capfilt_large.pth")
    tok = blip.tokenizer()
    assert tok("a picture of ").input_ids == [101, 1037, 3861, 1997, 102]
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    text = cap.caption(picture(), num_beams=2, min_length=5, max_length=12)
    ids = tok("a picture of ", return_tensors="pt").input_ids
    ref = made["blip"].generate(pixel_values=cap.pixels(picture()), input_ids=ids, num_beams=2, do_sample=False,
                                min_length=5, max_length=12)
    assert text == tok.decode(ref[0], skip_special_tokens=True)[len("a picture of "):]
    assert text.strip()


@pytest.mark.parametrize("torchscript", [True, False])
def test_openai_clip_file_gives_the_original_models_features(tmp_path, torchscript):
    original = factory.write_clip(tmp_path / "ViT-L-14.pt", seed=3, torchscript=torchscript)
    assert torchscript_tensors.is_torchscript(tmp_path / "ViT-L-14.pt") == torchscript
    ranker = clip_model.ClipRanker(tmp_path / "ViT-L-14.pt", tokenizer(tmp_path / "tok", "<|endoftext|>"))
    feats = ranker.image_features(picture())
    with torch.no_grad():
        ref = original.get_image_features(pixel_values=ranker.pixels(picture()))
        ref = getattr(ref, "pooler_output", ref)
        ids = ranker.tokenizer(["a red fox"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        text_ref = original.get_text_features(input_ids=ids)
        text_ref = getattr(text_ref, "pooler_output", text_ref)
    assert torch.allclose(feats, ref / ref.norm(dim=-1, keepdim=True), atol=1e-5)
    ranked = ranker.rank(feats, ["a red fox", "a blue car", "neon"], 3)
    expected = (100 * ref / ref.norm(dim=-1, keepdim=True) @ (text_ref / text_ref.norm(dim=-1, keepdim=True)).T)
    assert [name for name, _ in ranked][0] in ("a red fox", "a blue car", "neon")
    assert abs(sum(score for _, score in ranked) - 100) < 1e-3   # softmax over the lines, in percent
    assert ranked == sorted(ranked, key=lambda r: -r[1]) and expected.shape == (1, 1)


def test_clip_interrogate_builds_a1111s_text(files):
    root, _ = files
    interrogator = make_interrogator(root)
    opts = dict(interrogate_clip_min_length=5, interrogate_clip_max_length=12)
    text = interrogator.interrogate(picture(), "clip", settings(**opts))
    cap = blip.BlipCaptioner(root / "models" / "BLIP" / "model_base_caption_capfilt_large.pth")
    caption = cap.caption(picture(), min_length=5, max_length=12)
    assert text.startswith(caption + ", ")
    parts = text[len(caption) + 2:].split(", ")
    # sorted categories: artists (1), flavors.top2 (2), mediums (1), movements (1)
    assert len(parts) == 5
    assert parts[0] in factory.CATEGORIES["artists"]
    assert set(parts[1:3]) <= set(factory.CATEGORIES["flavors"]) and parts[1] != parts[2]
    assert parts[3] in factory.CATEGORIES["mediums"] and parts[4] in factory.CATEGORIES["movements"]
    assert interrogator._blip is None and interrogator._clip is None   # unloaded after use

    ranked = interrogator.interrogate(picture(), "clip", settings(
        **opts, interrogate_return_ranks=True, interrogate_clip_skip_categories=["artists", "flavors.top2"],
        interrogate_keep_models_in_memory=True))
    tail = ranked[len(caption) + 2:].split(", ")
    assert len(tail) == 2 and all(t.startswith("(") and t.endswith(")") and ":" in t for t in tail)
    assert tail[0][1:].rsplit(":", 1)[0] in factory.CATEGORIES["mediums"]
    assert interrogator._clip is not None   # kept with interrogate_keep_models_in_memory


def test_unknown_model_names_the_allowed_ones(files):
    with pytest.raises(ValueError, match="allowed: clip, deepdanbooru"):
        make_interrogator(files[0]).interrogate(picture(), "wd14", settings())


def test_torchscript_reader_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    assert torchscript_tensors.is_torchscript(path)
    with pytest.raises(safe_load.ModelFileError, match=r"refused global \w+\.print"):
        torchscript_tensors.load_torchscript_tensors(path)


# --- files: offline and downloads --------------------------------------------------------------------------------
def test_offline_error_names_file_url_and_folder(tmp_path):
    interrogator = make_interrogator(tmp_path, allow_download=True)
    closed = "http://127.0.0.1:9/"   # nothing listens on the discard port
    for place in interrogator.places.values():
        place.file = weights.WeightFile(place.file.label, place.file.filename, closed + place.file.filename,
                                        place.file.suffixes)
    with pytest.raises(weights.WeightsMissing) as err:
        interrogator.interrogate(picture(), "deepdanbooru", settings())
    message = str(err.value)
    assert "model-resnet_custom_v3.pt" in message and str(tmp_path / "models" / "torch_deepdanbooru") in message
    assert "download failed" in message and closed in message
    with pytest.raises(weights.WeightsMissing, match="model_base_caption_capfilt_large.pth.*models/BLIP"):
        interrogator.interrogate(picture(), "clip", settings())
    assert not list((tmp_path / "models").rglob("*.pth"))
    off = make_interrogator(tmp_path, allow_download=False)
    with pytest.raises(weights.WeightsMissing, match="downloads are turned off"):
        off.interrogate(picture(), "deepdanbooru", settings())


def test_a1111_folders_accept_other_file_names(tmp_path):
    folder = tmp_path / "models" / "BLIP"
    folder.mkdir(parents=True)
    (folder / "my_blip.pth").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    assert weights.default_places(tmp_path / "models")["blip"].find() == folder / "my_blip.pth"
    clip = weights.default_places(tmp_path / "models", str(tmp_path / "clipdir"))["clip"]
    assert clip.download_dir == tmp_path / "clipdir" and clip.find() is None   # only ViT-L-14.pt counts


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> bytes:
    """What the local server sends as /file.bin: a tiny DeepDanbooru file."""
    path = tmp_path_factory.mktemp("dd-download") / "model.pt"
    factory.write_deepdanbooru(path, TAGS, seed=5)
    return path.read_bytes()


def test_deepdanbooru_downloaded_on_first_use(tmp_path, server, payload):  # noqa: F811
    interrogator = make_interrogator(tmp_path, allow_download=True)
    place = interrogator.places["deepdanbooru"]
    place.file = weights.WeightFile(place.file.label, place.file.filename, server.url("/file.bin"),
                                    place.file.suffixes, hashlib.sha256(payload).hexdigest())
    text = interrogator.interrogate(picture(), "deepdanbooru", settings(interrogate_deepbooru_score_threshold=0))
    target = tmp_path / "models" / "torch_deepdanbooru" / "model-resnet_custom_v3.pt"
    assert target.read_bytes() == payload and not target.with_name(target.name + ".part").exists()
    assert text == "1girl, blue sky, long hair, smile \\(happy\\), solo"
    assert [r["path"] for r in server.requests] == ["/file.bin"]
    interrogator.interrogate(picture(), "deepdanbooru", settings())
    assert len(server.requests) == 1   # found on disk the second time

    bad = make_interrogator(tmp_path / "bad", allow_download=True)
    place = bad.places["deepdanbooru"]
    place.file = weights.WeightFile(place.file.label, place.file.filename, server.url("/file.bin"),
                                    place.file.suffixes, "0" * 64)
    with pytest.raises(weights.WeightsMissing, match="sha256 mismatch"):
        bad.interrogate(picture(), "deepdanbooru", settings())


def test_category_lists_downloaded_when_the_folder_is_missing(tmp_path):
    import functools
    import http.server
    import threading
    source = factory.write_categories(tmp_path / "upstream")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        folder = categories.ensure(tmp_path / "interrogate", f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert categories.category_types(folder) == ["artists", "flavors", "mediums", "movements"]
    assert categories.load(folder, ["artists"])[0].items == factory.CATEGORIES["flavors"]
    assert not (tmp_path / "interrogate_tmp").exists()
    with pytest.raises(weights.WeightsMissing, match="artists.txt.*interrogate2"):
        categories.ensure(tmp_path / "interrogate2", "http://127.0.0.1:9/")
    assert not (tmp_path / "interrogate2").exists() and not (tmp_path / "interrogate2_tmp").exists()
