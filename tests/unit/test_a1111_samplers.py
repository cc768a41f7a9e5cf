"""Each A1111 sampler gives A1111's latents: the engine against tests/support/a1111_reference.py (A1111's rules
written independently), on a tiny random-weight SD1 model, at float tolerance."""
from __future__ import annotations

import pytest
import torch

from tests.support import a1111_reference as ref
from tests.support.engine_helpers import load_tiny, run

LONG = ", ".join(["a red circle on a blue square"] * 14)  # > 75 tokens: two chunks, while the negative has one


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("a1111"))


def engine_latents(model, **fields):
    seen = {}

    def setup(p):
        p.hooks.add("post_sample", lambda p, args: seen.setdefault("x", args.samples.clone()))
    run(model, setup=setup, **fields)
    return seen["x"]


def compare(model, sampler, steps=4, seeds=(5,), schedule="Automatic", ensd=0, prompt="a red circle",
            negative="", cfg=7.0):
    from modules import processing
    opts = processing.RunOptions(ensd=ensd)
    got = engine_latents(model, opts=opts, sampler_name=sampler, scheduler=schedule, steps=steps, seed=seeds[0],
                         batch_size=len(seeds), prompt=prompt, negative_prompt=negative, cfg_scale=cfg,
                         width=32, height=32)
    want = ref.run(model, sampler, steps, list(seeds), [prompt] * len(seeds), [negative] * len(seeds), cfg, 32, 32,
                   schedule, ensd)
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    # the SDE samplers query a Brownian tree at σ values computed in float32 (engine) or float64 (reference):
    # a last-digit difference in a query time moves the noise by ~sqrt(1e-7)
    tol = 1e-3 if "SDE" in sampler else 1e-4
    assert err <= tol * max(1.0, scale), f"{sampler}: max |engine − reference| = {err:.3g} (scale {scale:.3g})"
    return got


ALL = list(ref.K_SAMPLERS) + list(ref.TIMESTEP_SAMPLERS) + ["DPM fast", "DPM adaptive", "LCM"]


@pytest.mark.parametrize("sampler", ALL)
def test_default_schedule_batch_1(model, sampler):
    compare(model, sampler)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM2 a", "DDIM", "UniPC",
                                     "DPM++ 2S a", "Heun"])
def test_batch_2_with_ensd(model, sampler):
    compare(model, sampler, seeds=(11, 12), ensd=31337)


@pytest.mark.parametrize("sampler,schedule", [("Euler a", "Karras"), ("Euler", "Exponential"),
                                              ("DPM++ 2M", "Exponential"), ("DPM++ SDE", "Exponential"),
                                              ("DPM++ 2M SDE", "Karras"), ("LMS", "Karras"), ("DPM2", "Exponential"),
                                              ("DPM++ 3M SDE", "Karras"), ("Heun", "Karras")])
def test_karras_and_exponential(model, sampler, schedule):
    compare(model, sampler, schedule=schedule)


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a", "DDIM"])
def test_long_prompt_short_negative_are_separate_unet_batches(model, sampler):
    compare(model, sampler, prompt=LONG, negative="blurry", seeds=(3, 4))


def test_ensd_changes_ancestral_noise_only_after_the_first_draw(model):
    a = compare(model, "Euler a", ensd=0)
    b = compare(model, "Euler a", ensd=31337)
    assert not torch.allclose(a, b)


def test_settings_change_sampling_and_are_written_to_the_infotext(model):
    from modules import processing
    from modules.engine.samplers import SamplerOptions

    def go(sampler="Euler a", **opts):
        seen = {}

        def setup(p):
            p.hooks.add("post_sample", lambda p, args: seen.setdefault("x", args.samples.clone()))
        out = run(model, opts=processing.RunOptions(sampler=SamplerOptions(**opts)), setup=setup,
                  sampler_name=sampler, steps=4)
        return seen["x"], out.infotexts[0]

    base, text = go()
    assert "Eta" not in text
    for opts, key in (({"eta_ancestral": 0.5}, "Eta: 0.5"), ({"always_discard_next_to_last_sigma": True},
                                                          "Discard penultimate sigma: True"),
                      ({"s_min_uncond": 20.0}, "NGMS: 20")):
        x, text = go(**opts)
        assert key in text and not torch.allclose(x, base), opts
    x, text = go("Euler", s_churn=1.0)
    assert "Sigma churn: 1" in text
    x2, _ = go("Euler")
    assert not torch.allclose(x, x2)
    x, text = go("DPM++ 2M", rho=3.0, sigma_max=10.0)
    assert "Schedule rho: 3" in text and "Schedule max sigma: 10" in text
    x, text = go("DDIM", eta_ddim=0.7)
    assert "Eta DDIM: 0.7" in text


def test_pad_prompt_negative_prompt_setting(model):
    from modules import processing
    from modules.engine.samplers import SamplerOptions
    plain = engine_latents(model, prompt=LONG, negative_prompt="blurry", sampler_name="Euler")
    padded = engine_latents(model, opts=processing.RunOptions(sampler=SamplerOptions(pad_cond_uncond=True)),
                            prompt=LONG, negative_prompt="blurry", sampler_name="Euler")
    assert not torch.allclose(plain, padded)
    text = run(model, opts=processing.RunOptions(sampler=SamplerOptions(pad_cond_uncond=True)), prompt=LONG,
               negative_prompt="blurry").infotexts[0]
    assert "Pad conds: True" in text


def test_settings_exist_with_a1111_keys_and_infotext_keys():
    from modules import sampler_settings
    templates = sampler_settings.option_templates()
    assert templates["eta_ancestral"].default == 1.0 and templates["eta_ancestral"].infotext == "Eta"
    assert templates["always_discard_next_to_last_sigma"].infotext == "Discard penultimate sigma"
    opts = sampler_settings.sampler_options({"rho": "5", "pad_cond_uncond": True}.get)
    assert opts.rho == 5.0 and opts.pad_cond_uncond and opts.eta_ancestral == 1.0
