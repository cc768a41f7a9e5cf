"""A1111's module surface bound to a real runtime (modules.shared and the modules extensions import with it): the
names follow the runtime, shared.state is the running job's JobState, sd_model is a view of the loaded tiny model,
upscalers and checkpoints are ours, extension GPU calls run on the job queue."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from modules import (call_queue, cmd_args, devices, errors, hashes, paths, paths_internal, sd_models, sd_samplers,
                     sd_schedulers, sd_vae, shared)
from modules.engine import samplers as engine_samplers
from modules.models.hashing import file_sha256
from modules.options import OptionInfo
from modules.runtime import Runtime
from tests.support.model_factory import write_tiny_checkpoint


@pytest.fixture(scope="module")
def rt(tmp_path_factory, tiny_sd1):
    data = tmp_path_factory.mktemp("a1111")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    (data / "models" / "Stable-diffusion" / "first.safetensors").write_bytes(tiny_sd1.read_bytes())
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nNeon,neon {prompt},dull\n", encoding="utf-8")
    runtime = Runtime(cmd_args.parse(["--data-dir", str(data), "--no-half"], env={}))
    runtime.load_startup_model()
    return runtime


@pytest.fixture
def bound(rt, monkeypatch):
    """shared bound to the test runtime, and unbound again afterwards."""
    for name in ("_runtime", "_model_view", "_upscalers", "config_filename", "device", "data_path", "models_path"):
        monkeypatch.setattr(shared, name, getattr(shared, name))
    shared.bind(rt)
    return rt


def test_shared_names_are_views_of_the_runtime(bound):
    rt = bound
    from modules.shared import cmd_opts, opts
    assert opts.data_labels is shared.options_templates is rt.options.info
    shared.options_templates.update(shared.options_section(("myext", "My ext"), {
        "myext_level": shared.OptionInfo(2, "Level", component_args={"minimum": 0, "maximum": 5})}))
    assert rt.options.data["myext_level"] == 2 and opts.myext_level == 2
    opts.set("myext_level", 3, save=False)
    assert rt.options.get("myext_level") == 3
    assert cmd_opts.data_dir == str(rt.paths.data) and cmd_opts.lora_dir == str(rt.paths.lora)
    assert cmd_opts.disable_extension_access is False and cmd_opts.ngrok is None
    assert shared.config_filename == str(rt.paths.settings_file)
    assert paths.models_path == paths_internal.models_path == shared.models_path == str(rt.paths.models)
    assert shared.prompt_styles.styles["Neon"].prompt == "neon {prompt}"
    assert shared.prompt_styles.styles["Neon"].negative_prompt == "dull"
    assert list(shared.latent_upscale_modes)[0] == "Latent"
    assert (devices.device, devices.dtype, devices.dtype_vae) == (rt.device.device, rt.device.dtype,
                                                                 rt.device.vae_dtype)
    assert shared.device == devices.get_optimal_device() == rt.device.device
    assert shared.list_checkpoint_tiles() == rt.registry.titles()


def test_state_begin_end_nest_outside_a_job(bound):
    state = shared.state
    state.begin(job="caption")
    state.job_count = 3
    state.begin()
    state.end()
    assert (state.job, state.job_count) == ("caption", 3)
    state.nextjob()
    assert state.job_no == 1
    state.end()
    assert state.job == "" and state.job_count == 0
    state.end()  # one end too many does nothing
    snapshot = json.loads(json.dumps(vars(state)))
    assert {"interrupted", "job_count", "sampling_step", "server_start"} <= set(snapshot)
    assert state.dict()["job"] == ""


def test_state_is_the_running_jobs_jobstate(bound):
    rt = bound
    started, release = threading.Event(), threading.Event()

    def probe(rt_, payload, state):
        shared.state.begin(job="inner")     # inside a job: keeps the job's state
        shared.state.job_count = 5
        shared.state.end()
        before = shared.state.interrupted
        started.set()
        release.wait(30)
        return before, shared.state.interrupted, shared.state.skipped, shared.state.job_count

    rt.executors["probe"] = probe
    job = rt.queue.submit("probe")
    assert started.wait(30)
    rt.queue.interrupt_current()            # the UI's Interrupt button
    shared.state.skip()                     # an extension's button, from another thread
    release.set()
    assert job.wait(30) == (False, True, True, 5)
    assert job.state.job_count == 5 and job.state.interrupted


def test_sd_model_is_a_view_of_the_loaded_model(bound):
    rt = bound
    model = shared.sd_model
    assert model is shared.sd_model                         # one view per loaded model
    assert (model.is_sd1, model.is_sd2, model.is_sdxl) == (True, False, False)
    info = model.sd_checkpoint_info
    assert info.title == rt.models.model.info.title and info.name_for_extra == "first"
    assert info.filename == str(rt.models.model.info.filename) and len(info.shorthash) == 10
    assert model.sd_model_hash == info.shorthash and model.sd_model_checkpoint == info.filename
    assert info.sha256 == file_sha256(info.filename) and info.hash == sd_models.model_hash(info.filename)
    assert model.unet is rt.models.model.unet               # everything else is our model's
    model.my_tag = "x"
    assert shared.sd_model.my_tag == "x"


def test_sd_models_lists_and_loads_through_the_queue(bound, tmp_path):
    rt = bound
    first = rt.models.model.info
    assert list(sd_models.checkpoints_list) == rt.registry.titles()
    assert sd_models.get_closet_checkpoint_match("first").filename == str(first.filename)
    assert sd_models.checkpoint_aliases[first.shorthash].title == first.title
    assert sd_models.select_checkpoint().title == first.title
    write_tiny_checkpoint(rt.paths.checkpoints / "second.safetensors", "sd1", seed=3)
    assert sd_models.get_closet_checkpoint_match("second") is None
    sd_models.list_models()
    second = sd_models.get_closet_checkpoint_match("second")
    try:
        assert sd_models.reload_model_weights(info=second).sd_checkpoint_info.name == "second.safetensors"
        assert rt.options.sd_model_checkpoint == second.title
    finally:
        sd_models.reload_model_weights(info=sd_models.checkpoints_list[first.title])
    assert shared.sd_model.sd_checkpoint_info.title == first.title
    assert sd_vae.vae_dict == {} and sd_vae.reload_vae_weights() is shared.sd_model


def test_sd_upscalers_and_one_real_upscale(bound):
    names = [u.name for u in shared.sd_upscalers]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    lanczos, nearest = shared.sd_upscalers[1], shared.sd_upscalers[2]
    out = lanczos.scaler.upscale(image, 2, lanczos.data_path)
    assert out.size == (32, 32)
    assert np.array_equal(np.asarray(out), np.asarray(image.resize((32, 32), Image.Resampling.LANCZOS)))
    assert not np.array_equal(np.asarray(out), np.asarray(nearest.scaler.upscale(image, 2, nearest.data_path)))
    assert shared.sd_upscalers[0].scaler.upscale(image, 2, None).size == (32, 32)


def test_sd_samplers_and_schedulers_are_our_table():
    assert sd_samplers.visible_sampler_names() == engine_samplers.sampler_names()
    assert sd_samplers.samplers_map["k_euler_a"] == "Euler a"
    assert sd_samplers.all_samplers_map["Euler"].aliases == ["k_euler"]
    assert sd_samplers.find_sampler_config("k_dpmpp_2m").name == "DPM++ 2M"
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", "Automatic") == ("DPM++ 2M", "Karras")
    with pytest.raises(NotImplementedError, match="diffusers"):
        sd_samplers.create_sampler("Euler", None)
    assert sd_schedulers.schedulers_map["karras"] is sd_schedulers.schedulers_map["Karras"]


def test_wrap_gradio_gpu_call_runs_on_the_job_queue(bound):
    rt = bound

    def work(task_id, x):
        return f"{x} on job thread: {shared.on_job_thread()}", shared.state.job

    wrapped = call_queue.wrap_gradio_gpu_call(work, extra_outputs=[None])
    text, job = wrapped("task(a1111test1)", "hi")[:2]
    assert text == "hi on job thread: True"
    assert job.startswith(call_queue.JOB_KIND) and "Time taken" in job   # A1111 adds the time to the last output
    assert rt.queue.find("task(a1111test1)") is not None

    def broken(task_id):
        raise ValueError("no good")

    out = call_queue.wrap_gradio_gpu_call(broken, extra_outputs=[None])("task(a1111test2)")
    assert out[0] is None and "ValueError: no good" in out[1]
    assert errors.get_exceptions()[0]["exception"] == "no good"


def test_devices_names():
    assert devices.cpu == torch.device("cpu") and isinstance(devices.has_mps(), bool)
    with devices.autocast(), devices.without_autocast():
        pass
    with pytest.raises(devices.NansException, match="A tensor with NaNs was produced in Unet"):
        devices.test_for_nans(torch.full((2,), float("nan")), "unet")
    devices.test_for_nans(torch.zeros(2), "unet")


def test_hashes_use_the_runtime_cache(bound, tmp_path):
    path = tmp_path / "lora.safetensors"
    header = b'{"__metadata__":{}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"tensor-bytes")
    assert hashes.sha256_from_cache(str(path), "lora/x") is None
    assert hashes.sha256(str(path), "lora/x") == file_sha256(path)
    assert hashes.sha256_from_cache(str(path), "lora/x") == file_sha256(path)
    import hashlib
    assert hashes.sha256(str(path), "lora/x", use_addnet_hash=True) == hashlib.sha256(b"tensor-bytes").hexdigest()


def test_unbound_names_say_what_is_missing(monkeypatch):
    monkeypatch.setattr(shared, "_runtime", None)
    assert shared.sd_model is None
    with pytest.raises(shared.NotBound, match="shared.bind"):
        _ = shared.opts.samples_save
    assert isinstance(shared.options_templates, dict)
    assert OptionInfo is shared.OptionInfo
