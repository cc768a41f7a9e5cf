"""Checkpoint Merger engine on tiny random-weight checkpoints: the arithmetic of every mode, options, the result
loading like a user's file, and clear errors."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from modules.models.hashing import file_sha256
from modules.models.merge import (INPUT_CONV, MergeError, MergeRequest, ModelRef, merge_checkpoints)
from modules.models.safe_load import load_state_dict
from tests.support.engine_helpers import pixels, run
from tests.support.model_factory import manager_for, write_tiny_checkpoint

M = 0.3


@pytest.fixture(scope="module")
def tiny_sd1_c(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt_c") / "tiny_sd1_c.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=2)
    return path


@pytest.fixture(scope="module")
def tiny_inpaint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt_inp") / "tiny_inpaint.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=3, in_channels=9)
    return path


@pytest.fixture
def out_dir(tmp_path) -> Path:
    return tmp_path / "Stable-diffusion"


def _floats(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if v.is_floating_point()}


def test_weighted_sum_is_a_times_one_minus_m_plus_b_times_m(tiny_sd1, tiny_sd1_b, out_dir):
    result = merge_checkpoints(MergeRequest(tiny_sd1, tiny_sd1_b, interp_method="Weighted sum", multiplier=M),
                               out_dir)
    # A1111's default name, in the first checkpoint folder
    assert result.path == out_dir / "0.7(tiny_sd1) + 0.3(tiny_sd1_b).safetensors"
    a, b, merged = load_file(tiny_sd1), load_file(tiny_sd1_b), load_file(result.path)
    assert set(merged) == set(a)
    differing = 0
    for key, value in merged.items():
        assert value.dtype == a[key].dtype, key
        if not value.is_floating_point():
            assert torch.equal(value, a[key]), key
            continue
        torch.testing.assert_close(value, a[key] * (1 - M) + b[key] * M, rtol=0, atol=1e-6, msg=key)
        differing += not torch.equal(a[key], b[key])
    assert differing > 100  # the two models really differ, so the check above means something
    assert result.merged == len([k for k in _floats(a) if not k.endswith("position_ids")])


def test_merge_recipe_metadata_like_a1111(tiny_sd1, tiny_sd1_b, out_dir):
    result = merge_checkpoints(MergeRequest(ModelRef(tiny_sd1), tiny_sd1_b, multiplier=0.25, custom_name="recipe"),
                               out_dir)
    with safe_open(str(result.path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["type"] == "webui"
    assert recipe["interp_method"] == "Weighted sum" and recipe["multiplier"] == 0.25
    assert recipe["primary_model_hash"] == file_sha256(tiny_sd1)
    assert recipe["secondary_model_hash"] == file_sha256(tiny_sd1_b)
    assert recipe["tertiary_model_hash"] is None
    models = json.loads(meta["sd_merge_models"])
    assert models[file_sha256(tiny_sd1)]["name"] == "tiny_sd1.safetensors"
    assert set(models) == {file_sha256(tiny_sd1), file_sha256(tiny_sd1_b)}

    # merging the merge carries its ancestry along
    again = merge_checkpoints(MergeRequest(result.path, tiny_sd1, custom_name="grandchild"), out_dir)
    with safe_open(str(again.path), framework="pt") as f:
        models2 = json.loads(f.metadata()["sd_merge_models"])
    assert models2[file_sha256(result.path)]["sd_merge_recipe"]["custom_name"] == "recipe"
    assert file_sha256(tiny_sd1_b) in models2


def test_add_difference_is_a_plus_b_minus_c_times_m(tiny_sd1, tiny_sd1_b, tiny_sd1_c, out_dir):
    result = merge_checkpoints(MergeRequest(tiny_sd1, tiny_sd1_b, tiny_sd1_c, interp_method="Add difference",
                                            multiplier=0.6), out_dir)
    assert result.path.name == "tiny_sd1 + 0.6(tiny_sd1_b - tiny_sd1_c).safetensors"
    a, b, c, merged = (load_file(p) for p in (tiny_sd1, tiny_sd1_b, tiny_sd1_c, result.path))
    for key, value in _floats(merged).items():
        if key.endswith("position_ids"):
            continue
        torch.testing.assert_close(value, a[key] + (b[key] - c[key]) * 0.6, rtol=0, atol=1e-6, msg=key)
    assert not torch.equal(merged["model.diffusion_model.out.2.weight"], a["model.diffusion_model.out.2.weight"])


def test_multiplier_zero_gives_model_a(tiny_sd1, tiny_sd1_b, out_dir):
    result = merge_checkpoints(MergeRequest(tiny_sd1, tiny_sd1_b, multiplier=0, custom_name="zero"), out_dir)
    a, merged = load_file(tiny_sd1), load_file(result.path)
    assert all(torch.equal(merged[k], a[k]) for k in a)


POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def test_save_as_float16_and_ckpt_format(tiny_sd1, tiny_sd1_b, tmp_path, out_dir):
    # real SD1 files carry an int64 position_ids table; it must come through as integers
    a_file = tmp_path / "a_with_ids.safetensors"
    save_file({**load_file(tiny_sd1), POSITION_IDS: torch.arange(77)[None]}, a_file)
    result = merge_checkpoints(MergeRequest(a_file, tiny_sd1_b, multiplier=M, save_as_half=True,
                                            checkpoint_format="ckpt", custom_name="half"), out_dir)
    assert result.path == out_dir / "half.ckpt"
    raw = torch.load(result.path, weights_only=True)  # a plain state dict, as A1111 writes it
    assert "state_dict" not in raw and INPUT_CONV in raw
    sd = load_state_dict(result.path)
    floats = _floats(sd)
    assert floats and all(v.dtype == torch.float16 for v in floats.values())
    assert torch.equal(sd[POSITION_IDS], torch.arange(77)[None])  # integer tables are not turned into halves
    a, b = load_file(tiny_sd1), load_file(tiny_sd1_b)
    expected = (a[INPUT_CONV] * (1 - M) + b[INPUT_CONV] * M).half()
    assert torch.equal(sd[INPUT_CONV], expected)


def test_result_loads_like_a_users_file_and_generates(tiny_sd1, tiny_sd1_b, tmp_path):
    out_dir = tmp_path / "Stable-diffusion"
    result = merge_checkpoints(MergeRequest(tiny_sd1, tiny_sd1_b, multiplier=0.5, save_as_half=True), out_dir)
    manager = manager_for(tmp_path)
    info = manager.registry.find_checkpoint(result.path.name)
    assert info is not None and info.filename == result.path
    model = manager.load(info)
    assert model.spec.label == "SD1.x"
    image = run(model, seed=7).images[0]
    assert image.size == (32, 32)
    assert pixels(image).std() > 0


def test_ckpt_inputs_are_read_safely(tiny_sd1, tiny_sd1_b, tmp_path):
    a_ckpt = tmp_path / "a.ckpt"
    torch.save({"state_dict": load_file(tiny_sd1)}, a_ckpt)
    result = merge_checkpoints(MergeRequest(a_ckpt, tiny_sd1_b, multiplier=M), tmp_path / "out")
    assert result.path.name == "0.7(a) + 0.3(tiny_sd1_b).safetensors"
    merged, a, b = load_file(result.path), load_file(tiny_sd1), load_file(tiny_sd1_b)
    torch.testing.assert_close(merged[INPUT_CONV], a[INPUT_CONV] * 0.7 + b[INPUT_CONV] * 0.3, rtol=0, atol=1e-6)

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": ModelRef}, evil)  # a pickle holding a class
    with pytest.raises(Exception, match="evil.ckpt"):
        merge_checkpoints(MergeRequest(evil, tiny_sd1_b), tmp_path / "out")


def test_keys_missing_in_b_are_copied_from_a(tiny_sd1, tiny_sd1_b, tmp_path):
    b = load_file(tiny_sd1_b)
    dropped = [k for k in b if k.startswith("cond_stage_model.")]
    partial = tmp_path / "unet_only.safetensors"
    save_file({k: v for k, v in b.items() if k not in dropped}, partial)
    result = merge_checkpoints(MergeRequest(tiny_sd1, partial, multiplier=M), tmp_path / "out")
    a, merged = load_file(tiny_sd1), load_file(result.path)
    assert dropped and all(torch.equal(merged[k], a[k]) for k in dropped)
    torch.testing.assert_close(merged[INPUT_CONV], a[INPUT_CONV] * 0.7 + b[INPUT_CONV] * 0.3, rtol=0, atol=1e-6)
    assert result.copied_from_a >= len(dropped)


def test_inpainting_a_with_normal_b_merges_the_shared_channels(tiny_inpaint, tiny_sd1_b, tiny_sd1_c, out_dir):
    result = merge_checkpoints(MergeRequest(tiny_inpaint, tiny_sd1_b, multiplier=M), out_dir)
    assert result.kind == "inpainting"
    assert result.path.name == "0.7(tiny_inpaint) + 0.3(tiny_sd1_b).inpainting.safetensors"
    a, b, merged = load_file(tiny_inpaint), load_file(tiny_sd1_b), load_file(result.path)
    assert merged[INPUT_CONV].shape[1] == 9
    torch.testing.assert_close(merged[INPUT_CONV][:, :4], a[INPUT_CONV][:, :4] * 0.7 + b[INPUT_CONV] * 0.3,
                               rtol=0, atol=1e-6)
    assert torch.equal(merged[INPUT_CONV][:, 4:], a[INPUT_CONV][:, 4:])
    with safe_open(str(result.path), framework="pt") as f:
        assert json.loads(f.metadata()["sd_merge_recipe"])["is_inpainting"] is True

    # add difference: the usual recipe for making an inpainting model of a custom one
    diff = merge_checkpoints(MergeRequest(tiny_inpaint, tiny_sd1_b, tiny_sd1_c, interp_method="Add difference",
                                          multiplier=1), out_dir)
    c, merged = load_file(tiny_sd1_c), load_file(diff.path)
    torch.testing.assert_close(merged[INPUT_CONV][:, :4], a[INPUT_CONV][:, :4] + b[INPUT_CONV] - c[INPUT_CONV],
                               rtol=0, atol=1e-6)
    assert torch.equal(merged[INPUT_CONV][:, 4:], a[INPUT_CONV][:, 4:])

    # the other way round is refused with A1111's advice
    with pytest.raises(MergeError, match="A must be the inpainting model") as err:
        merge_checkpoints(MergeRequest(tiny_sd1_b, tiny_inpaint), out_dir)
    assert str(err.value).startswith("Primary model (A):")


def test_different_architectures_name_the_key(tiny_sd1, tmp_path):
    sdxl = tmp_path / "tiny_xl.safetensors"
    write_tiny_checkpoint(sdxl, "sdxl", seed=0)
    with pytest.raises(MergeError, match=r"Secondary model \(B\): tensor model\.diffusion_model\.\S+ has shape"):
        merge_checkpoints(MergeRequest(tiny_sd1, sdxl), tmp_path / "out")
    assert not any((tmp_path / "out").glob("*"))  # nothing half-written


def test_no_interpolation_bakes_a_vae_and_discards_weights(tiny_sd1, tiny_sd1_b, tmp_path):
    b = load_file(tiny_sd1_b)
    vae_file = tmp_path / "VAE" / "other.vae.safetensors"
    vae_file.parent.mkdir()
    save_file({k[len("first_stage_model."):]: v for k, v in b.items() if k.startswith("first_stage_model.")},
              vae_file)
    result = merge_checkpoints(MergeRequest(tiny_sd1, interp_method="No interpolation", bake_in_vae=vae_file,
                                            discard_weights=r"^model_ema\.|position_ids", custom_name="baked"),
                               tmp_path / "out")
    a, merged = load_file(tiny_sd1), load_file(result.path)
    vae_keys = [k for k in a if k.startswith("first_stage_model.")]
    assert vae_keys and all(torch.equal(merged[k], b[k]) for k in vae_keys)
    assert not any("position_ids" in k for k in merged)
    others = [k for k in a if not k.startswith("first_stage_model.") and "position_ids" not in k]
    assert all(torch.equal(merged[k], a[k]) for k in others)

    unet_as_vae = tmp_path / "VAE" / "wrong.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}, unet_as_vae)
    with pytest.raises(MergeError, match=r"Bake in VAE: .*wrong\.safetensors.*no counterpart"):
        merge_checkpoints(MergeRequest(tiny_sd1, interp_method="No interpolation", bake_in_vae=unet_as_vae,
                                       custom_name="x"), tmp_path / "out")


def test_config_is_copied_beside_the_result(tiny_sd1, tiny_sd1_b, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    a = Path(shutil.copy(tiny_sd1, folder / "a.safetensors"))
    b = Path(shutil.copy(tiny_sd1_b, folder / "b.safetensors"))
    (folder / "b.yaml").write_text("model:\n  params: {}\n")
    result = merge_checkpoints(MergeRequest(a, b, custom_name="with_cfg"), tmp_path / "out")
    assert result.config == tmp_path / "out" / "with_cfg.yaml"
    assert result.config.read_text() == "model:\n  params: {}\n"  # A has none, so B's is used
    result = merge_checkpoints(MergeRequest(a, b, custom_name="no_cfg", config_source="Don't"), tmp_path / "out")
    assert result.config is None and not (tmp_path / "out" / "no_cfg.yaml").exists()


def test_an_input_is_never_overwritten(tiny_sd1, tiny_sd1_b, tmp_path):
    folder = tmp_path / "Stable-diffusion"
    folder.mkdir()
    a = Path(shutil.copy(tiny_sd1, folder / "mine.safetensors"))
    before = file_sha256(a)
    for request in (MergeRequest(a, tiny_sd1_b, custom_name="mine"),
                    MergeRequest(a, tiny_sd1_b, custom_name="mine.safetensors"),
                    MergeRequest(a, interp_method="No interpolation")):  # the default name is A's own
        with pytest.raises(MergeError, match="would overwrite the input .*mine.safetensors"):
            merge_checkpoints(request, folder)
    assert file_sha256(a) == before
    assert sorted(p.name for p in folder.iterdir()) == ["mine.safetensors"]  # no temp files left behind


def test_a_stopped_merge_writes_nothing(tiny_sd1, tiny_sd1_b, tmp_path):
    def stop(done, total):
        if done == total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_checkpoints(MergeRequest(tiny_sd1, tiny_sd1_b, custom_name="stopped"), tmp_path / "out",
                          progress=stop)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("changes,message", [
    ({"primary": "/nonexistent/a.safetensors"}, r"Primary model \(A\): /nonexistent/a.safetensors: file not found"),
    ({"secondary": None}, r"Secondary model \(B\): Weighted sum needs model B"),
    ({"interp_method": "Add difference"}, r"Tertiary model \(C\): Add difference needs model C"),
    ({"multiplier": 1.5}, r"Multiplier \(M\): 1.5 must be between 0 and 1"),
    ({"multiplier": "abc"}, r"Multiplier \(M\): 'abc' is not a number"),
    ({"multiplier": math.nan}, r"Multiplier \(M\): nan must be between 0 and 1"),
    ({"interp_method": "Sigmoid"}, r"Interpolation Method: 'Sigmoid' is not one of"),
    ({"checkpoint_format": "bin"}, r"Checkpoint format: 'bin' is not one of"),
    ({"discard_weights": "model_ema.("}, r"Discard weights with matching name: .* not a valid regular expression"),
    ({"custom_name": "../escape"}, r"Custom Name: '../escape' must be a file name without folders"),
    ({"bake_in_vae": "/nonexistent/v.pt"}, r"Bake in VAE: /nonexistent/v.pt: file not found"),
])
def test_bad_input_gets_a_message_naming_the_field(tiny_sd1, tiny_sd1_b, tmp_path, changes, message):
    fields = {"primary": tiny_sd1, "secondary": tiny_sd1_b, **changes}
    with pytest.raises(MergeError, match=message):
        merge_checkpoints(MergeRequest(**fields), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_job_on_the_queue_leaves_the_loaded_model_alone(tiny_sd1, tiny_sd1_b, tmp_path):
    from modules import cmd_args, merging
    from modules.jobs import Interrupted, JobState
    from modules.runtime import Runtime
    from tests.support.server import make_data_dir

    data = make_data_dir(tmp_path / "data", tiny_sd1, tiny_sd1_b)
    rt = Runtime(cmd_args.parse(["--data-dir", str(data), "--no-half"], env={}))
    rt.load_startup_model()
    loaded = rt.models.model
    assert merging.output_dir(rt) == data / "models" / "Stable-diffusion"

    a, b = (rt.registry.find_checkpoint(n) for n in ("tiny_sd1.safetensors", "tiny_sd1_b.safetensors"))
    request = MergeRequest(ModelRef(a.filename, a.model_name), ModelRef(b.filename, b.model_name), multiplier=0.5)
    stopped = JobState(id="stopped", interrupted=True)
    with pytest.raises(Interrupted):
        merging.merge_job(rt, request, stopped)
    assert sorted(p.name for p in merging.output_dir(rt).iterdir()) == ["tiny_sd1.safetensors",
                                                                       "tiny_sd1_b.safetensors"]

    payload = {"request": merging.to_payload(request)}
    assert merging.from_payload(json.loads(json.dumps(payload))["request"]) == request  # plain data
    job = rt.queue.submit("merge", payload)
    result = job.wait(120)
    assert job.state.sampling_step == job.state.sampling_steps == result.tensors  # progress for /progress
    with safe_open(str(result.path), framework="pt") as f:  # the registry's hash is in the recipe
        assert json.loads(f.metadata()["sd_merge_recipe"])["primary_model_hash"] == a.sha256
    rt.registry.refresh()
    merged = rt.registry.find_checkpoint(result.path.name)
    assert merged is not None and merged.title in rt.registry.titles()
    assert rt.models.model is loaded  # the merge did not unload or switch the model
    rt.switch_checkpoint(merged.title)
    assert rt.models.model.info.filename == result.path


def test_runtime_merge_checkpoints_by_title_relists_the_result(tiny_sd1, tiny_sd1_b, tmp_path):
    """What the Checkpoint Merger tab calls: titles in, the merged file listed under its new title out."""
    from modules import cmd_args, merging
    from modules.runtime import Runtime
    from tests.support.server import make_data_dir

    data = make_data_dir(tmp_path / "data", tiny_sd1, tiny_sd1_b)
    rt = Runtime(cmd_args.parse(["--data-dir", str(data), "--no-half"], env={}))
    a, b = (rt.registry.find_checkpoint(n) for n in ("tiny_sd1.safetensors", "tiny_sd1_b.safetensors"))
    folder = merging.output_dir(rt)
    before = sorted(folder.iterdir())

    for request, message in [
            (MergeRequest(None, b.title), r"Primary model \(A\): choose model A"),
            (MergeRequest(a.title, "nonexistent"), r"Secondary model \(B\): no checkpoint matches 'nonexistent'"),
            (MergeRequest(a.title, b.title, bake_in_vae="missing.vae.pt"), r"Bake in VAE: no VAE named"),
            (MergeRequest(a.title, b.title, multiplier=2), r"Multiplier \(M\): 2 must be between 0 and 1")]:
        with pytest.raises(merging.FAILURES, match=message):
            rt.merge_checkpoints(request)
    assert sorted(folder.iterdir()) == before

    done = rt.merge_checkpoints(MergeRequest(a.title, b.title, multiplier=0.5, custom_name="by_title",
                                             bake_in_vae="None"))
    assert done.path == folder / "by_title.safetensors" and done.path.is_file()
    merged = rt.registry.find_checkpoint("by_title")
    assert merged is not None and done.title == merged.title and done.title in merging.mergeable_titles(rt)
    with safe_open(str(done.path), framework="pt") as f:
        recipe = json.loads(f.metadata()["sd_merge_recipe"])
    assert recipe["primary_model_hash"] == file_sha256(tiny_sd1)
    assert recipe["secondary_model_hash"] == file_sha256(tiny_sd1_b)
