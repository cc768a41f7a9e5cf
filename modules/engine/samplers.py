"""A1111 sampler and schedule names.

Every sampler runs as A1111 runs it (modules/engine/k_sampling.py: k-diffusion-style functions over A1111's σ lists
and timestep grids, with A1111's noise; modules/engine/a1111_loop.py: the pass), so the same infotext gives the same
image. k_sigmas builds A1111's σ list for a schedule type. A spec may still name a diffusers scheduler class (`cls`)
instead of a function: the older diffusers path in sampling.py then runs it (no built-in sampler uses it now).

"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

import diffusers
import numpy as np
import torch


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
    cls: str | None = None           # a diffusers scheduler class (samplers we run through diffusers)
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    default_schedule: str = "Uniform"
    ancestral: bool = False   # A1111's uses_ensd: draws fresh noise every step (ENSD is written to the infotext)
    requires: str | None = None
    func: str | None = None          # our A1111-exact sampler function in modules.engine.k_sampling
    kind: str = "k"                  # "k": over a σ list; "timesteps": DDIM-style over A1111's timestep grid
    discard_penultimate: bool = False  # A1111 drops the next-to-last σ (and samples one step more)
    brownian: bool = False           # SDE samplers: noise from a Brownian tree seeded with the image seeds
    second_order: bool = False

    def to_api(self) -> dict:
        """GET /sdapi/v1/samplers: name, aliases and A1111's option flags for this sampler."""
        options = {}
        if self.default_schedule != "Uniform":
            options["scheduler"] = self.default_schedule.lower()
        if self.discard_penultimate:
            options["discard_next_to_last_sigma"] = True
        if self.ancestral:
            options["uses_ensd"] = True
        if self.second_order:
            options["second_order"] = True
        if self.brownian:
            options["brownian_noise"] = True
        options.update(self.options)
        return {"name": self.name, "aliases": list(self.aliases), "options": options}

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    @property
    def schedules(self) -> tuple[str, ...]:
        """The schedule types this sampler follows. Our A1111-exact samplers take every schedule, as in A1111 (the
        timestep samplers DDIM, PLMS, UniPC ignore it, there too); diffusers-run ones what their scheduler offers."""
        if self.cls is None:
            return tuple(SCHEDULES[1:])
        import inspect
        cls = getattr(diffusers, self.cls)
        init = inspect.signature(cls.__init__).parameters
        out = [s for s, spacing in SPACING.items() if "timestep_spacing" in init]
        out += [s for s, flag in FLAGS.items() if flag in init]
        if self.cls in CUSTOM_SIGMA_CLASSES:
            out += list(CUSTOM_SIGMAS)
        return tuple(s for s in SCHEDULES if s in out) or ("Uniform",)


def _k(name, func, aliases, **kw) -> SamplerSpec:
    return SamplerSpec(name, aliases=aliases, func=func, **kw)


