"""Textual-inversion embeddings: the files A1111 reads, the per-model loaded/skipped split, the vectors reaching the
text encoder (equal to a token whose embedding row holds them), n vectors taking n positions, TI hashes, rescans."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from modules import processing
from modules.engine import conditioning, prompt_chunks
from modules.engine.params import GenerationParams
from modules.networks.textual_inversion import EmbeddingDatabase
from tests.support.engine_helpers import load_tiny

WIDTH = 32          # the tiny SD1 text encoder
XL_WIDTHS = (32, 64)  # the tiny SDXL pair (clip_l, clip_g)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("ti"), "sd1", seed=3)


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("ti_xl"), "sdxl", seed=4)


def a1111_pt(path, vectors, **extra):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "inside-the-file",
                **extra}, path)


def database(folder, model) -> EmbeddingDatabase:
    db = EmbeddingDatabase([folder])
    db.set_model(model)
    return db


def ctx(model, text, embeddings=None):
    return conditioning.encode_text(model, text, embeddings=embeddings).context


def single_tokens(tokenizer, *words):
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids), ids
    return [i[0] for i in ids]


def with_rows(encoder, rows: dict[int, torch.Tensor]):
    """Sets token-embedding rows by hand; returns a function that puts them back."""
    weight = encoder.get_input_embeddings().weight
    saved = {i: weight.data[i].clone() for i in rows}
    for i, v in rows.items():
        weight.data[i] = v.to(weight.dtype)

    def restore():
        for i, v in saved.items():
            weight.data[i] = v
    return restore


def test_vectors_reach_the_text_encoder_as_a_token_row_would(model, tmp_path):
    vectors = torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(0))
    a1111_pt(tmp_path / "zzfancy.pt", vectors, step=7)
    db = database(tmp_path, model)
    job = db.for_job(model)
    assert set(job.vectors) == {"zzfancy"}  # the file name, not the name stored inside (A1111)
    plain = ctx(model, "a zzfancy cat")
    with_embedding = ctx(model, "a zzfancy cat", job.vectors)
    assert not torch.allclose(plain, with_embedding)
    dog, car = single_tokens(model.tokenizers[0], "dog", "car")
    restore = with_rows(model.text_encoders[0], {dog: vectors[0], car: vectors[1]})
    try:
        by_hand = ctx(model, "a dog car cat")
    finally:
        restore()
    assert torch.equal(with_embedding, by_hand)
    # emphasis applies to the embedding's vectors like to any token
    assert torch.equal(ctx(model, "a (zzfancy:1.3) cat", job.vectors), _weighted(model, "a (dog car:1.3) cat",
                                                                                  {dog: vectors[0], car: vectors[1]}))


def _weighted(model, text, rows):
    restore = with_rows(model.text_encoders[0], rows)
    try:
        return ctx(model, text)
    finally:
        restore()


def test_a_multi_vector_embedding_takes_its_positions_and_counts_them(model, tmp_path):
    a1111_pt(tmp_path / "zzthree.pt", torch.randn(3, WIDTH))
    db = database(tmp_path, model)
    tok = model.tokenizers[0]
    index = conditioning.embedding_lookup(tok, WIDTH, db.for_job(model).vectors)
    (chunk,) = prompt_chunks.tokenize_weighted(tok, [("a zzthree cat", 1.0)], index)
    assert chunk.length == 5 and [f.offset for f in chunk.fixes] == [1]   # a, 3 vectors, cat
    name_tokens = len(tok("zzthree", add_special_tokens=False)["input_ids"])
    assert name_tokens != 3
    assert prompt_chunks.token_count(tok, "a zzthree cat")[0] == 2 + name_tokens
    counted = db.token_counter_lookup(model)
    assert prompt_chunks.token_count(tok, "a zzthree cat", find_embedding=counted) == (5, 75)
    # 73 plain tokens + 3 vectors do not fit in one chunk: the embedding moves whole into the next one
    long = "cat " * 73 + "zzthree"
    assert prompt_chunks.token_count(tok, long, find_embedding=counted) == (78, 150)


def test_each_file_format_and_what_is_skipped(model, tmp_path, caplog):
    folder = tmp_path / "embeddings"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    a1111_pt(folder / "pt_emb.pt", torch.randn(2, WIDTH), step=11, sd_checkpoint="abcdef12",
             sd_checkpoint_name="base")
    torch.save({"<concept>": torch.randn(WIDTH)}, folder / "sub" / "bin_emb.bin")          # diffusers concept
    save_file({"emb_params": torch.randn(4, WIDTH)}, folder / "st_emb.safetensors")
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, folder / "xl_emb.safetensors")
    a1111_pt(folder / "wide.pt", torch.randn(1, 48))                                          # wrong width
    a1111_pt(folder / ".hidden" / "secret.pt", torch.randn(1, WIDTH))
    (folder / "broken.pt").write_bytes(b"not a pickle at all")
    (folder / "empty.pt").write_bytes(b"")
    save_file({"a": torch.randn(1, WIDTH), "b": torch.randn(1, WIDTH)}, folder / "two.safetensors")
    _png_embedding(folder / "card.png", "png_emb", torch.randn(2, WIDTH))
    Image.new("RGB", (8, 8)).save(folder / "pt_emb.preview.png")
    Image.new("RGB", (8, 8)).save(folder / "just_a_picture.png")

    db = database(folder, model)
    described = db.describe()
    assert set(described["loaded"]) == {"pt_emb", "bin_emb", "st_emb", "png_emb"}
    assert set(described["skipped"]) == {"xl_emb", "wide"}
    assert described["loaded"]["pt_emb"] == {"step": 11, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "base",
                                             "shape": WIDTH, "vectors": 2}
    assert described["loaded"]["bin_emb"]["vectors"] == 1 and described["loaded"]["st_emb"]["vectors"] == 4
    assert described["skipped"]["xl_emb"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                              "shape": 768 + 1280, "vectors": 2}
    assert described["skipped"]["wide"]["shape"] == 48
    # broken files are reported with the file's name and skipped; nothing else stops
    assert set(map(os.path.basename, db.errors)) == {"broken.pt", "two.safetensors"}
    assert "exactly one tensor" in db.errors[str(folder / "two.safetensors")]
    assert "broken.pt" in caplog.text
    assert list(db.word_embeddings) == sorted(db.word_embeddings, key=str.lower)
    assert db.word_embeddings["pt_emb"].filename == str(folder / "pt_emb.pt")


def _png_embedding(path, name, vectors):
    """An A1111 image embedding: its data as base64 JSON in the sd-ti-embedding text chunk."""
    data = {"string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}}, "name": name, "step": 3}
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)


def _hidden(picture: Image.Image, data: dict) -> Image.Image:
    """A1111's pixel embedding, written from its description: zlib-compressed JSON split into low and high nibbles,
    each band XOR-masked with the LCG's low bits, left band | black column | picture | black column | right band.
    The high nibbles of the bands carry a pattern (A1111 draws dots there) that reading must ignore."""
    raw = np.frombuffer(zlib.compress(json.dumps(data).encode(), 9), np.uint8)
    h = picture.height
    size = len(raw) + (h - len(raw) % h)
    size += h * 3 - size % (h * 3)
    seq, seed = [], 0
    for _ in range(size):
        seed = (1664525 * seed + 1013904223) % 2 ** 32
        seq.append((seed % 255) & 0x0F)
    mask = np.array(seq, np.uint8).reshape(h, -1, 3)
    pattern = (np.arange(size).reshape(h, -1, 3) % 7 + 1).astype(np.uint8) << 4
    low = (np.resize(raw & 0x0F, size).reshape(h, -1, 3) ^ mask) | pattern
    high = (np.resize(raw >> 4, size).reshape(h, -1, 3) ^ mask) | pattern
    black = np.zeros((h, 1, 3), np.uint8)
    return Image.fromarray(np.concatenate([low, black, np.asarray(picture.convert("RGB")), black, high], axis=1))


def test_embeddings_hidden_in_png_and_webp_pixels(model, tmp_path):
    vectors = torch.randn(2, WIDTH)
    data = {"string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}}, "name": "hidden_emb", "step": 9}
    picture = Image.fromarray((np.indices((24, 20)).sum(0)[..., None] * [9, 5, 3] % 200 + 30).astype(np.uint8))
    _hidden(picture, data).save(tmp_path / "card.png")
    _hidden(picture, {**data, "name": "webp_emb"}).save(tmp_path / "card2.webp", lossless=True)
    picture.save(tmp_path / "photo.png")                                      # no embedding: not listed, no error
    db = database(tmp_path, model)
    assert set(db.word_embeddings) == {"hidden_emb", "webp_emb"} and db.errors == {}
    assert torch.allclose(db.word_embeddings["hidden_emb"].vec, vectors) and db.word_embeddings["hidden_emb"].step == 9
    assert torch.allclose(db.word_embeddings["webp_emb"].vec, vectors)


def test_a_malicious_pickle_is_refused(model, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"string_to_param": {"*": Evil()}}, f, protocol=2)
    db = database(tmp_path, model)
    assert not marker.exists() and "evil" not in db.word_embeddings
    assert "refused" in db.errors[str(tmp_path / "evil.pt")]


def test_sdxl_pairs_fit_both_encoders_and_single_widths_are_skipped(xl, tmp_path):
    l_vec, g_vec = torch.randn(2, XL_WIDTHS[0]), torch.randn(2, XL_WIDTHS[1])
    save_file({"clip_l": l_vec, "clip_g": g_vec}, tmp_path / "xlemb.safetensors")
    a1111_pt(tmp_path / "sd1emb.pt", torch.randn(1, XL_WIDTHS[0]))
    db = database(tmp_path, xl)
    assert list(db.word_embeddings) == ["xlemb"] and list(db.skipped_embeddings) == ["sd1emb"]
    assert db.word_embeddings["xlemb"].shape == sum(XL_WIDTHS)
    job = db.for_job(xl)
    with_embedding = ctx(xl, "a xlemb cat", job.vectors)
    dog, car = single_tokens(xl.tokenizers[0], "dog", "car")
    restores = [with_rows(xl.text_encoders[0], {dog: l_vec[0], car: l_vec[1]}),
                with_rows(xl.text_encoders[1], {dog: g_vec[0], car: g_vec[1]})]
    try:
        by_hand = ctx(xl, "a dog car cat")
    finally:
        for restore in restores:
            restore()
    assert torch.equal(with_embedding, by_hand)


def test_switching_models_resorts_loaded_and_skipped(model, xl, tmp_path):
    a1111_pt(tmp_path / "sd1emb.pt", torch.randn(1, WIDTH))
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 64)}, tmp_path / "xlemb.safetensors")
    db = database(tmp_path, model)
    assert list(db.word_embeddings) == ["sd1emb"]
    assert set(db.for_job(xl).vectors) == {"xlemb"} and list(db.skipped_embeddings) == ["sd1emb"]
    assert set(db.for_job(model).vectors) == {"sd1emb"}
    db.set_model(None)  # the checkpoint unloaded: the last split stays (not "everything fits")
    assert list(db.word_embeddings) == ["sd1emb"] and list(db.skipped_embeddings) == ["xlemb"]


def test_rescans_when_the_folder_changes_and_on_refresh(model, tmp_path):
    a1111_pt(tmp_path / "first.pt", torch.randn(1, WIDTH))
    db = database(tmp_path, model)
    version = db.version
    assert set(db.for_job(model).vectors) == {"first"} and db.version == version  # nothing changed: no rescan
    a1111_pt(tmp_path / "second.pt", torch.randn(1, WIDTH))
    _touch(tmp_path)
    assert set(db.for_job(model).vectors) == {"first", "second"}
    (tmp_path / "first.pt").unlink()
    _touch(tmp_path)
    assert set(db.for_job(model).vectors) == {"second"}
    # a file rewritten in place does not change the folder: refresh (force) reads it again
    a1111_pt(tmp_path / "second.pt", torch.randn(3, WIDTH))
    assert db.for_job(model).vectors["second"].shape[0] == 1
    db.load_textual_inversion_embeddings(force_reload=True)
    assert db.for_job(model).vectors["second"].shape[0] == 3
    # a new subfolder is seen too
    (tmp_path / "more").mkdir()
    a1111_pt(tmp_path / "more" / "third.pt", torch.randn(1, WIDTH))
    _touch(tmp_path / "more")
    assert "third" in db.for_job(model).vectors


def _touch(folder):
    """Folder mtimes can be coarse: move it forward explicitly, as a later change would."""
    later = time.time() + 5 + np.random.rand()
    os.utime(folder, (later, later))


def test_ti_hashes_name_only_the_embeddings_used(model, tmp_path):
    for name in ("used_pos", "used_neg", "unused"):
        a1111_pt(tmp_path / f"{name}.pt", torch.randn(1, WIDTH))
    db = database(tmp_path, model)

    def infotext(prompt, negative, hashes=True):
        params = GenerationParams(prompt=prompt, negative_prompt=negative, steps=2, width=32, height=32, seed=1,
                                  sampler_name="Euler")
        return processing.process(model, params, embeddings=db.for_job(model, hashes)).infotexts[0]

    short = {n: hashlib.sha256((tmp_path / f"{n}.pt").read_bytes()).hexdigest()[:12] for n in ("used_pos",
                                                                                              "used_neg")}
    text = infotext("a used_pos cat", "used_neg, blurry")
    assert f'TI hashes: "used_pos: {short["used_pos"]}, used_neg: {short["used_neg"]}"' in text
    assert "unused" not in text
    assert "TI hashes" not in infotext("a cat", "blurry")
    assert "TI hashes" not in infotext("a used_pos cat", "", hashes=False)


def test_a_thousand_embeddings_index_cheaply(model):
    """The names are tokenized once per tokenizer; a job's lookup is built from that cache."""
    vectors = {f"zzname{i}": torch.randn(1, WIDTH) for i in range(1000)}
    tok = model.tokenizers[0]
    conditioning.embedding_lookup(tok, WIDTH, vectors)
    calls = []
    original = type(tok).__call__

    def counting(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("text"))
        return original(self, *args, **kwargs)
    type(tok).__call__ = counting
    try:
        index = conditioning.embedding_lookup(tok, WIDTH, vectors)
    finally:
        type(tok).__call__ = original
    assert calls == [] and index is not None
    ids = tok("zzname517", add_special_tokens=False)["input_ids"]
    found = index(ids, 0)
    assert found is not None and found[0] is not None and torch.equal(found[0], vectors["zzname517"])
