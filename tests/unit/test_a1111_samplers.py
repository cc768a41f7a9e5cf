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


@pytest.mark.parametrize("prompt,negative", [("a red circle", ""), (LONG, "blurry"),
                                             ("a red circle AND a blue square:0.5", "")])
def test_negative_guidance_minimum_sigma_leaves_the_negative_rows_out(model, monkeypatch, prompt, negative):
    """NGMS (A1111's s_min_uncond): every second UNet call below the sigma runs the prompt rows only, and the prompt's
    prediction stands in for the negative one — for a plain prompt the same image as guidance 1 on those calls."""
    from modules import processing
    from modules.engine import denoiser as denoiser_mod
    from modules.engine.samplers import SamplerOptions

    def go():
        sizes, seen = [], {}

        def setup(p):
            p.hooks.add("before_unet", lambda call: sizes.append(call.x.shape[0]))
            p.hooks.add("post_sample", lambda p, args: seen.setdefault("x", args.samples.clone()))
        run(model, opts=processing.RunOptions(sampler=SamplerOptions(s_min_uncond=100.0)), setup=setup,
            sampler_name="Euler", steps=4, seed=3, batch_size=2, prompt=prompt, negative_prompt=negative)
        return sizes, seen["x"]

    sizes, skipped = go()
    n_cond = 4 if " AND " in prompt else 2
    per_call = [n_cond + 2] if not negative else [n_cond, 2]  # separate batches when the token lengths differ
    assert sizes == (per_call + [n_cond]) * 2, sizes

    def guidance_one(self, x, step, prompt_step):  # what NGMS means for a plain prompt, on the full batch
        scale, self.cfg_scale = self.cfg_scale, 1.0
        try:
            return self(x, step, prompt_step)
        finally:
            self.cfg_scale = scale
    monkeypatch.setattr(denoiser_mod.Denoiser, "cond_only", guidance_one)
    sizes, full = go()
    assert sizes == per_call * 4
    if " AND " in prompt:  # the first AND part stands in for the negative prompt: not the same as guidance 1
        assert torch.isfinite(skipped).all() and not torch.allclose(skipped, full, atol=1e-4)
    else:
        assert torch.allclose(skipped, full, atol=1e-4), (skipped - full).abs().max()


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
    from modules.engine import sampler_settings
    templates = sampler_settings.option_templates()
    assert templates["eta_ancestral"].default == 1.0 and templates["eta_ancestral"].infotext == "Eta"
    assert templates["always_discard_next_to_last_sigma"].infotext == "Discard penultimate sigma"
    opts = sampler_settings.sampler_options({"rho": "5", "pad_cond_uncond": True}.get)
    assert opts.rho == 5.0 and opts.pad_cond_uncond and opts.eta_ancestral == 1.0


# --- infotexts written by A1111 -------------------------------------------------------------------------------------

A1111_SAVED = """a red circle
Negative prompt: blurry
Steps: 4, Sampler: DPM2 a, Schedule type: Exponential, CFG scale: 6.5, Seed: 1234, Size: 32x32, Model hash: 0123456789, Model: m, Eta: 0.8, Sigma churn: 0.5, Schedule rho: 5, Discard penultimate sigma: True, ENSD: 31337, Pad conds: True, Version: v1.10.1"""


def test_an_a1111_infotext_gives_a1111s_settings_and_image(model):
    from modules import processing
    from modules.engine import infotext
    from modules.engine.samplers import SamplerOptions
    kwargs, overrides = infotext.to_params(A1111_SAVED)
    assert (kwargs["sampler_name"], kwargs["scheduler"], kwargs["steps"], kwargs["cfg_scale"], kwargs["seed"]) == \
        ("DPM2 a", "Exponential", 4, 6.5, 1234)
    assert overrides["eta_ancestral"] == 0.8 and overrides["s_churn"] == 0.5 and overrides["rho"] == 5.0
    assert overrides["always_discard_next_to_last_sigma"] is True and overrides["pad_cond_uncond"] is True
    assert overrides["eta_noise_seed_delta"] == 31337
    assert infotext.unsupported(A1111_SAVED) == []
    # the same settings A1111 would use: eta 0.8 moves DPM2 a's noise; the engine matches the reference with them
    opts = SamplerOptions(eta_ancestral=overrides["eta_ancestral"], s_churn=overrides["s_churn"],
                          rho=overrides["rho"],
                          always_discard_next_to_last_sigma=overrides["always_discard_next_to_last_sigma"])
    got = engine_latents(model, opts=processing.RunOptions(ensd=31337, sampler=opts),
                         **{k: v for k, v in kwargs.items() if k in ("prompt", "negative_prompt", "sampler_name",
                                                                     "scheduler", "steps", "cfg_scale", "seed")},
                         width=32, height=32)
    base = engine_latents(model, opts=processing.RunOptions(ensd=31337), prompt="a red circle",
                          negative_prompt="blurry", sampler_name="DPM2 a", scheduler="Exponential", steps=4,
                          cfg_scale=6.5, seed=1234)
    assert not torch.allclose(got, base)


def test_what_we_lack_is_reported_and_not_replaced():
    from modules.engine import infotext
    from modules.ui import pnginfo_tab
    text = A1111_SAVED.replace("Sampler: DPM2 a", "Sampler: Euler SMEA Dy").replace(
        "Schedule type: Exponential", "Schedule type: Turbo").replace("Version", "Noise schedule: Zero Terminal SNR, "
                                                                     "Version")
    problems = infotext.unsupported(text)
    assert problems == ["Sampler: Euler SMEA Dy", "Schedule type: Turbo", "Noise schedule: Zero Terminal SNR"]
    assert pnginfo_tab.unsupported_message(problems).startswith("not supported here: Sampler: Euler SMEA Dy")
    fields = ["prompt", "sampler_name", "scheduler", "steps"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        updates = dict(zip(fields, pnginfo_tab.paste_values(text, fields)))
    assert "value" not in updates["sampler_name"] and "value" not in updates["scheduler"]
    assert updates["steps"]["value"] == 4 and updates["prompt"]["value"] == "a red circle"


def test_nv_noise_source_is_cudas_randn():
    from modules.engine import rng
    # torch.randn((3, 4), generator=torch.Generator("cuda").manual_seed(0), device="cuda") on an NVIDIA GPU
    want = torch.tensor([[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                         [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                         [-1.07454231, -0.36314407, -1.67105067, 2.26550497]])
    assert torch.allclose(rng.randn(0, (3, 4), "NV"), want, atol=1e-6)
    noise, gens = rng.batch_noise((4, 4, 4), [7, 8], source="NV", ensd=0)
    assert torch.equal(noise[1], rng.randn(8, (4, 4, 4), "NV"))
    assert not torch.equal(rng.draw(gens[0], (4, 4, 4)), noise[0])  # the generator goes on to the next numbers


def test_nv_source_runs_ancestral_sampling(model):
    from modules import processing
    a = engine_latents(model, opts=processing.RunOptions(randn_source="NV"), sampler_name="Euler a", steps=3)
    b = engine_latents(model, opts=processing.RunOptions(randn_source="NV"), sampler_name="Euler a", steps=3)
    c = engine_latents(model, sampler_name="Euler a", steps=3)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_restart_with_its_restart_plan(model):
    compare(model, "Restart", steps=20)
