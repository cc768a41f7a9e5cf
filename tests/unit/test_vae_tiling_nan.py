"""Tiled VAE (same image within tolerance, no visible seams) and A1111's NaN checks with the VAE's automatic fall-back
to full precision, on real tiny checkpoints loaded by the model manager."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from modules import devices
from modules.devices import DeviceConfig
from modules.engine import tiled_vae, vae_codec
from tests.support.engine_helpers import run
from tests.unit.test_memory_flags import manager

NAN = float("nan")
CPU = torch.device("cpu")

# --- tiling -----------------------------------------------------------------------------------------------------
TILE = 32        # latent pixels per tile (the tiny VAE's own tile would be 16, too small to say anything)
SIZE = 96        # latent side: 3×3 tiles with their overlaps, a 192×192 image


@pytest.fixture(scope="module")
def tiled_model(tmp_path_factory):
    mgr = manager(tmp_path_factory.mktemp("tiles"))
    model = mgr.require()
    model.vae.tile_latent_min_size, model.vae.tile_sample_min_size = TILE, 2 * TILE
    return mgr, model


def decode(mgr, model, latents, tiled: bool) -> torch.Tensor:
    mgr.tiled_vae = tiled          # --tiled-vae; read by the codec at each decode
    try:
        return vae_codec.decode_to_tensor(model, latents)
    finally:
        mgr.tiled_vae = False


def border_ratio(diff: torch.Tensor, period: int) -> float:
    """How much the (tiled − untiled) difference jumps across tile borders, relative to its jumps elsewhere: a seam
    is a step in that difference where one tile's colours meet the next's. 1 means no seam."""
    ratios = []
    for dim in (-1, -2):
        jumps = diff.diff(dim=dim).abs().mean(dim=tuple(d for d in range(diff.dim()) if d != diff.dim() + dim))
        border = [k * period - 1 for k in range(1, jumps.numel() // period + 1)]
        rest = torch.ones_like(jumps, dtype=torch.bool)
        rest[border] = False
        ratios.append(float(jumps[border].mean() / jumps[rest].mean()))
    return max(ratios)


def test_tiled_decode_matches_untiled_without_seams(tiled_model):
    mgr, model = tiled_model
    latents = torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * model.vae.config.scaling_factor
    assert not tiled_vae.should_tile_decode(model.vae, latents, forced=False, free=1 << 40)
    assert tiled_vae.should_tile_decode(model.vae, latents, forced=True)
    whole = decode(mgr, model, latents, tiled=False)
    tiled = decode(mgr, model, latents, tiled=True)
    assert tiled.shape == whole.shape == (1, 3, 2 * SIZE, 2 * SIZE)
    # Each tile's group norms see only that tile, so colours shift a little; on this random VAE by ~3% of the range
    diff = tiled - whole
    assert float(diff.abs().mean()) < 0.04, float(diff.abs().mean())
    # the overlap blend spreads that shift out: no step at the tile borders (every 48 px: 64-px tiles minus overlap)
    step = 2 * TILE - int(2 * TILE * model.vae.tile_overlap_factor)
    assert border_ratio(diff, step) < 1.3
    # the measure sees seams where there are some: tiles decoded separately and put side by side
    z = latents / model.vae.config.scaling_factor
    with torch.no_grad():
        rows = [torch.cat([model.vae.decode(z[..., i:i + TILE, j:j + TILE]).sample for j in range(0, SIZE, TILE)], -1)
                for i in range(0, SIZE, TILE)]
    naive = (torch.cat(rows, -2) / 2 + 0.5).clamp(0, 1)
    assert border_ratio(naive - whole, 2 * TILE) > 1.8


def test_tiled_encode_matches_untiled(tiled_model):
    mgr, model = tiled_model
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (2 * SIZE, 2 * SIZE, 3), dtype=np.uint8))
    whole = vae_codec.images_to_latents(model, [image])
    mgr.tiled_vae = True
    try:
        tiled = vae_codec.images_to_latents(model, [image])
    finally:
        mgr.tiled_vae = False
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().mean()) < 0.1 * float(whole.abs().mean())


def test_decodes_tile_by_themselves_when_memory_is_short(tiled_model, caplog):
    _mgr, model = tiled_model
    caplog.set_level(logging.INFO, "sd.vae")
    latents = torch.zeros(1, 4, SIZE, SIZE)
    need = tiled_vae.decode_bytes(model.vae, SIZE, SIZE)
    assert not tiled_vae.should_tile_decode(model.vae, latents, forced=False, free=need * 2)
    assert tiled_vae.should_tile_decode(model.vae, latents, forced=False, free=need // 2)
    assert "decoding 192x192 in tiles" in caplog.text
    # one tile or less is never tiled, forced or not
    assert not tiled_vae.should_tile_decode(model.vae, latents[..., :TILE, :TILE], forced=True, free=0)


# --- NaN checks -------------------------------------------------------------------------------------------------
def nan_when_half(_module, _args, output):
    """Injected fault: the decoder overflows in half precision, as SD 1.5's VAE does in fp16 on some images."""
    return torch.full_like(output, NAN) if output.dtype in (torch.float16, torch.bfloat16) else output


