"""The engine's seams: hook points, per-job hooks, the run state `p` that scripts edit, per-job patches, extra-network
reporting, jobs as data, and the parameter schema every face derives from."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules import processing
from modules.engine import infotext, payload
from modules.engine.hooks import Hooks
from modules.engine.params import BY_NAME, FIELDS, GenerationParams
from tests.support.engine_helpers import load_tiny, pixels, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("seams"))


def differs(a, b) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() > 0)


def test_before_unet_hook_adds_a_residual_and_changes_the_image(model):
    plain = run(model, steps=4).images[0]
    shapes = {}
    handle = model.unet.mid_block.register_forward_hook(lambda m, i, o: shapes.update(mid=o.shape))
    try:
        run(model, steps=1)
    finally:
        handle.remove()
    calls = []

    def add_mid(call):
        calls.append((call.step.index, call.step.total, call.cond_rows, call.uncond_rows, call.step.pass_name))
        residual = torch.full((1, *shapes["mid"][1:]), 0.5)
        call.add_residuals(mid=residual, rows=call.cond_rows)   # ControlNet's "prompt more important": cond only

    hooks = Hooks()
    hooks.add("before_unet", add_mid)
    changed = run(model, steps=4, hooks=hooks).images[0]
    assert differs(plain, changed)
    assert calls == [(i, 4, [0], [1], "base") for i in range(4)]  # A1111's layout: cond rows, then uncond rows
    assert not differs(plain, run(model, steps=4).images[0])  # the hook object is gone, so is its effect


def test_a_per_job_hook_acts_in_one_job_only(model):
    runtime_hooks = Hooks()  # what the runtime owns; each job runs with a child of it
    seen = {"global": 0, "job": 0}
    runtime_hooks.add("after_step", lambda args: seen.__setitem__("global", seen["global"] + 1))

    def only_this_job(p):
        p.hooks.add("after_step", lambda args: seen.__setitem__("job", seen["job"] + 1))

    run(model, steps=3, hooks=runtime_hooks, setup=only_this_job)
    assert seen == {"global": 3, "job": 3}
    run(model, steps=3, hooks=runtime_hooks)
    assert seen == {"global": 6, "job": 3}
    assert runtime_hooks.get("after_step") and len(runtime_hooks.get("after_step")) == 1


def test_a_step_callback_that_returns_new_latents_changes_the_result(model):
    plain = run(model, steps=4).images[0]
    hooks = Hooks()
    hooks.add("after_step", lambda args: args.latents * 0.5 if args.step.index == 1 else None)
    assert differs(plain, run(model, steps=4, hooks=hooks).images[0])
    keep = Hooks()
    keep.add("after_step", lambda args: None)
    assert not differs(plain, run(model, steps=4, hooks=keep).images[0])


def test_cfg_hooks_get_a1111s_parameter_objects(model):
    seen = []

    def denoiser(params):
        seen.append((params.sampling_step, params.total_sampling_steps, params.x.shape[0],
                     params.text_cond.shape[0], params.text_uncond.shape[0]))
        params.text_cond = params.text_uncond  # read back: the prompt no longer matters

    hooks = Hooks()
    hooks.add("cfg_denoiser", denoiser)
    a = run(model, steps=3, prompt="a red circle", hooks=hooks).images[0]
    b = run(model, steps=3, prompt="something else entirely", hooks=hooks).images[0]
    assert seen[:3] == [(0, 3, 2, 1, 1), (0, 3, 2, 1, 1), (1, 3, 2, 1, 1)]  # A1111: step k sees max(k-1, 0)
    assert not differs(a, b)
    after = Hooks()
    after.add("cfg_after_cfg", lambda params: setattr(params, "x", params.x * 0))
    assert differs(run(model, steps=3).images[0], run(model, steps=3, hooks=after).images[0])


class RewritePrompts:
    """A script in A1111's style: rewrites p.all_prompts in process()."""

    def process(self, p, *args):
        p.all_prompts = [f"{prompt}, blue square" for prompt in p.all_prompts]
        p.extra_generation_params["Rewriter"] = "on"


def test_a_script_rewriting_all_prompts_in_process_changes_images_and_infotext(model):
    plain = run(model, prompt="a red circle", steps=3, batch_size=2)
    script = RewritePrompts()
    rewritten = run(model, prompt="a red circle", steps=3, batch_size=2,
                    setup=lambda p: p.hooks.add("process", script.process))
    direct = run(model, prompt="a red circle, blue square", steps=3, batch_size=2)
    for i in range(2):
        assert differs(plain.images[i], rewritten.images[i])
        assert not differs(direct.images[i], rewritten.images[i])
        assert rewritten.infotexts[i].startswith("a red circle, blue square\n")
        assert "Rewriter: on" in rewritten.infotexts[i]
    assert rewritten.all_prompts == ["a red circle, blue square"] * 2


