"""A1111's settings that change sampling (Settings → Sampler parameters, and two from Optimizations), with A1111's
keys, labels, defaults and infotext keys — an infotext carrying "Eta: 0.5" or "Schedule rho: 5" sets them on paste
(override settings) as in A1111 — and the SamplerOptions a job reads from them."""
from __future__ import annotations

from modules.engine.samplers import SamplerOptions

SECTION = "Sampler parameters"


def option_templates() -> dict:
    from modules.options import OptionInfo
    return {
        "eta_ddim": OptionInfo(0.0, "Eta for DDIM", SECTION, minimum=0.0, maximum=1.0, infotext="Eta DDIM"),
        "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", SECTION, minimum=0.0, maximum=1.0,
                                    infotext="Eta"),
        "s_churn": OptionInfo(0.0, "sigma churn", SECTION, minimum=0.0, maximum=100.0, infotext="Sigma churn"),
        "s_tmin": OptionInfo(0.0, "sigma tmin", SECTION, minimum=0.0, maximum=10.0, infotext="Sigma tmin"),
        "s_tmax": OptionInfo(0.0, "sigma tmax", SECTION, minimum=0.0, maximum=999.0, infotext="Sigma tmax"),
        "s_noise": OptionInfo(1.0, "sigma noise", SECTION, minimum=0.0, maximum=1.1, infotext="Sigma noise"),
        "sigma_min": OptionInfo(0.0, "sigma min", SECTION, minimum=0.0, infotext="Schedule min sigma"),
        "sigma_max": OptionInfo(0.0, "sigma max", SECTION, minimum=0.0, infotext="Schedule max sigma"),
        "rho": OptionInfo(0.0, "rho", SECTION, minimum=0.0, infotext="Schedule rho"),
        "always_discard_next_to_last_sigma": OptionInfo(False, "Always discard next-to-last sigma", SECTION,
                                                        infotext="Discard penultimate sigma"),
        "sgm_noise_multiplier": OptionInfo(False, "SGM noise multiplier", SECTION,
                                           infotext="SGM noise multplier"),  # sic: A1111's infotext key
        "uni_pc_variant": OptionInfo("bh1", "UniPC variant", SECTION, choices=["bh1", "bh2", "vary_coeff"],
                                     infotext="UniPC variant"),
        "uni_pc_skip_type": OptionInfo("time_uniform", "UniPC skip type", SECTION,
                                       choices=["time_uniform", "time_quadratic", "logSNR"],
                                       infotext="UniPC skip type"),
        "uni_pc_order": OptionInfo(3, "UniPC order", SECTION, minimum=1, maximum=50, infotext="UniPC order"),
        "uni_pc_lower_order_final": OptionInfo(True, "UniPC lower order final", SECTION,
                                               infotext="UniPC lower order final"),
        "beta_dist_alpha": OptionInfo(0.6, "Beta scheduler - alpha", SECTION, minimum=0.01, maximum=1.0,
                                      infotext="Beta schedule alpha"),
        "beta_dist_beta": OptionInfo(0.6, "Beta scheduler - beta", SECTION, minimum=0.01, maximum=1.0,
                                     infotext="Beta schedule beta"),
        "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt", "Optimizations", infotext="Pad conds"),
        "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", "Optimizations", minimum=0.0,
                                   maximum=15.0, infotext="NGMS"),
    }


def sampler_options(get) -> SamplerOptions:
    """The job's SamplerOptions from a settings getter (key, default) → value."""
    defaults = SamplerOptions()
    values = {}
    for name in defaults.__dataclass_fields__:
        default = getattr(defaults, name)
        value = get(name, default)
        values[name] = default if value is None else type(default)(value)
    return SamplerOptions(**values)
