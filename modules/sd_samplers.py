"""A1111's `modules.sd_samplers`: the sampler list by A1111's names and options, from our sampler table
(modules/engine/samplers.py). Samplers here are names and options; the engine runs its own sampler functions, so
there is no k-diffusion sampler object to create.
"""
from __future__ import annotations

from collections import namedtuple

from modules.engine import samplers as _engine

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


def _constructor(spec):
    def create(model):
        return create_sampler(spec.name, model)
    return create


all_samplers: list[SamplerData] = [
    SamplerData(s.name, _constructor(s), list(s.aliases), s.to_api()["options"]) for s in _engine.SAMPLERS]
all_samplers_map: dict[str, SamplerData] = {s.name: s for s in all_samplers}
samplers: list[SamplerData] = list(all_samplers)
samplers_for_img2img: list[SamplerData] = list(all_samplers)
samplers_map: dict[str, str] = {}
for _s in all_samplers:
    samplers_map[_s.name.lower()] = _s.name
    for _alias in _s.aliases:
        samplers_map[_alias.lower()] = _s.name


def set_samplers() -> None:
    """A1111 rebuilds the visible lists from the hide_samplers setting; every sampler we have is shown."""


def visible_sampler_names() -> list[str]:
    return [s.name for s in samplers]


def find_sampler_config(name: str | None) -> SamplerData | None:
    """A sampler by name or alias (any case); the first one when name is None."""
    if name is None:
        return all_samplers[0]
    key = samplers_map.get(name.lower())
    return all_samplers_map.get(key) if key else None


def get_sampler_and_scheduler(sampler_name: str, scheduler_name: str | None, *, convert_automatic: bool = True):
    """(sampler name, schedule type) for A1111's names, legacy "DPM++ 2M Karras" included."""
    spec, schedule = _engine.resolve(sampler_name, scheduler_name or "Automatic")
    if not convert_automatic and (scheduler_name or "Automatic") == "Automatic" \
            and sampler_name.lower() == spec.name.lower():
        schedule = "Automatic"
    return spec.name, schedule


def create_sampler(name: str, model):
    raise NotImplementedError(
        f"sd_samplers.create_sampler({name!r}): this web UI samples with diffusers schedulers, not k-diffusion "
        "sampler objects, so an extension cannot build and drive a sampler itself; set p.sampler_name (and "
        "p.scheduler) and let processing.process_images run it, or use the cfg_denoiser/after_step hooks")
