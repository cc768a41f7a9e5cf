"""A1111 sampler and schedule names, mapped onto diffusers schedulers.

Each entry says which diffusers scheduler class implements the sampler and with which options; schedule types map to
the sigma-spacing options diffusers offers. Only combinations that actually run are listed (GET /samplers shows these).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import diffusers


class SamplerError(ValueError):
    pass


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    cls: str
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    default_schedule: str = "Uniform"
    ancestral: bool = False
    schedules: tuple[str, ...] = ("Uniform", "Karras", "Exponential")

    def to_api(self) -> dict:
        return {"name": self.name, "aliases": list(self.aliases), "options": {}}


SAMPLERS: list[SamplerSpec] = [
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                ("k_dpmpp_2m",), default_schedule="Karras"),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                ("k_dpmpp_2m_sde",), default_schedule="Exponential", ancestral=True),
    SamplerSpec("DPM++ 2S a", "DPMSolverSinglestepScheduler", {"solver_order": 2, "lower_order_final": True},
                ("k_dpmpp_2s_a",),
                default_schedule="Uniform"),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, ("k_euler_a", "k_euler_ancestral"),
                ancestral=True, schedules=("Uniform",)),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, ("k_euler",)),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, ("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, ("k_heun",)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, ("k_dpm_2",)),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, ("k_dpm_2_a",), ancestral=True),
    SamplerSpec("DDIM", "DDIMScheduler", {}, ("ddim",), schedules=("Uniform",)),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, ("plms",), schedules=("Uniform",)),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, ("unipc",)),
    SamplerSpec("LCM", "LCMScheduler", {}, ("k_lcm",), schedules=("Uniform",)),
]

SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential"]
_SCHEDULE_OPTIONS = {"Uniform": {}, "Karras": {"use_karras_sigmas": True},
                     "Exponential": {"use_exponential_sigmas": True}}


def _lookup() -> dict[str, SamplerSpec]:
    table = {}
    for s in SAMPLERS:
        for key in (s.name, *s.aliases):
            table[key.lower()] = s
    return table


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def resolve(sampler_name: str | None, scheduler: str | None = "Automatic") -> tuple[SamplerSpec, str]:
    """Sampler and concrete schedule for the names a user or client gave; legacy 'DPM++ 2M Karras' is split."""
    name = (sampler_name or "").strip()
    schedule = (scheduler or "Automatic").strip()
    table = _lookup()
    spec = table.get(name.lower())
    if spec is None:
        for sched in SCHEDULES[1:]:
            if name.lower().endswith(" " + sched.lower()):
                spec = table.get(name[: -len(sched) - 1].lower())
                if spec is not None:
                    schedule = sched
                    break
    if spec is None:
        raise SamplerError(f"sampler_name: unknown sampler {sampler_name!r}; choose one of {sampler_names()}")
    canonical = {s.lower(): s for s in SCHEDULES}.get(schedule.lower())
    if canonical is None:
        raise SamplerError(f"scheduler: unknown schedule type {scheduler!r}; choose one of {SCHEDULES}")
    if canonical == "Automatic":
        canonical = spec.default_schedule
    if canonical not in spec.schedules:
        raise SamplerError(f"scheduler: {spec.name} supports the schedule types {['Automatic', *spec.schedules]}, "
                           f"not {scheduler!r}")
    return spec, canonical


def make_scheduler(spec: SamplerSpec, schedule: str, base_config: dict):
    cls = getattr(diffusers, spec.cls)
    config = {**base_config, **spec.options, **_SCHEDULE_OPTIONS[schedule]}
    # k-diffusion-style samplers in A1111 space timesteps over the whole range ("trailing"/linspace); diffusers'
    # SD default "leading" skips the noisiest step and gives visibly under-denoised images at low step counts.
    if "timestep_spacing" not in config:
        config["timestep_spacing"] = "trailing" if spec.cls not in ("PNDMScheduler",) else "leading"
    return cls.from_config(config)
