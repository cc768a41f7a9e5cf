"""A1111's `modules.sd_schedulers`: the schedule types by A1111's names and labels, from our sampler table
(modules/engine/samplers.py). The engine computes the sigmas itself, so `function` is None."""
from __future__ import annotations

from collections import namedtuple

from modules.engine import samplers as _engine

Scheduler = namedtuple("Scheduler", ["name", "label", "function", "default_rho", "need_inner_model", "aliases"],
                       defaults=[-1, False, None])

_NAMES = {label: name for name, label in _engine.SCHEDULE_ALIASES.items()}
schedulers: list[Scheduler] = [
    Scheduler(_NAMES.get(label, label.lower().replace(" ", "_")), label, None,
              default_rho=_engine.SCHEDULE_RHO.get(label, -1))
    for label in _engine.SCHEDULES]
schedulers_map: dict[str, Scheduler] = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}