def test_a_script_changing_all_seeds_changes_the_images(model):
    def reseed(p):
        p.all_seeds = [s + 1000 for s in p.all_seeds]
    out = run(model, seed=5, steps=3, setup=lambda p: p.hooks.add("process", reseed))
    assert not differs(out.images[0], run(model, seed=1005, steps=3).images[0])
    assert "Seed: 1005" in out.infotexts[0]


def snapshot(model) -> dict[str, torch.Tensor]:
    nets = {"unet": model.unet, "vae": model.vae, **{f"te{i}": e for i, e in enumerate(model.text_encoders)}}
    return {f"{n}.{k}": v.detach().clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def test_a_patch_set_is_undone_bitwise(model):
    before = snapshot(model)
    plain = run(model, steps=3).images[0]
    conv = model.unet.conv_in.weight
    to_q = next(name for name, _ in model.unet.named_parameters() if name.endswith("attn1.to_q.weight"))
    te = next(name for name, _ in model.text_encoders[0].named_parameters() if name.endswith("q_proj.weight"))

    def patch(p):
        p.patches.add_weight("unet.conv_in.weight", torch.randn(conv.shape) * 0.3, strength=0.7)
        p.patches.add_weight(f"unet.{to_q}", torch.randn(model.unet.get_parameter(to_q).shape))
        p.patches.add_weight(f"text_encoder.{te}", fn=lambda w: w * 1.5)
        p.patches.tiling = True
    patched = run(model, steps=3, setup=patch).images[0]
    assert differs(plain, patched)
    after = snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.padding_mode == "zeros" for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert not differs(plain, run(model, steps=3).images[0])  # no reload, same model, same pixels


def test_a_patch_set_is_undone_when_the_job_fails(model):
    before = snapshot(model)

    def patch(p):
        p.patches.add_weight("unet.conv_in.weight", torch.ones_like(model.unet.conv_in.weight))
        p.hooks.add("after_step", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run(model, steps=2, setup=patch)
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_textual_inversion_vectors_of_the_patch_set(model):
    width = model.text_encoders[0].get_input_embeddings().weight.shape[1]
    vectors = torch.randn(2, width) * 3
    plain = run(model, prompt="a zzfancy circle", steps=2).images[0]
    with_emb = run(model, prompt="a zzfancy circle", steps=2,
                   setup=lambda p: p.patches.embeddings.update({"zzfancy": vectors})).images[0]
    assert differs(plain, with_emb)
    assert not differs(plain, run(model, prompt="a zzfancy circle", steps=2).images[0])


def test_an_unknown_network_is_reported_not_dropped(model):
    out = run(model, prompt="a red circle <lora:nosuchlora:0.8> <hypernet:nonet:1>", steps=2)
    assert "Networks not found: nosuchlora, nonet" in out.comments
    assert "<lora:nosuchlora:0.8>" in out.infotexts[0]  # the infotext keeps the prompt as written
    # the token itself is not encoded: the image is the one of the prompt without it
    assert not differs(out.images[0], run(model, prompt="a red circle  ", steps=2).images[0])
    assert out.to_dict()["comments"] == out.comments


def test_extra_network_tokens_are_parsed_into_the_jobs_network_list(model):
    data = {}

    def grab(p, **kw):
        data.update(p.extra_network_data)
    run(model, prompt="x <lora:a:0.5> <lora:b:0.3:0.9> <lyco:c:1>", steps=1,
        setup=lambda p: p.hooks.add("process_batch", grab))
    assert [e.items for e in data["lora"]] == [["a", "0.5"], ["b", "0.3", "0.9"]]
    assert [e.items for e in data["lyco"]] == [["c", "1"]]


def test_a_job_payload_round_trips_and_gives_the_same_pixels(model):
    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    params = GenerationParams(prompt="a red circle", steps=3, width=32, height=32, seed=7, sampler_name="Euler",
                              init_images=[init], mask=mask, denoising_strength=0.8, mode="img2img")
    text = payload.dumps(payload.to_payload(params))
    assert isinstance(text, str)
    again = payload.from_payload(payload.loads(text))
    a = processing.process(model, params).images[0]
    b = processing.process(model, again).images[0]
    assert not differs(a, b)


def test_api_ui_and_infotext_defaults_agree_because_they_are_derived():
    import gradio as gr

    from modules.api import models as api_models
    from modules.ui import common
    txt, img = api_models.Txt2ImgRequest(), api_models.Img2ImgRequest(init_images=["x"])
    params = GenerationParams()
    for f in FIELDS:
        assert getattr(params, f.name) == f.ui_default(), f.name
        if not f.img2img_only:
            assert getattr(txt, f.name) == f.api(), f.name
        if f.name != "init_images":
            assert getattr(img, f.name) == f.api(img2img=True), f.name
    # A1111's documented differences, said once in the schema
    assert (BY_NAME["sampler_name"].ui_default(), txt.sampler_name, txt.sampler_index) == ("DPM++ 2M", None, "Euler")
    assert (BY_NAME["steps"].ui_default(), txt.steps) == (20, 50)
    with gr.Blocks():
        controls = common.sampling_controls("t", 512)
        seeds = common.seed_row("t", gr.State(-1))
    for name, comp in {**controls, **seeds}.items():
        if name not in ("width", "height"):  # those follow the loaded model's native size
            assert comp.value == BY_NAME[name].ui_default() or (name.startswith("seed_resize") and comp.value == 0)
    # the infotext parser knows every key the writer writes
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", enable_hr=True, hr_second_pass_steps=5,
                                                    subseed_strength=0.5, hr_prompt="b", clip_skip=2)
    p.all_prompts, p.all_negative_prompts, p.all_seeds, p.all_subseeds = ["a"], [""], [1], [2]
    from modules.engine import infotext_fields
    text = infotext_fields.create(p, 0, {})
    parsed, _ = infotext.to_params(text)
    assert (parsed["seed"], parsed["subseed"]) == (1, 2)  # the image's own seeds
    for key in ("steps", "cfg_scale", "subseed_strength", "width", "height", "hr_scale", "hr_second_pass_steps",
                "hr_prompt", "clip_skip", "sampler_name", "scheduler"):
        assert parsed[key] == getattr(p, key), key


def test_processing_objects_have_a1111s_names():
    p = processing.StableDiffusionProcessingImg2Img(prompt="x", init_images=[Image.new("RGB", (8, 8))],
                                                    mask=Image.new("L", (8, 8)), mask_blur=3, denoising_strength=0.4)
    assert p.image_mask is not None and p.mask_blur == 3 and p.mask_blur_x == p.mask_blur_y == 3
    p.custom_attribute = 1  # extensions attach their own attributes
    p.setup_prompts()
    assert p.all_prompts == ["x"] and len(p.all_seeds) == 1 and p.is_img2img
    with pytest.raises(TypeError, match="nonsense"):
        processing.StableDiffusionProcessingTxt2Img(nonsense=1)


def test_prompt_editing_in_the_hires_pass_follows_a1111s_rule(model):
    from modules.engine import conditioning
    cat = conditioning.encode_text(model, "a cat").context
    dog = conditioning.encode_text(model, "a dog").context
    seen = []

    def watch(call):
        if call.step.pass_name == "hires":
            row = call.context[call.cond_rows[0]:call.cond_rows[0] + 1]
            seen.append("cat" if torch.equal(row, cat) else "dog" if torch.equal(row, dog) else "?")
    hooks = Hooks()
    hooks.add("before_unet", watch)
    # new timelines (A1111's default): an integer counts from the start of the base pass, so with 4 base steps
    # and 8 hires steps at strength 1, step 6 is the hires pass's second step
    run(model, prompt="a [cat:dog:6]", steps=4, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=8,
        denoising_strength=1.0, hooks=hooks, sampler_name="Euler")
    assert seen == ["cat", "cat", "cat", "dog", "dog", "dog", "dog", "dog"]


def test_eta_reaches_the_samplers_that_take_it(model):
    plain = run(model, sampler_name="DDIM", steps=4).images[0]
    assert differs(plain, run(model, sampler_name="DDIM", steps=4, eta=1.0).images[0])
    assert not differs(run(model, steps=4).images[0], run(model, steps=4, eta=1.0).images[0])  # Euler has no eta


def test_overrides_are_never_written_into_the_settings_during_a_job(tmp_path, tiny_sd1):
    from modules import cmd_args
    from modules.runtime import Runtime
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    (tmp_path / "models" / "Stable-diffusion" / "m.safetensors").write_bytes(tiny_sd1.read_bytes())
    rt = Runtime(cmd_args.parse(["--data-dir", str(tmp_path), "--no-half"], env={}))
    rt.load_startup_model()
    during = []
    rt.hooks.add("after_step", lambda args: during.append(rt.options.CLIP_stop_at_last_layers))
    p = GenerationParams(prompt="x", steps=2, width=32, height=32, seed=1,
                         override_settings={"CLIP_stop_at_last_layers": 3})
    assert "Clip skip: 3" in rt.generate(p).infotexts[0]
    assert during == [1, 1] and rt.options.CLIP_stop_at_last_layers == 1
    rt.generate(GenerationParams(**{**p.to_dict(), "mode": "txt2img"}), restore_overrides=False)
    assert rt.options.CLIP_stop_at_last_layers == 3  # kept when asked, after the job


def test_process_level_hooks_fire_in_a1111s_order(model):
    order = []
    points = ("before_process", "process", "before_process_batch", "after_extra_networks_activate", "process_batch",
              "process_before_every_sampling", "before_hr", "post_sample", "postprocess_batch", "postprocess_image",
              "postprocess_image_after_composite", "postprocess")

    def setup(p):
        for point in points:
            p.hooks.add(point, lambda *a, _point=point, **kw: order.append(_point))
    run(model, steps=2, enable_hr=True, hr_scale=1.5, setup=setup)
    assert order == ["before_process", "process", "before_process_batch", "after_extra_networks_activate",
                     "process_batch", "process_before_every_sampling", "before_hr", "process_before_every_sampling",
                     "post_sample", "postprocess_batch", "postprocess_image", "postprocess_image_after_composite",
                     "postprocess"]
