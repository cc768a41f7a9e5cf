"""Per-step progress, live previews, and interrupt/skip taking effect within one step, through the job queue."""
from __future__ import annotations

import threading

import pytest

from modules import processing
from modules.engine.hooks import Hooks
from modules.engine.params import GenerationParams
from modules.jobs import JobQueue


def callable_queue() -> JobQueue:
    """A queue whose jobs carry the function to run (a test harness; the runtime's jobs carry data)."""
    return JobQueue(lambda kind, payload, state: payload["fn"](state))
from tests.support.engine_helpers import load_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("progress"))


def params(**kw):
    return GenerationParams(**{"prompt": "x", "steps": 12, "width": 32, "height": 32, "seed": 1,
                               "sampler_name": "Euler", **kw})


def test_interrupt_stops_within_one_step(model):
    queue = callable_queue()
    reached = threading.Event()
    seen = []

    def hook(args):
        step = args.step.index
        seen.append(step)
        if step == 2:
            reached.set()
            job.state.interrupt()  # as if the user clicked Interrupt during step 3

    hooks = Hooks()
    hooks.add("after_step", hook)
    job = queue.submit("txt2img", {"fn": lambda state: processing.process(model, params(n_iter=3), state,
                                                                 hooks=hooks)})
    result = job.wait(60)
    assert reached.is_set() and seen == [0, 1, 2]  # no step ran after the interrupt
    assert len(result.images) == 1 and job.state.interrupted  # the partial image is kept, later batches are not run


def test_skip_moves_to_the_next_batch(model):
    queue = callable_queue()
    steps_per_batch = {}

    def hook(args):
        step = args.step.index
        batch = job.state.job_no
        steps_per_batch.setdefault(batch, []).append(step)
        if batch == 0 and step == 1:
            job.state.skip()

    hooks = Hooks()
    hooks.add("after_step", hook)
    job = queue.submit("txt2img", {"fn": lambda state: processing.process(model, params(n_iter=2, steps=4), state,
                                                                 hooks=hooks)})
    result = job.wait(60)
    assert steps_per_batch == {0: [0, 1], 1: [0, 1, 2, 3]}
    assert len(result.images) == 2


def test_progress_eta_and_live_preview(model):
    queue = callable_queue()
    snapshots = []

    def hook(args):
        step = args.step.index
        st = job.state
        snapshots.append((st.sampling_step, st.sampling_steps, round(st.progress(), 3), st.eta(),
                          st.current_image is not None))

    hooks = Hooks()
    hooks.add("after_step", hook)
    job = queue.submit("txt2img", {"fn": lambda state: processing.process(
        model, params(steps=4), state, processing.RunOptions(preview_every=2), hooks=hooks)})
    job.wait(60)
    assert [s[:3] for s in snapshots] == [(1, 4, 0.25), (2, 4, 0.5), (3, 4, 0.75), (4, 4, 1.0)]
    assert all(s[3] is not None and s[3] >= 0 for s in snapshots)
    assert [s[4] for s in snapshots] == [False, True, True, True]  # first preview after step 2
    assert job.state.current_image.size == (32, 32)


def test_fitted_preview_map_is_stored_in_and_read_from_the_checkpoint(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from modules.engine import latent_preview
    from tests.support.model_factory import manager_for, write_tiny_checkpoint
    (tmp_path / "Stable-diffusion").mkdir()
    path = tmp_path / "Stable-diffusion" / "m.safetensors"
    write_tiny_checkpoint(path, "sd1", seed=2)
    model = manager_for(tmp_path).require()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(np.kron(rng.integers(0, 255, (4, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8))
              for _ in range(6)]
    table = latent_preview.fit_latent_rgb(model, images)
    assert len(table) == 4 and all(len(r) == 3 for r in table)

    def error(m):
        lat = __import__("modules.engine.vae_codec", fromlist=["x"]).images_to_latents(m, images[:1])
        prev = np.asarray(latent_preview.preview(m, lat).resize((16, 16)), dtype=float)
        return np.abs(prev - np.asarray(images[0].resize((16, 16)), dtype=float)).mean()

    default_error = error(model)
    write_tiny_checkpoint(path, "sd1", seed=2, metadata={latent_preview.METADATA_KEY: json.dumps(table)})
    refit = manager_for(tmp_path).require()
    assert refit.extra["latent_rgb"] == table
    assert error(refit) < default_error  # the fitted map previews this model's latents better
