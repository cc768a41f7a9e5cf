"""Merging checkpoints as a runtime action, the same for every face: names in a MergeRequest are resolved against the
model registry, the merge runs as a job on the one queue (so it waits for a running generation instead of competing
with it, and never touches the loaded model), then the model list is rescanned so the result is listed at once.

The arithmetic lives in modules.models.merge; the Checkpoint Merger tab calls this through Runtime.merge_checkpoints.
No Gradio or FastAPI here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from modules.jobs import Interrupted, JobState
from modules.models import merge as model_merge
from modules.models.merge import MergeError, MergeRequest, MergeResult, ModelRef
from modules.models.safe_load import ModelFileError

# A merge that fails with one of these has a message for the user (a bad field, an unreadable file, Interrupt, a full
# disk); nothing was written then.
FAILURES = (MergeError, ModelFileError, Interrupted, OSError, RuntimeError, ValueError)
NO_VAE = "None"  # the "Bake in VAE" choice that bakes nothing (A1111's)


@dataclass
class MergeOutcome:
    path: Path
    title: str           # the new checkpoint's entry in the checkpoint lists (its file name if it is not listed)
    config: Path | None  # the config copied beside it, if any
    result: MergeResult


def output_dir(rt) -> Path:
    """Where merges go: the --ckpt-dir folder when given (as in A1111), else models/Stable-diffusion."""
    return rt.paths.extra_checkpoint_dirs[0] if rt.paths.extra_checkpoint_dirs else rt.paths.checkpoints


def mergeable_titles(rt) -> list[str]:
    """The checkpoints a merge can read: single files (diffusers folders cannot be merged)."""
    return [c.title for c in rt.registry.checkpoints if not c.is_diffusers_dir]


def merge(rt, request: MergeRequest) -> MergeOutcome:
    """Runs `request` on rt.queue and waits. Its models may be checkpoint titles or names (as the lists show them),
    ModelRefs or paths; bake_in_vae may be a VAE name, a path, or "None". Raises one of FAILURES on bad input (at
    once, before the queue's current job finishes) or when the merge fails or is interrupted."""
    resolved = dataclasses.replace(
        request, primary=_model(rt, request.primary, "primary_model_name"),
        secondary=_model(rt, request.secondary, "secondary_model_name"),
        tertiary=_model(rt, request.tertiary, "tertiary_model_name"), bake_in_vae=_vae(rt, request.bake_in_vae))
    if resolved.primary is None:
        raise MergeError("primary_model_name", "choose model A")
    model_merge.validate(resolved)
    result = rt.queue.run("merge", {"request": to_payload(resolved)})
    rt.registry.refresh()
    info = rt.registry.find_checkpoint(str(result.path))
    return MergeOutcome(result.path, info.title if info else result.path.name, result.config, result)


def to_payload(request: MergeRequest) -> dict:
    """A resolved MergeRequest as a job payload: plain data (paths as strings)."""
    def plain(value):
        if isinstance(value, ModelRef):
            return {"path": str(value.path), "name": value.name, "sha256": value.sha256}
        return str(value) if isinstance(value, Path) else value
    return {f.name: plain(getattr(request, f.name)) for f in dataclasses.fields(request)}


def from_payload(data: dict) -> MergeRequest:
    values = dict(data)
    for key in ("primary", "secondary", "tertiary"):
        if isinstance(values.get(key), dict):
            values[key] = ModelRef(Path(values[key]["path"]), values[key]["name"], values[key]["sha256"])
    if values.get("bake_in_vae"):
        values["bake_in_vae"] = Path(values["bake_in_vae"])
    return MergeRequest(**values)


def merge_job(rt, request: MergeRequest, state: JobState) -> MergeResult:
    """Runs on the job worker: hashes come from the registry's cache, progress goes to /progress, Interrupt stops."""
    for ref in (request.primary, request.secondary, request.tertiary):
        if isinstance(ref, ModelRef) and ref.sha256 is None:
            info = rt.registry.find_checkpoint(str(ref.path))
            if info is not None:
                rt.registry.ensure_hash(info)
                ref.sha256 = info.sha256
    state.job_count = 1

    def progress(done: int, total: int) -> None:
        state.sampling_steps, state.sampling_step = total, done
        if state.interrupted:
            raise Interrupted("merge interrupted; nothing was written")

    return model_merge.merge_checkpoints(request, output_dir(rt), progress)


def _model(rt, value: ModelRef | Path | str | None, field: str) -> ModelRef | None:
    if value is None or value == "":
        return None
    if isinstance(value, ModelRef):
        return value
    if isinstance(value, Path):
        return ModelRef(value)
    info = rt.registry.find_checkpoint(value)
    if info is None:
        raise MergeError(field, f"no checkpoint matches {value!r}; refresh the checkpoint list if the file is new")
    return ModelRef(info.filename, info.model_name, info.sha256)


def _vae(rt, value: Path | str | None) -> Path | None:
    if value is None or value in ("", NO_VAE):
        return None
    if isinstance(value, Path):
        return value
    found = rt.registry.find_vae(value)
    if found is None:
        raise MergeError("bake_in_vae", f"no VAE named {value!r}")
    return found.filename
