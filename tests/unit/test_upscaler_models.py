"""Upscaler models through spandrel (modules/models/upscaler_models.py, upscale_tiles.py): tiny random-weight files in
the real key layouts (tests/support/upscaler_factory.py) are detected, upscale by their real scale, give the same
image tiled as untiled, are listed under A1111's names, and a download-list entry is downloaded (through the GitHub
mirror setting, from a loopback server) or, offline, refused with an error naming the file, URL and folder."""
from __future__ import annotations

import hashlib
import http.server
import sys
import threading
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import net_policy, upscaler
from modules.engine import extras
from modules.engine.params import ParamError
from modules.models import spandrel_models, upscale_tiles, upscaler_models
from modules.models.upscaler_models import JobUpscalers, UpscalerModelMissing, UpscalerModels
from tests.support import upscaler_factory as factory


def picture(w: int = 36, h: int = 28, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
    noise = rng.integers(0, 60, (h, w, 3))
    return Image.fromarray(np.clip(base * 0.7 + noise, 0, 255).astype(np.uint8), "RGB")


def settings(**values):
    return lambda key, default=None: values.get(key, default)


# (factory kind, folder, file name, expected architecture, scale)
CASES = [
    ("esrgan", "ESRGAN", "old_esrgan.pth", "ESRGAN", 4),
    ("realesrgan", "RealESRGAN", "my_x4plus.pth", "ESRGAN", 4),
    ("compact", "RealESRGAN", "my_compact.pth", "RealESRGAN Compact", 4),
    ("swinir", "SwinIR", "my_swinir.pth", "SwinIR", 2),
    ("dat", "DAT", "my_dat.pth", "DAT", 2),
    ("hat", "HAT", "my_hat.safetensors", "HAT", 2),
]
TILE_KEYS = {"ESRGAN": "ESRGAN_tile", "RealESRGAN": "ESRGAN_tile", "SwinIR": "SWIN_tile", "DAT": "DAT_tile",
             "HAT": "HAT_tile"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("upscalers") / "models"
    for kind, folder, name, _arch, _scale in CASES:
        factory.write(root / folder / name, kind)
    return root


def test_spandrel_is_imported_without_torchvision():
    spandrel = spandrel_models.import_spandrel(extra_arches=True)
    assert "torchvision" not in sys.modules
    assert "ESRGAN" in spandrel.MAIN_REGISTRY and "CodeFormer" in spandrel.MAIN_REGISTRY


def test_real_esrgan_file_keeps_basicsr_key_names(models_dir):
    sd = torch.load(models_dir / "RealESRGAN" / "my_x4plus.pth", weights_only=True)
    keys = set(sd["params_ema"])
    assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight",
            "conv_up2.weight", "conv_hr.weight", "conv_last.weight"} <= keys
    old = torch.load(models_dir / "ESRGAN" / "old_esrgan.pth", weights_only=True)
    assert {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.3.weight", "model.10.weight"} <= set(old)
    compact = torch.load(models_dir / "RealESRGAN" / "my_compact.pth", weights_only=True)["params"]
    assert "body.0.weight" in compact and compact["body.1.weight"].ndim == 1   # PReLU after the first conv


@pytest.mark.parametrize("kind,folder,name,arch,scale", CASES, ids=[c[0] for c in CASES])
def test_detected_and_upscaled_by_the_real_scale(models_dir, kind, folder, name, arch, scale):
    catalogue = UpscalerModels(models_dir)
    model = catalogue.find(Path(name).stem)
    assert model is not None and model.family.name == folder and model.scale == scale
    assert catalogue._descriptor(model.path).architecture.name == arch
    image = picture()
    out = catalogue.upscale_once(model, image, settings(**{TILE_KEYS[folder]: 0}))
    assert out.size == (image.width * scale, image.height * scale)
    arr = np.asarray(out, dtype=np.float32)
    assert arr.std() > 5, "the tiny model should not give a flat image"


@pytest.mark.parametrize("kind,folder,name,arch,scale", CASES, ids=[c[0] for c in CASES])
def test_tiled_equals_untiled(models_dir, kind, folder, name, arch, scale):
    catalogue = UpscalerModels(models_dir)
    model = catalogue.find(Path(name).stem)
    image = picture(40, 36, seed=1)
    key = TILE_KEYS[folder]
    whole = np.asarray(catalogue.upscale_once(model, image, settings(**{key: 0})), dtype=np.int16)
    tiled = np.asarray(catalogue.upscale_once(model, image, settings(**{key: 16, key + "_overlap": 24})),
                       dtype=np.int16)
    diff = np.abs(whole - tiled)
    # convolutional models: exact up to rounding; window-attention ones (SwinIR, DAT, HAT) pad each tile to
    # their window size, which moves a few values slightly
    convolutional = arch in ("ESRGAN", "RealESRGAN Compact")
    assert diff.max() <= (1 if convolutional else 8), diff.max()
    assert diff.mean() < (0.05 if convolutional else 0.5), diff.mean()
    # a small overlap leaves visible seams with a deep model: the setting matters
    seams = np.asarray(catalogue.upscale_once(model, image, settings(**{key: 16, key + "_overlap": 0})),
                       dtype=np.int16)
    assert np.abs(whole - seams).max() > diff.max()


def test_tiles_are_blended_with_complementary_ramps():
    """A model that is the identity (scale 1) must come back unchanged from any tiling: the weights sum to 1."""
    image = torch.rand(1, 3, 37, 53)
    for tile, overlap in ((8, 0), (8, 5), (16, 8), (10, 30)):
        out = upscale_tiles.run_tiled(lambda x: x.clone(), image, 1, tile, overlap)
        assert torch.allclose(out, image, atol=1e-6), (tile, overlap)
    doubled = upscale_tiles.run_tiled(lambda x: x.repeat_interleave(2, 2).repeat_interleave(2, 3), image, 2, 8, 4)
    assert torch.allclose(doubled, image.repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-6)


def test_list_names_flags_and_a_new_file(tmp_path, models_dir):
    flag_dir = tmp_path / "elsewhere"
    factory.write(flag_dir / "flagged.pth", "compact", scale=2)
    catalogue = UpscalerModels(models_dir, Namespace(realesrgan_models_path=str(flag_dir)))
    names = catalogue.names()
    # the download list first (A1111's names, the offered ones), then the files by stem
    assert names[:1] == ["ESRGAN_4x"] and "old_esrgan" in names
    assert {"R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"} <= set(names) and "R-ESRGAN 2x+" not in names
    assert {"DAT x2", "DAT x3", "DAT x4", "SwinIR 4x", "ScuNET GAN", "ScuNET PSNR"} <= set(names)
    assert {"flagged", "my_x4plus", "my_compact", "my_swinir", "my_dat", "my_hat"} <= set(names)
    flagged = catalogue.find("flagged")
    assert flagged.scale == 2 and flagged.path == flag_dir / "flagged.pth"
    assert catalogue.folder(flagged.family) == flag_dir   # downloads go to the flag's folder
    assert "R-ESRGAN 2x+" in catalogue.names(settings(realesrgan_enabled_models=["R-ESRGAN 2x+"]))
    # a file added while running is listed at the next listing; a downloaded one takes its entry's name
    factory.write(models_dir / "DAT" / "DAT_x3.pth", "dat", scale=3)
    try:
        dat3 = catalogue.find("DAT x3")
        assert dat3.path == models_dir / "DAT" / "DAT_x3.pth" and dat3.scale == 3
        assert catalogue.find("DAT_x3") is not None and "DAT_x3" not in catalogue.names()
    finally:
        (models_dir / "DAT" / "DAT_x3.pth").unlink()
    assert catalogue.find("DAT x3").path is None
    # the download entry's file in another format is that entry (not hidden behind it, not downloaded again)
    factory.write(models_dir / "ESRGAN" / "ESRGAN_4x.safetensors", "esrgan")
    try:
        assert catalogue.find("ESRGAN_4x").path == models_dir / "ESRGAN" / "ESRGAN_4x.safetensors"
        assert catalogue.names().count("ESRGAN_4x") == 1
    finally:
        (models_dir / "ESRGAN" / "ESRGAN_4x.safetensors").unlink()


def test_a1111_upscaler_api_and_extras(models_dir):
    catalogue = UpscalerModels(models_dir)
    scalers = upscaler.model_upscalers(catalogue)
    data = next(s for s in scalers if s.name == "my_compact")
    assert data.scaler.name == "RealESRGAN" and data.scale == 4 and data.data_path.endswith("my_compact.pth")
    image = picture(24, 20)
    out = data.scaler.upscale(image, 2.0, data.data_path)   # A1111's call (SD upscale): one pass, then resized
    assert out.size == (48, 40)
    jobs = JobUpscalers(catalogue, settings())
    blended = extras.upscale(image, upscaler_1="my_compact", upscaler_2="Lanczos", visibility_2=0.5, scale=3,
                             models=jobs)
    alone = extras.upscale(image, upscaler_1="my_compact", scale=3, models=jobs)
    lanczos = image.resize((72, 60), Image.Resampling.LANCZOS)
    assert blended.size == alone.size == (72, 60)
    expected = (np.asarray(alone, np.float32) + np.asarray(lanczos, np.float32)) / 2
    assert np.abs(np.asarray(blended, np.float32) - expected).max() <= 1
    to = extras.upscale(image, upscaler_1="my_swinir", resize_mode=1, width=50, height=30, crop=True, models=jobs)
    assert to.size == (50, 30)
    with pytest.raises(ParamError, match=r"upscaler_2: unknown upscaler 'nope'.*my_compact"):
        extras.upscale(image, upscaler_1="Lanczos", upscaler_2="nope", visibility_2=1, models=jobs)


def test_not_an_upscaler_file_is_refused_with_its_name(tmp_path):
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    torch.save({"foo.weight": torch.zeros(3, 3)}, folder / "junk.pth")
    catalogue = UpscalerModels(tmp_path / "models")
    junk = catalogue.find("junk")
    assert junk is not None
    with pytest.raises(Exception, match=r"junk\.pth.*no architecture"):
        catalogue.upscale_once(junk, picture())


# --- downloads ---------------------------------------------------------------------------------------------------
class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror(monkeypatch):
    """A loopback server standing in for github.com through the --github-mirror rewrite (PREFIX + URL)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(net_policy, "_github_mirror", None)
    _Files.prefix = f"http://127.0.0.1:{srv.server_address[1]}/"
    monkeypatch.setenv("GITHUB_MIRROR", _Files.prefix)
    _Files.files, _Files.seen = {}, []
    try:
        yield _Files
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_chosen_download_entry_is_downloaded_into_its_folder(tmp_path, mirror):
    tiny = factory.write(tmp_path / "src" / "ESRGAN.pth", "esrgan").read_bytes()
    mirror.files["/https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth"] = tiny
    catalogue = UpscalerModels(tmp_path / "models")
    entry = catalogue.find("ESRGAN_4x")
    assert entry.path is None and entry.data_path == "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth"
    out = JobUpscalers(catalogue, settings()).upscale(entry, picture(20, 16), 4)
    target = tmp_path / "models" / "ESRGAN" / "ESRGAN_4x.pth"
    assert target.read_bytes() == tiny and out.size == (80, 64)
    assert not target.with_name(target.name + ".part").exists()
    assert catalogue.find("ESRGAN_4x").path == target and "ESRGAN_4x" in catalogue.names()
    JobUpscalers(catalogue, settings()).upscale(catalogue.find("ESRGAN_4x"), picture(20, 16), 4)
    assert len(mirror.seen) == 1   # on disk now: no second download


def test_download_with_a_wrong_checksum_is_thrown_away(tmp_path, mirror, monkeypatch):
    tiny = factory.write(tmp_path / "src" / "x.pth", "dat", scale=2).read_bytes()
    assert hashlib.sha256(tiny).hexdigest() != upscaler_models.FAMILIES[3].downloads[0].sha256
    # DAT files come from huggingface.co: HF_ENDPOINT sends them to the loopback server
    monkeypatch.setenv("HF_ENDPOINT", mirror.prefix + "hf")
    mirror.files["/hf/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x2.pth"] = tiny
    catalogue = UpscalerModels(tmp_path / "models")
    with pytest.raises(UpscalerModelMissing, match=r"DAT_x2\.pth.*download failed.*sha256"):
        catalogue.ensure_file(catalogue.find("DAT x2"))
    assert mirror.seen == ["/hf/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x2.pth"]
    assert not list((tmp_path / "models" / "DAT").glob("DAT_x2.pth*"))


def test_offline_error_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(net_policy, "_github_mirror", None)
    monkeypatch.setenv("GITHUB_MIRROR", "http://127.0.0.1:9/")   # nothing listens on the discard port
    catalogue = UpscalerModels(tmp_path / "models")
    with pytest.raises(UpscalerModelMissing) as err:
        extras.upscale(picture(), upscaler_1="R-ESRGAN 4x+", scale=2, models=JobUpscalers(catalogue, settings()))
    message = str(err.value)
    assert "RealESRGAN_x4plus.pth" in message and str(tmp_path / "models" / "RealESRGAN") in message
    assert "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth" in message
    off = UpscalerModels(tmp_path / "models", allow_download=False)
    with pytest.raises(UpscalerModelMissing, match="downloads are turned off"):
        off.ensure_file(off.find("ScuNET PSNR"))


def test_shared_sd_upscalers_and_resize_image_with_a_model(tmp_path, models_dir, monkeypatch):
    """What extensions and A1111's scripts see: shared.sd_upscalers (built-ins first, then the models, re-read at
    each access) and images.resize_image by an upscaler model's name."""
    from modules import cmd_args, images, shared
    from modules.runtime import Runtime
    rt = Runtime(cmd_args.parse(["--data-dir", str(tmp_path), "--models-dir", str(models_dir), "--no-half"], env={}))
    for name in ("_runtime", "_model_view", "_upscalers", "config_filename", "device", "data_path", "models_path"):
        monkeypatch.setattr(shared, name, getattr(shared, name))
    shared.bind(rt)
    names = [u.name for u in shared.sd_upscalers]
    assert names[:3] == ["None", "Lanczos", "Nearest"] and "my_compact" in names and "R-ESRGAN 4x+" in names
    assert "Upscaling" in {info.section[1] for info in rt.options.info.values() if info.section}
    assert rt.options.ESRGAN_tile == 192 and rt.options.SCUNET_tile == 256
    out = images.resize_image(1, picture(24, 20), 60, 40, upscaler_name="my_compact")
    lanczos = images.resize_image(1, picture(24, 20), 60, 40, upscaler_name="Lanczos")
    assert out.size == lanczos.size == (60, 40)
    assert np.abs(np.asarray(out, np.int16) - np.asarray(lanczos, np.int16)).mean() > 5
    factory.write(models_dir / "HAT" / "added_later.pth", "hat", scale=2)
    try:
        assert "added_later" in [u.name for u in shared.sd_upscalers]
    finally:
        (models_dir / "HAT" / "added_later.pth").unlink()