# A1111 v1.10.1's list, in its order, with its aliases and per-sampler options
SAMPLERS_ALL: list[SamplerSpec] = [
    _k("DPM++ 2M", "dpmpp_2m", ("k_dpmpp_2m",), default_schedule="Karras"),
    _k("DPM++ SDE", "dpmpp_sde", ("k_dpmpp_sde",), default_schedule="Karras", second_order=True, brownian=True,
       requires="torchsde"),
    _k("DPM++ 2M SDE", "dpmpp_2m_sde", ("k_dpmpp_2m_sde",), default_schedule="Exponential", brownian=True,
       requires="torchsde"),
    _k("DPM++ 2M SDE Heun", "dpmpp_2m_sde", ("k_dpmpp_2m_sde_heun",), default_schedule="Exponential", brownian=True,
       options={"solver_type": "heun"}, requires="torchsde"),
    _k("DPM++ 2S a", "dpmpp_2s_ancestral", ("k_dpmpp_2s_a",), default_schedule="Karras", ancestral=True,
       second_order=True),
    _k("DPM++ 3M SDE", "dpmpp_3m_sde", ("k_dpmpp_3m_sde",), default_schedule="Exponential",
       discard_penultimate=True, brownian=True, requires="torchsde"),
    _k("Euler a", "euler_ancestral", ("k_euler_a", "k_euler_ancestral"), ancestral=True),
    _k("Euler", "euler", ("k_euler",)),
    _k("LMS", "lms", ("k_lms",)),
    _k("Heun", "heun", ("k_heun",), second_order=True),
    _k("DPM2", "dpm_2", ("k_dpm_2",), default_schedule="Karras", discard_penultimate=True, second_order=True),
    _k("DPM2 a", "dpm_2_ancestral", ("k_dpm_2_a",), default_schedule="Karras", discard_penultimate=True,
       ancestral=True, second_order=True),
    _k("DPM fast", "dpm_fast", ("k_dpm_fast",), ancestral=True),
    _k("DPM adaptive", "dpm_adaptive", ("k_dpm_ad",), ancestral=True),
    _k("Restart", "restart", ("restart",), default_schedule="Karras", second_order=True),
    _k("DDIM", "ddim", ("ddim",), kind="timesteps"),
    _k("DDIM CFG++", "ddim_cfgpp", ("ddim_cfgpp",), kind="timesteps"),
    _k("PLMS", "plms", ("plms",), kind="timesteps"),
    _k("UniPC", "unipc", ("unipc",), kind="timesteps"),
    _k("LCM", "lcm", ("k_lcm",)),
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


@dataclass
class SamplerOptions:
    """A1111's settings that change sampling (Settings → Sampler parameters), with A1111's defaults. 0 for
    sigma_min/sigma_max/rho means "the model's / the schedule's own"."""
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0
    sigma_min: float = 0.0
    sigma_max: float = 0.0
    rho: float = 0.0
    always_discard_next_to_last_sigma: bool = False
    sgm_noise_multiplier: bool = False
    pad_cond_uncond: bool = False
    s_min_uncond: float = 0.0
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    uni_pc_variant: str = "bh1"
    uni_pc_order: int = 3
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_lower_order_final: bool = True


def k_sigmas(spec: SamplerSpec, schedule: str, steps: int, sched, opts: SamplerOptions | None = None,
             sdxl: bool = False, extra: dict | None = None):
    """A1111's σ list for a k-diffusion sampler: `steps` σ values then 0 (steps + 1 before dropping the next-to-last
    for the DPM2 family and DPM++ 3M SDE, or always with the setting). Settings that differ from the model's own
    σmin/σmax or the schedule's ρ are used and recorded in `extra` under A1111's infotext keys."""
    from modules.engine import k_sampling as ks
    opts = opts or SamplerOptions()
    extra = {} if extra is None else extra
    discard = spec.discard_penultimate
    if opts.always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = True
    n = steps + (1 if discard else 0)
    m_min, m_max = float(sched.sigma_min), float(sched.sigma_max)
    smin, smax = m_min, m_max
    if schedule not in ("Uniform", "Automatic"):
        if opts.sigma_min and opts.sigma_min != m_min:
            smin = extra["Schedule min sigma"] = opts.sigma_min
        if opts.sigma_max and opts.sigma_max != m_max:
            smax = extra["Schedule max sigma"] = opts.sigma_max
    rho = SCHEDULE_RHO.get(schedule)
    if rho is not None and opts.rho and opts.rho != rho:
        rho = extra["Schedule rho"] = opts.rho
    if schedule == "Uniform":
        sigmas = sched.uniform(n)
    elif schedule == "Karras":
        sigmas = ks.karras(n, smin, smax, rho)
    elif schedule == "Exponential":
        sigmas = ks.exponential(n, smin, smax)
    elif schedule == "Polyexponential":
        sigmas = ks.polyexponential(n, smin, smax, rho)
    elif schedule == "SGM Uniform":
        sigmas = ks.sgm_uniform(n, smin, smax, sched)
    elif schedule == "KL Optimal":
        sigmas = ks.kl_optimal(n, smin, smax)
    elif schedule == "Align Your Steps":
        sigmas = ks.align_your_steps(n, sdxl)
    elif schedule == "Simple":
        sigmas = ks.simple(n, sched)
    elif schedule == "Normal":
        sigmas = ks.normal(n, smin, smax, sched)
    elif schedule == "DDIM":
        sigmas = ks.ddim_uniform(n, sched)
    elif schedule == "Beta":
        extra["Beta schedule alpha"], extra["Beta schedule beta"] = opts.beta_dist_alpha, opts.beta_dist_beta
        sigmas = ks.beta(n, smin, smax, opts.beta_dist_alpha, opts.beta_dist_beta)
    else:
        raise SamplerError(f"scheduler: unknown schedule type {schedule!r}; choose one of {SCHEDULES}")
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.float()
