"""Seeds and noise: -1, seed + i, variation seeds (slerp), resize seed from W×H, ENSD."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules import processing
from modules.engine import rng
from tests.support.engine_helpers import load_tiny, pixels, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("seeds"))


def test_random_seed_and_batch_seeds(model):
    a, b = run(model, seed=-1), run(model, seed=-1)
    assert a.seeds[0] != b.seeds[0] and 0 <= a.seeds[0] < rng.MAX_SEED
    again = run(model, seed=a.seeds[0])
    assert np.array_equal(pixels(a.images[0]), pixels(again.images[0]))
    batch = run(model, seed=100, n_iter=2, batch_size=2)
    assert batch.seeds == [100, 101, 102, 103] and batch.all_subseeds[:2] != []


def test_noise_is_drawn_on_the_cpu_per_image():
    noise, _ = rng.batch_noise((4, 8, 8), [7, 8])
    assert torch.equal(noise[0], torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(7)))
    assert torch.equal(noise[1], torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(8)))


def test_variation_seed_interpolates_between_two_seeds(model):
    base = run(model, seed=10)
    other = run(model, seed=20)
    zero = run(model, seed=10, subseed=20, subseed_strength=0.0)
    full = run(model, seed=10, subseed=20, subseed_strength=1.0)
    half = run(model, seed=10, subseed=20, subseed_strength=0.5)
    assert np.array_equal(pixels(zero.images[0]), pixels(base.images[0]))
    assert np.abs(pixels(full.images[0]) - pixels(other.images[0])).max() <= 1  # slerp(1) is the subseed's noise
    d_base = np.abs(pixels(half.images[0]) - pixels(base.images[0])).mean()
    assert 0 < d_base and "Variation seed: 20, Variation seed strength: 0.5" in half.infotexts[0]
    a, b = rng.randn(1, (4, 8, 8)), rng.randn(2, (4, 8, 8))
    mid = rng.slerp(0.5, a, b)
    assert abs(mid.norm() - (a.norm() + b.norm()) / 2) / a.norm() < 0.1  # keeps the noise's scale


def test_resize_seed_keeps_the_composition_centred():
    small, _ = rng.image_noise((4, 8, 8), 42)
    big, _ = rng.image_noise((4, 12, 16), 42, resize_from=(16, 16), latent_factor=2)
    assert torch.equal(big[:, 2:10, 4:12], small)  # 8x8 latents pasted in the middle of 12x16
    cropped, _ = rng.image_noise((4, 4, 4), 42, resize_from=(16, 16), latent_factor=2)
    assert torch.equal(cropped, small[:, 2:6, 2:6])


def test_resize_seed_in_infotext(model):
    r = run(model, seed=3, width=48, height=32, seed_resize_from_w=32, seed_resize_from_h=32)
    assert "Seed resize from: 32x32" in r.infotexts[0]


def test_ensd_changes_ancestral_samplers_only(model):
    plain = run(model, sampler_name="Euler a", seed=9)
    delta = run(model, processing.RunOptions(ensd=31337), sampler_name="Euler a", seed=9)
    assert not np.array_equal(pixels(plain.images[0]), pixels(delta.images[0]))
    assert "ENSD: 31337" in delta.infotexts[0]
    euler = run(model, sampler_name="Euler", seed=9)
    euler_delta = run(model, processing.RunOptions(ensd=31337), sampler_name="Euler", seed=9)
    assert np.array_equal(pixels(euler.images[0]), pixels(euler_delta.images[0]))
    assert "ENSD" not in euler_delta.infotexts[0]
