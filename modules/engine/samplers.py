"""A1111 sampler and schedule names, mapped onto diffusers schedulers.

Each sampler names the diffusers scheduler class that implements it and its options. Schedule types become either a
diffusers option (Karras/Exponential/Beta sigmas, a timestep spacing) or, for schedulers that take custom sigmas, a
sigma list computed here (Polyexponential, KL Optimal, Align Your Steps; diffusers has no option for those, so the
few lines that compute them are ours). Only pairs that run are offered: GET /samplers and /schedulers list these.

Not offered, because diffusers has no implementation and we have not written one yet: DPM++ 2S a (ancestral
single-step), DPM fast, DPM adaptive, Restart, DDIM CFG++.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

import diffusers
import numpy as np


class SamplerError(ValueError):
    pass


# schedule name → how it is made
SPACING = {"Uniform": "linspace", "Normal": "linspace", "SGM Uniform": "trailing", "Simple": "trailing",
           "DDIM": "leading"}
FLAGS = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas", "Beta": "use_beta_sigmas"}
CUSTOM_SIGMAS = ("Polyexponential", "KL Optimal", "Align Your Steps")
CUSTOM_SIGMA_CLASSES = {"EulerDiscreteScheduler"}  # the diffusers schedulers whose set_timesteps takes any sigmas
SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
             "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
SCHEDULE_ALIASES = {"uniform": "Uniform", "karras": "Karras", "exponential": "Exponential",
                    "polyexponential": "Polyexponential", "sgm_uniform": "SGM Uniform", "kl_optimal": "KL Optimal",
                    "align_your_steps": "Align Your Steps", "simple": "Simple", "normal": "Normal", "ddim": "DDIM",
                    "beta": "Beta", "automatic": "Automatic"}
SCHEDULE_RHO = {"Karras": 7.0, "Polyexponential": 1.0}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    cls: str
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    default_schedule: str = "Uniform"
    ancestral: bool = False   # draws fresh noise every step (ENSD applies)
    requires: str | None = None

    def to_api(self) -> dict:
        return {"name": self.name, "aliases": list(self.aliases), "options": {}}

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    @property
    def schedules(self) -> tuple[str, ...]:
        """The schedule types this sampler's scheduler can follow."""
        import inspect
        cls = getattr(diffusers, self.cls)
        init = inspect.signature(cls.__init__).parameters
        out = [s for s, spacing in SPACING.items() if "timestep_spacing" in init]
        out += [s for s, flag in FLAGS.items() if flag in init]
        if self.cls in CUSTOM_SIGMA_CLASSES:
            out += list(CUSTOM_SIGMAS)
        return tuple(s for s in SCHEDULES if s in out) or ("Uniform",)


SAMPLERS_ALL: list[SamplerSpec] = [
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                ("k_dpmpp_2m",), default_schedule="Karras"),
    SamplerSpec("DPM++ SDE", "DPMSolverSDEScheduler", {}, ("k_dpmpp_sde",), default_schedule="Karras",
                ancestral=True, requires="torchsde"),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                ("k_dpmpp_2m_sde",), default_schedule="Exponential", ancestral=True),
    SamplerSpec("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                ("k_dpmpp_2m_sde_heun",), default_schedule="Exponential", ancestral=True),
    SamplerSpec("DPM++ 3M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                ("k_dpmpp_3m_sde",), default_schedule="Exponential", ancestral=True),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, ("k_euler_a", "k_euler_ancestral"),
                ancestral=True),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, ("k_euler",)),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, ("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, ("k_heun",)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, ("k_dpm_2",), default_schedule="Karras"),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, ("k_dpm_2_a",), default_schedule="Karras",
                ancestral=True),
    SamplerSpec("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}, ("ddim",), default_schedule="DDIM"),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, ("plms",), default_schedule="DDIM"),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, ("unipc",)),
    SamplerSpec("LCM", "LCMScheduler", {}, ("k_lcm",), default_schedule="SGM Uniform"),
]
SAMPLERS = [s for s in SAMPLERS_ALL if s.available]


def _lookup() -> dict[str, SamplerSpec]:
    table = {}
    for s in SAMPLERS:
        for key in (s.name, *s.aliases):
            table[key.lower()] = s
    return table


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def canonical_schedule(name: str | None) -> str | None:
    key = (name or "Automatic").strip()
    return {s.lower(): s for s in SCHEDULES}.get(key.lower()) or SCHEDULE_ALIASES.get(key.lower())


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
    canonical = canonical_schedule(schedule)
    if canonical is None:
        raise SamplerError(f"scheduler: unknown schedule type {scheduler!r}; choose one of {SCHEDULES}")
    if canonical == "Automatic":
        canonical = spec.default_schedule
    if canonical not in spec.schedules:
        raise SamplerError(f"scheduler: {spec.name} supports the schedule types {['Automatic', *spec.schedules]}, "
                           f"not {scheduler!r}")
    return spec, canonical


# Align Your Steps: the published 10-step noise levels (Sabour et al. 2024) for SD 1.5 and SDXL; other step counts
# are interpolated log-linearly, as the paper describes.
AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def custom_sigmas(schedule: str, steps: int, sigma_min: float, sigma_max: float, sdxl: bool = False) -> list[float]:
    """Noise levels (without the final 0) for the schedules diffusers has no option for."""
    if schedule == "Polyexponential":
        ramp = np.linspace(1, 0, steps) ** SCHEDULE_RHO["Polyexponential"]
        return list(np.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))
    if schedule == "KL Optimal":
        t = np.linspace(0, 1, steps)
        return list(np.tan(t * math.atan(sigma_min) + (1 - t) * math.atan(sigma_max)))
    if schedule == "Align Your Steps":
        base = np.log(AYS_SDXL if sdxl else AYS_SD15)
        xs = np.linspace(0, 1, len(base))
        return list(np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, base))[:-1])
    raise SamplerError(f"scheduler: {schedule!r} is not a custom-sigma schedule")


def make_scheduler(spec: SamplerSpec, schedule: str, base_config: dict):
    cls = getattr(diffusers, spec.cls)
    config = {**base_config, **spec.options}
    if schedule in FLAGS:
        config[FLAGS[schedule]] = True
    if schedule in SPACING:
        config["timestep_spacing"] = SPACING[schedule]
    else:
        config.setdefault("timestep_spacing", "linspace")
    if spec.cls == "DPMSolverSinglestepScheduler":
        config["lower_order_final"] = True
    return cls.from_config(config)


def prepare(spec: SamplerSpec, schedule: str, base_config: dict, steps: int, device, sdxl: bool = False,
            noise_seed: int | None = None):
    """A scheduler with its timesteps set for `steps` sampling steps. noise_seed seeds the Brownian-tree noise of
    DPM++ SDE (it takes no generator; without a seed it would differ on every run)."""
    if spec.cls == "DPMSolverSDEScheduler" and noise_seed is not None:
        base_config = {**base_config, "noise_sampler_seed": int(noise_seed)}
    scheduler = make_scheduler(spec, schedule, base_config)
    if schedule in CUSTOM_SIGMAS:
        alphas = np.asarray(scheduler.alphas_cumprod)
        all_sigmas = ((1 - alphas) / alphas) ** 0.5
        sigmas = custom_sigmas(schedule, steps, float(all_sigmas[0]), float(all_sigmas[-1]), sdxl)
        scheduler.set_timesteps(device=device, sigmas=sigmas)
    else:
        scheduler.set_timesteps(steps, device=device)
    return scheduler