@pytest.fixture
def restore_devices(monkeypatch):
    for name in ("dtype_vae", "nan_check"):
        monkeypatch.setattr(devices, name, getattr(devices, name))


def half_vae_manager(tmp_path, vae_dtype=torch.float16, nan_check=True, settings=None):
    config = DeviceConfig(CPU, torch.float32, vae_dtype, nan_check=nan_check)
    settings = settings or {}
    return manager(tmp_path, device=config, archs=("sd1", "sd1"), setting=lambda k, d: settings.get(k, d))


def test_vae_nan_falls_back_to_full_precision(tmp_path, caplog, restore_devices):
    caplog.set_level(logging.WARNING, "sd.vae")
    mgr = half_vae_manager(tmp_path)
    model = mgr.load(mgr.select("0_sd1"))
    assert model.vae.dtype == torch.float16
    model.vae.decoder.register_forward_hook(nan_when_half)
    images = run(model, steps=1, width=32, height=32).images
    assert np.asarray(images[0]).std() > 0                      # the second decode gave a real image
    assert model.vae.dtype == torch.float32
    assert "A tensor with NaNs was produced in VAE. The web UI now converts the VAE to 32-bit floats" in caplog.text
    # A1111: the VAE stays in 32-bit floats for the session, the next checkpoint too
    assert mgr.device.vae_dtype == devices.dtype_vae == torch.float32
    assert mgr.load(mgr.select("1_sd1")).vae.dtype == torch.float32


def test_vae_nan_fall_back_to_bfloat16_when_set(tmp_path, caplog, restore_devices):
    caplog.set_level(logging.WARNING, "sd.vae")
    mgr = half_vae_manager(tmp_path, settings={"auto_vae_precision_bfloat16": True})
    model = mgr.require()
    hook = model.vae.decoder.register_forward_hook(
        lambda m, a, out: torch.full_like(out, NAN) if out.dtype == torch.float16 else out)
    run(model, steps=1, width=32, height=32)
    hook.remove()
    assert model.vae.dtype == torch.bfloat16 and "converts the VAE to bfloat16" in caplog.text


def test_vae_nan_without_fall_back_names_no_half_vae(tmp_path, restore_devices):
    mgr = half_vae_manager(tmp_path, settings={"auto_vae_precision": False})
    model = mgr.require()
    model.vae.decoder.register_forward_hook(nan_when_half)
    with pytest.raises(devices.NansException, match=r"^A tensor with NaNs was produced in VAE\..*--no-half-vae"):
        run(model, steps=1, width=32, height=32)
    assert model.vae.dtype == torch.float16


def test_disable_nan_check_turns_the_check_off(tmp_path, restore_devices):
    from modules import cmd_args
    config = devices.from_args(cmd_args.parse(["--disable-nan-check"], env={}))
    assert not config.nan_check
    mgr = half_vae_manager(tmp_path, nan_check=False)
    model = mgr.require()
    assert "nan_check_handle" not in model.extra
    model.vae.decoder.register_forward_hook(nan_when_half)
    decoded = vae_codec.decode_to_tensor(model, torch.zeros(1, 4, 16, 16))
    assert torch.isnan(decoded).all() and model.vae.dtype == torch.float16   # no check, no conversion


def test_unet_nan_gives_a1111_message_naming_no_half(tmp_path, restore_devices):
    mgr = manager(tmp_path, device=DeviceConfig(CPU, torch.bfloat16, torch.float32))
    model = mgr.require()
    devices.nan_check = True

    def nan_unet(_module, _args, output):
        if isinstance(output, tuple):
            return (torch.full_like(output[0], NAN),) + tuple(output[1:])
        output.sample = torch.full_like(output.sample, NAN)
        return output

    model.unet.register_forward_hook(nan_unet, prepend=True)     # before the check that the load installed
    with pytest.raises(devices.NansException) as err:
        run(model, steps=1, width=32, height=32)
    message = str(err.value)
    assert message.startswith("A tensor with NaNs was produced in Unet.")
    assert "--no-half" in message and "--disable-nan-check" in message
