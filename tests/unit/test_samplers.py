"""Every listed sampler × schedule pair runs; names, aliases, legacy names and errors behave as in A1111."""
from __future__ import annotations

import numpy as np
import pytest

from modules.engine import samplers
from modules.engine.params import ParamError
from tests.support.engine_helpers import load_tiny, pixels, run

PAIRS = [(s.name, sched) for s in samplers.SAMPLERS for sched in ("Automatic", *s.schedules)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("samplers"))


@pytest.mark.parametrize("sampler,schedule", PAIRS, ids=[f"{a}|{b}" for a, b in PAIRS])
def test_pair_runs_and_gives_finite_output(model, sampler, schedule):
    out = run(model, sampler_name=sampler, scheduler=schedule, steps=3, width=16, height=16)
    arr = pixels(out.images[0])
    assert arr.shape == (16, 16, 3) and arr.std() > 0
    spec, concrete = samplers.resolve(sampler, schedule)
    assert f"Sampler: {spec.name}, Schedule type: {concrete}" in out.infotexts[0]


def test_automatic_picks_each_samplers_default():
    assert samplers.resolve("DPM++ 2M", "Automatic")[1] == "Karras"
    assert samplers.resolve("DPM++ 2M SDE", None)[1] == "Exponential"
    assert samplers.resolve("Euler a", "Automatic")[1] == "Uniform"


def test_legacy_names_and_aliases():
    assert samplers.resolve("DPM++ 2M Karras", "Automatic") == (samplers.resolve("DPM++ 2M")[0], "Karras")
    assert samplers.resolve("k_euler_a")[0].name == "Euler a"
    assert samplers.resolve("euler A")[0].name == "Euler a"
    assert samplers.resolve("Euler", "sgm_uniform")[1] == "SGM Uniform"


def test_unknown_names_are_clear_errors(model):
    with pytest.raises(samplers.SamplerError, match="unknown sampler 'Euler b'.*Euler a"):
        samplers.resolve("Euler b")
    with pytest.raises(samplers.SamplerError, match="unknown schedule type 'Fancy'.*Karras"):
        samplers.resolve("Euler", "Fancy")
    # A1111 runs every sampler with every schedule type (Euler a + Polyexponential was refused here once)
    assert samplers.resolve("Euler a", "Polyexponential")[1] == "Polyexponential"
    with pytest.raises(ParamError, match="sampler_name: unknown sampler"):
        run(model, sampler_name="Euler b")


def test_schedules_change_the_noise_levels(model):
    a = pixels(run(model, sampler_name="Euler", scheduler="Uniform", steps=4).images[0])
    b = pixels(run(model, sampler_name="Euler", scheduler="Karras", steps=4).images[0])
    assert not np.array_equal(a, b)
    sig = samplers.custom_sigmas("Align Your Steps", 10, 0.03, 14.6)
    assert sig[0] == pytest.approx(14.615) and len(sig) == 10


@pytest.mark.parametrize("sampler", [s.name for s in samplers.SAMPLERS if s.ancestral])
def test_stochastic_samplers_are_reproducible(model, sampler):
    a = pixels(run(model, sampler_name=sampler, seed=33, steps=3).images[0])
    b = pixels(run(model, sampler_name=sampler, seed=33, steps=3).images[0])
    c = pixels(run(model, sampler_name=sampler, seed=34, steps=3).images[0])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_list_is_a1111s_with_its_options():
    listed = {s["name"]: s for s in (spec.to_api() for spec in samplers.SAMPLERS)}
    assert list(listed) == ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a",
                            "DPM++ 3M SDE", "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast",
                            "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
    assert listed["DPM2 a"]["options"] == {"scheduler": "karras", "discard_next_to_last_sigma": True,
                                           "uses_ensd": True, "second_order": True}
    assert listed["DPM++ 2M SDE Heun"]["options"] == {"scheduler": "exponential", "brownian_noise": True,
                                                      "solver_type": "heun"}
    assert listed["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"] and listed["Euler"]["options"] == {}
