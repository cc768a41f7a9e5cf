"""A1111's samplers as short functions over a denoiser, in the k-diffusion style (Karras et al. 2022's σ view).

Why our own: the k-diffusion package (A1111's sampler dependency) imports torchvision, clean-fid, clip and wandb when
imported, none of which this project can install; diffusers' schedulers quantise timesteps, scale the initial noise
in VP terms and draw step noise differently, so their images drift from A1111's. Each function below states the
published algorithm it implements; the behaviour (which σ list, when noise is drawn, the order of operations) follows
A1111 v1.10.1 and the k-diffusion version it pins, so that the same seed gives the same image.

Conventions: `model(x, sigma) -> denoised` works in VE space (x = x0 + σ·ε); σ values are 0-d float32 tensors, as in
A1111, so that rounding matches. `ctx` (a Ctx) carries the knobs and the noise: `ctx.noise(σ, σ_next)` is the step
noise (the images' seeded generators, or a Brownian tree for the SDE samplers), `ctx.done(i, x) -> x` is called after
each step (progress, previews, after-step hooks that may replace x) and raises Stop to end sampling early.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


class Stop(Exception):
    """Raised by Ctx.done to end sampling (interrupt/skip); the loop keeps the latents it has."""

    def __init__(self, x: torch.Tensor):
        super().__init__("sampling stopped")
        self.x = x


@dataclass
class Ctx:
    noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    done: Callable[[int, torch.Tensor], torch.Tensor] = lambda i, x: x
    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    extra: dict = field(default_factory=dict)   # sampler-specific: solver_type, sigma_min/max, n, cfg hooks


# --- the model's discrete noise levels -----------------------------------------------------------------------------

def ldm_alphas_cumprod(config: dict) -> torch.Tensor:
    """ᾱ_t of the training schedule as the LDM checkpoints compute it (float64 β, cumulative product, stored float32)."""
    n = int(config.get("num_train_timesteps", 1000))
    b0, b1 = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = np.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(b0, b1, n, dtype=np.float64)
    else:
        raise ValueError(f"beta_schedule {kind!r} is not supported")
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


class DiscreteSchedule:
    """σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) for the 1000 training steps, and the piecewise-linear map between σ and a continuous
    t through log σ (so a σ between two training steps gets a fractional t, which the UNet's sinusoidal timestep
    embedding accepts) — how A1111 feeds the UNet (k-diffusion's discrete DDPM denoiser without quantisation)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.alphas_cumprod = alphas_cumprod.float().cpu()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        n = self.log_sigmas.shape[0]
        # index of the largest training log σ not above log_sigma (log σ rises with t), kept inside [0, n-2]
        low = ((self.log_sigmas[:, None] <= log_sigma.reshape(1, -1)).sum(0) - 1).clamp(0, n - 2)
        high = low + 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((lo - log_sigma.reshape(-1)) / (lo - hi)).clamp(0, 1)
        t = (1 - w) * low + w * high
        return t.reshape(log_sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def uniform(self, n: int) -> torch.Tensor:
        """n σ evenly spaced in t from the last training step to the first, then 0 (A1111's "Uniform")."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return append_zero(self.t_to_sigma(t))


class LCMSchedule(DiscreteSchedule):
    """Latent consistency models (Luo et al. 2023) are distilled on 50 of the 1000 steps (t = 19, 39, …, 999): the σ
    of those, t snapped to the nearest of them, and A1111's LCM denoiser's uniform list from t = 999 to 19."""

    def __init__(self, alphas_cumprod: torch.Tensor, original_steps: int = 50):
        n = len(alphas_cumprod)
        self.skip = n // original_steps
        valid = torch.stack([alphas_cumprod[n - 1 - k * self.skip] for k in range(original_steps)]).flip(0)
        super().__init__(valid)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        nearest = (log_sigma.reshape(1, -1) - self.log_sigmas[:, None]).abs().argmin(dim=0)
        return (nearest * self.skip + (self.skip - 1)).reshape(log_sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(((torch.as_tensor(t) - (self.skip - 1)) / self.skip).float(), min=0,
                            max=len(self.sigmas) - 1)
        return super().t_to_sigma(index)

    def uniform(self, n: int) -> torch.Tensor:
        t = torch.linspace(float(self.sigma_to_t(self.sigma_max)), float(self.sigma_to_t(self.sigma_min)), n)
        return append_zero(self.t_to_sigma(t))

    def consistency_out(self, sigma, x0, x):
        """The consistency boundary condition: c_skip·x + c_out·x0 with σ_data = 0.5 at the scaled time 10·t."""
        st = self.sigma_to_t(sigma).float() * 10.0
        return st / (st ** 2 + 0.25) ** 0.5 * x0 + 0.25 / (st ** 2 + 0.25) * x


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


# --- schedules (A1111's sd_schedulers: name → n σ values then 0) ----------------------------------------------------

def karras(n, sigma_min, sigma_max, rho=7.0):
    """Karras et al. 2022 eq. 5: σ_i = (σmax^(1/ρ) + i/(n−1)·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n, sigma_min, sigma_max):
    """Evenly spaced in log σ."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n, sigma_min, sigma_max, rho=1.0):
    """A polynomial ramp (power ρ) in log σ."""
    ramp = torch.linspace(1, 0, n) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def sgm_uniform(n, sigma_min, sigma_max, sched: DiscreteSchedule):
    """n + 1 points evenly spaced in t from σmax to σmin, the last dropped, then 0."""
    start, end = sched.sigma_to_t(torch.tensor(sigma_max)), sched.sigma_to_t(torch.tensor(sigma_min))
    sigs = [float(sched.t_to_sigma(t)) for t in torch.linspace(float(start), float(end), n + 1)[:-1]]
    return torch.tensor(sigs + [0.0], dtype=torch.float32)


def normal(n, sigma_min, sigma_max, sched: DiscreteSchedule):
    """n points evenly spaced in t from σmax to σmin, then 0."""
    start, end = sched.sigma_to_t(torch.tensor(sigma_max)), sched.sigma_to_t(torch.tensor(sigma_min))
    sigs = [float(sched.t_to_sigma(t)) for t in torch.linspace(float(start), float(end), n)]
    return torch.tensor(sigs + [0.0], dtype=torch.float32)


def kl_optimal(n, sigma_min, sigma_max):
    """KL-optimal schedule (Sabour et al. 2024, "Align Your Steps" appendix): σ = tan of a linear ramp in arctan σ,
    n + 1 values ending at σmin (no trailing 0, as in A1111)."""
    a_min, a_max = torch.arctan(torch.tensor(sigma_min)), torch.arctan(torch.tensor(sigma_max))
    idx = torch.arange(n + 1)
    return torch.tan(idx / n * a_min + (1.0 - idx / n) * a_max)


AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def align_your_steps(n, sdxl=False):
    """Align Your Steps (Sabour et al. 2024): the published 10-step levels, log-linearly resampled to n, then 0."""
    base = AYS_SDXL if sdxl else AYS_SD15
    if n == len(base):
        return torch.tensor(base + [0.0], dtype=torch.float32)
    ys = np.log(base[::-1])
    resampled = np.exp(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(base)), ys))[::-1]
    return torch.tensor(np.append(resampled, 0.0), dtype=torch.float32)


def simple(n, sched: DiscreteSchedule):
    """Every (1000/n)-th training σ from the top, then 0."""
    stride = len(sched.sigmas) / n
    return torch.tensor([float(sched.sigmas[-(1 + int(i * stride))]) for i in range(n)] + [0.0], dtype=torch.float32)


def ddim_uniform(n, sched: DiscreteSchedule):
    """The training σ at t = 1, 1 + k, 1 + 2k, … (k = 1000 // n), descending, then 0."""
    stride = max(len(sched.sigmas) // n, 1)
    sigs = [float(sched.sigmas[x]) for x in range(1, len(sched.sigmas), stride)]
    return torch.tensor(sigs[::-1] + [0.0], dtype=torch.float32)


def beta(n, sigma_min, sigma_max, alpha=0.6, beta_=0.6):
    """Beta schedule (Lee et al. 2024): σ at the quantiles of a Beta(α, β) distribution, then 0."""
    from scipy import stats
    ts = [stats.beta.ppf(x, alpha, beta_) for x in 1 - np.linspace(0, 1, n)]
    return torch.tensor([sigma_min + x * (sigma_max - sigma_min) for x in ts] + [0.0], dtype=torch.float32)


# --- noise ---------------------------------------------------------------------------------------------------------

class BrownianNoise:
    """Brownian-tree noise (torchsde.BrownianTree, one tree per image seeded with that image's seed), normalised to
    unit variance over [σ, σ_next]: the same seed gives the same noise whatever the step count or batch."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seeds: list[int]):
        import torchsde
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.sign = 1 if t0 < t1 else -1
        t0, t1 = (t0, t1) if t0 < t1 else (t1, t0)
        w0 = torch.zeros_like(x[0])
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=int(s)) for s in seeds]

    def __call__(self, sigma, sigma_next):
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1 if a < b else -1
        lo, hi = (a, b) if a < b else (b, a)
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * (self.sign * sign)
        return w / (b - a).abs().sqrt()


def ancestral_step(sigma, sigma_next, eta=1.0):
    """Split the step σ → σ_next into a deterministic step to σ_down and fresh noise of size σ_up
    (σ_down² + σ_up² = σ_next²); eta scales the noise (0: deterministic)."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    down = (sigma_next ** 2 - up ** 2) ** 0.5
    return down, up


def _d(x, sigma, denoised):
    """The probability-flow ODE derivative dx/dσ = (x − D(x; σ)) / σ."""
    return (x - denoised) / sigma


# --- samplers over a σ list ----------------------------------------------------------------------------------------

def _churn(ctx: Ctx, x, sigmas, i):
    """Karras et al. 2022 Algorithm 2, lines 4–6: raise σ by γ and add matching noise (noise drawn every step)."""
    n = len(sigmas) - 1
    gamma = min(ctx.s_churn / n, 2 ** 0.5 - 1) if ctx.s_tmin <= sigmas[i] <= ctx.s_tmax else 0.0
    eps = ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def euler(model, x, sigmas, ctx: Ctx):
    """Karras et al. 2022 Algorithm 2 with Euler steps (churn optional)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(ctx, x, sigmas, i)
        denoised = model(x, sigma_hat)
        x = x + _d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
        x = ctx.done(i, x)
    return x


def euler_ancestral(model, x, sigmas, ctx: Ctx):
    """Euler step to σ_down, then fresh noise of size σ_up (ancestral sampling)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        x = x + _d(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise * up
        x = ctx.done(i, x)
    return x


def heun(model, x, sigmas, ctx: Ctx):
    """Karras et al. 2022 Algorithm 2 (Heun's second-order correction; Euler on the last step to σ = 0)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(ctx, x, sigmas, i)
        denoised = model(x, sigma_hat)
        d = _d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = _d(x2, sigmas[i + 1], model(x2, sigmas[i + 1]))
            x = x + (d + d2) / 2 * dt
        x = ctx.done(i, x)
    return x


def dpm_2(model, x, sigmas, ctx: Ctx):
    """DPM-Solver-2 (Lu et al. 2022) in σ: derivative at the log-midpoint σ, with Algorithm 2's churn."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(ctx, x, sigmas, i)
        d = _d(x, sigma_hat, model(x, sigma_hat))
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x2 = x + d * (mid - sigma_hat)
            d2 = _d(x2, mid, model(x2, mid))
            x = x + d2 * (sigmas[i + 1] - sigma_hat)
        x = ctx.done(i, x)
    return x


def dpm_2_ancestral(model, x, sigmas, ctx: Ctx):
    """DPM-Solver-2 to σ_down, then ancestral noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        d = _d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
        else:
            mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
            x2 = x + d * (mid - sigmas[i])
            d2 = _d(x2, mid, model(x2, mid))
            x = x + d2 * (down - sigmas[i])
            x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise * up
        x = ctx.done(i, x)
    return x


def _lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """∫_{t_i}^{t_{i+1}} of the Lagrange basis polynomial j through t_i, t_{i-1}, … (exact polynomial integral)."""
    poly = np.poly1d([1.0])
    for k in range(order):
        if k != j:
            poly *= np.poly1d([1.0, -t[i - k]]) / (t[i - j] - t[i - k])
    integral = poly.integ()
    return float(integral(t[i + 1]) - integral(t[i]))


def lms(model, x, sigmas, ctx: Ctx, order: int = 4):
    """Linear multistep (Adams–Bashforth in σ) over the last `order` derivatives."""
    sigmas_np = sigmas.double().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        ds.append(_d(x, sigmas[i], model(x, sigmas[i])))
        ds = ds[-order:]
        cur = min(i + 1, order)
        coeffs = [_lms_coefficient(cur, sigmas_np, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
        x = ctx.done(i, x)
    return x


def _t(sigma):
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


def dpmpp_2s_ancestral(model, x, sigmas, ctx: Ctx):
    """DPM-Solver++(2S) (Lu et al. 2022, single-step, data prediction) to σ_down, then ancestral noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        if down == 0:
            x = x + _d(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(down)
            h = t_next - t
            s = t + 0.5 * h
            x2 = (_sigma(s) / _sigma(t)) * x - (-h * 0.5).expm1() * denoised
            denoised2 = model(x2, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised2
        if sigmas[i + 1] > 0:
            x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise * up
        x = ctx.done(i, x)
    return x


def dpmpp_sde(model, x, sigmas, ctx: Ctx, r: float = 0.5):
    """DPM-Solver++ stochastic (SDE-DPM-Solver++ with a midpoint at r·h), noise from the Brownian tree."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + _d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)
            sd, su = ancestral_step(_sigma(t), _sigma(s), ctx.eta)
            s_ = _t(sd)
            x2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
            x2 = x2 + ctx.noise(_sigma(t), _sigma(s)) * ctx.s_noise * su
            denoised2 = model(x2, _sigma(s))
            sd, su = ancestral_step(_sigma(t), _sigma(t_next), ctx.eta)
            t_next_ = _t(sd)
            mixed = (1 - fac) * denoised + fac * denoised2
            x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * mixed
            x = x + ctx.noise(_sigma(t), _sigma(t_next)) * ctx.s_noise * su
        x = ctx.done(i, x)
    return x


def dpmpp_2m(model, x, sigmas, ctx: Ctx):
    """DPM-Solver++(2M) (Lu et al. 2022, multistep second order, data prediction); first order on the first step and
    on the step to σ = 0."""
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            mixed = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * mixed
        old = denoised
        x = ctx.done(i, x)
    return x


def dpmpp_2m_sde(model, x, sigmas, ctx: Ctx):
    """DPM-Solver++(2M) SDE (Lu et al. 2022), midpoint or Heun correction (ctx.extra['solver_type'])."""
    solver = ctx.extra.get("solver_type", "midpoint")
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = ctx.eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old is not None:
                r = h_last / h
                if solver == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old)
            if ctx.eta:
                x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * \
                    (-2 * eta_h).expm1().neg().sqrt() * ctx.s_noise
        old, h_last = denoised, h
        x = ctx.done(i, x)
    return x


def dpmpp_3m_sde(model, x, sigmas, ctx: Ctx):
    """DPM-Solver++(3M) SDE: third-order multistep with exponential-integrator φ functions, Brownian noise."""
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (ctx.eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * ((denoised - d_1) / (h_1 / h))
            if ctx.eta:
                x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * \
                    (-2 * h * ctx.eta).expm1().neg().sqrt() * ctx.s_noise
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
        x = ctx.done(i, x)
    return x


def lcm(model, x, sigmas, ctx: Ctx):
    """Latent consistency sampling (Luo et al. 2023): jump to the model's x0, renoise to the next σ."""
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * ctx.noise(sigmas[i], sigmas[i + 1])
        x = ctx.done(i, x)
    return x


def restart(model, x, sigmas, ctx: Ctx):
    """Restart sampling (Xu et al. 2023) with A1111's automatic restart list: for ≥ 20 steps, Heun steps on a shorter
    Karras schedule, and once (twice from 36 steps) the interval around σ ≈ 0.1 … 2 is re-noised and sampled again."""
    steps = sigmas.shape[0] - 1
    restarts = {}
    if steps >= 20:
        r_steps, r_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras(steps - r_steps * r_times, sigmas[-2].item(), sigmas[0].item())
        restarts = {0.1: (r_steps + 1, r_times, 2)}
    by_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restarts.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            r_steps, r_times, r_max = by_index[i + 1]
            lo, hi = i + 1, int(torch.argmin(abs(sigmas - r_max), dim=0))
            if hi < lo:
                inner = karras(r_steps, sigmas[lo].item(), sigmas[hi].item())[:-1]
                for _ in range(r_times):
                    pairs.extend(zip(inner[:-1], inner[1:]))
    last = None
    for k, (old, new) in enumerate(pairs):
        if last is None:
            last = old
        elif last < old:
            x = x + ctx.noise(old, new) * ctx.s_noise * (old ** 2 - last ** 2) ** 0.5
        d = _d(x, old, model(x, old))
        dt = new - old
        if new == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            x = x + (d + _d(x2, new, model(x2, new))) / 2 * dt
        last = new
        x = ctx.done(k, x)
    return x


# --- DPM-Solver (Lu et al. 2022) in t = −log σ with noise prediction: DPM fast and DPM adaptive -----------------------

class _DPMSolver:
    def __init__(self, model):
        self.model = model

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            sigma = _sigma(t)
            cache[key] = (x - self.model(x, sigma)) / sigma
        return cache[key]

    def step1(self, x, t, t_next, cache):
        h = t_next - t
        return x - _sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - _sigma(s2) * (r2 * h).expm1() * eps - _sigma(s2) * (r2 / r1) * \
            ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def dpm_fast(model, x, sigma_min, sigma_max, n, ctx: Ctx):
    """DPM-Solver-fast (Lu et al. 2022, §3.4): n model calls spent as third-order steps on a uniform grid in
    t = −log σ, ending with a second- or first-order step."""
    solver = _DPMSolver(model)
    t_start, t_end = _t(torch.tensor(float(sigma_max))), _t(torch.tensor(float(sigma_min)))
    m = math.floor(n / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        if ctx.eta:
            sd, su = ancestral_step(_sigma(t), _sigma(t_next), ctx.eta)
            t_next_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
        else:
            t_next_, su = t_next, 0.0
        solver.eps(cache, "eps", x, t)
        x = (solver.step1, solver.step2, solver.step3)[order - 1](x, t, t_next_, cache)
        x = x + su * ctx.s_noise * ctx.noise(_sigma(t), _sigma(t_next))
        x = ctx.done(i, x)
    return x


def dpm_adaptive(model, x, sigma_min, sigma_max, ctx: Ctx, order=3, rtol=0.05, atol=0.0078, h_init=0.05,
                 pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81):
    """DPM-Solver-23 with adaptive step size (Lu et al. 2022, §4.2 and appendix): a second- and a third-order
    estimate per step, their difference against the tolerances drives a PID step-size controller."""
    solver = _DPMSolver(model)
    t_end = _t(torch.tensor(float(sigma_min)))
    s = _t(torch.tensor(float(sigma_max)))
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    h = h_init
    errs = []
    beta = (pcoeff + icoeff + dcoeff, -(pcoeff + 2 * dcoeff), dcoeff)
    power = 1.5 if ctx.eta else order
    x_prev, k = x, 0
    while s < t_end - 1e-5:
        cache = {}
        t = torch.minimum(t_end, s + h)
        if ctx.eta:
            sd, su = ancestral_step(_sigma(s), _sigma(t), ctx.eta)
            t_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t) ** 2 - _sigma(t_) ** 2) ** 0.5
        else:
            t_, su = t, 0.0
        solver.eps(cache, "eps", x, s)
        if order == 2:
            low, high = solver.step1(x, s, t_, cache), solver.step2(x, s, t_, cache)
        else:
            low, high = solver.step2(x, s, t_, cache, r1=1 / 3), solver.step3(x, s, t_, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(low.abs(), x_prev.abs()))
        error = torch.linalg.norm((low - high) / delta) / x.numel() ** 0.5
        # PID controller on the inverse error (Söderlind 2003), limited factor 1 + atan(f − 1)
        inv = 1 / (float(error) + 1e-8)
        if not errs:
            errs = [inv, inv, inv]
        errs[0] = inv
        factor = errs[0] ** (beta[0] / power) * errs[1] ** (beta[1] / power) * errs[2] ** (beta[2] / power)
        factor = 1 + math.atan(factor - 1)
        accept = factor >= accept_safety
        if accept:
            errs[2], errs[1] = errs[1], errs[0]
        h *= factor
        if accept:
            x_prev = low
            x = high + su * ctx.s_noise * ctx.noise(_sigma(s), _sigma(t))
            s = t
        x = ctx.done(k, x)
        k += 1
    return x


# --- timestep (VP) samplers: DDIM, DDIM CFG++, PLMS -----------------------------------------------------------------

def a1111_timesteps(steps: int) -> torch.Tensor:
    """A1111's DDIM/PLMS/UniPC grid: t = 1, 1 + k, …, k = 1000 // steps (sampling visits all but t = 1)."""
    return torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)


def _ddim_tables(alphas_cumprod, timesteps, eta):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].double()
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas.double()) * (1 - alphas.double() / alphas_prev))
    return alphas, alphas_prev, torch.sqrt(1 - alphas), sigmas


def ddim(model_eps, x, timesteps, alphas_cumprod, ctx: Ctx, cfgpp: bool = False):
    """DDIM (Song et al. 2021) on A1111's grid: len(timesteps) − 1 model calls from the top; eta > 0 adds noise.
    cfgpp: CFG++ (Chung et al. 2024) — the step direction uses the unconditional ε (model_eps returns (ε, ε_uncond))."""
    alphas, alphas_prev, sqrt_1m, sigmas = _ddim_tables(alphas_cumprod, timesteps, ctx.eta)
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        out = model_eps(x, int(timesteps[index]))
        e_t, e_dir = out if cfgpp else (out, out)
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        sigma_t, s1m = sigmas[index].item(), sqrt_1m[index].item()
        pred_x0 = (x - s1m * e_t) / torch.tensor(a_t).sqrt()
        dir_xt = torch.tensor(1.0 - a_prev - sigma_t ** 2).sqrt() * e_dir
        x = torch.tensor(a_prev).sqrt() * pred_x0 + dir_xt + sigma_t * ctx.noise(None, None)
        x = ctx.done(i, x)
    return x


def plms(model_eps, x, timesteps, alphas_cumprod, ctx: Ctx):
    """PLMS (Liu et al. 2022, pseudo linear multistep): a pseudo improved-Euler first step, then Adams–Bashforth on ε
    of orders 2–4, each applied through the DDIM (η = 0) transfer."""
    alphas, alphas_prev, sqrt_1m, _ = _ddim_tables(alphas_cumprod, timesteps, 0.0)

    def transfer(x, e_t, index):
        a_t, a_prev, s1m = alphas[index].item(), alphas_prev[index].item(), sqrt_1m[index].item()
        pred_x0 = (x - s1m * e_t) / torch.tensor(a_t).sqrt()
        return torch.tensor(a_prev).sqrt() * pred_x0 + torch.tensor(1.0 - a_prev).sqrt() * e_t

    old = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model_eps(x, int(timesteps[index]))
        if not old:
            x_prev = transfer(x, e_t, index)
            e_next = model_eps(x_prev, int(timesteps[max(index - 1, 0)]))
            e_prime = (e_t + e_next) / 2
        elif len(old) == 1:
            e_prime = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = transfer(x, e_prime, index)
        old = (old + [e_t])[-3:]
        x = ctx.done(i, x)
    return x


# --- UniPC (Zhao et al. 2023), A1111's configuration: data prediction, multistep, VP schedule from ᾱ ----------------

class VPSchedule:
    """The discrete VP schedule as a continuous function of t ∈ [1/N, 1]: log α_t piecewise linear between the
    training steps (t_n = (n + 1)/N, log α = ½ log ᾱ_n), σ_t = sqrt(1 − α_t²), λ_t = log α_t − log σ_t."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.log_alpha = 0.5 * torch.log(alphas_cumprod.float())
        self.total_n = len(self.log_alpha)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:]

    @staticmethod
    def _interp(x, xp, yp):
        """Piecewise-linear interpolation, extended linearly beyond the ends (xp ascending)."""
        x = x.reshape(-1)
        idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
        x0, x1, y0, y1 = xp[idx - 1], xp[idx], yp[idx - 1], yp[idx]
        return y0 + (x - x0) * (y1 - y0) / (x1 - x0)

    def log_mean(self, t):
        return self._interp(t, self.t_array, self.log_alpha)

    def alpha(self, t):
        return torch.exp(self.log_mean(t))

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_mean(t)))

    def lam(self, t):
        lm = self.log_mean(t)
        return lm - 0.5 * torch.log(1.0 - torch.exp(2.0 * lm))

    def inverse_lambda(self, lam):
        log_alpha = -0.5 * torch.logaddexp(torch.zeros(1), -2.0 * lam)
        return self._interp(log_alpha, self.log_alpha.flip(0), self.t_array.flip(0))

    def time_steps(self, skip_type: str, t_T: float, t_0: float, n: int):
        if skip_type == "logSNR":
            lo, hi = self.lam(torch.tensor(t_T)).item(), self.lam(torch.tensor(t_0)).item()
            return self.inverse_lambda(torch.linspace(lo, hi, n + 1))
        if skip_type == "time_quadratic":
            return torch.linspace(t_T ** 0.5, t_0 ** 0.5, n + 1).pow(2)
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, n + 1)
        raise ValueError(f"uni_pc_skip_type: {skip_type!r}; choose one of time_uniform, time_quadratic, logSNR")


def unipc(model_eps, x, alphas_cumprod, steps: int, ctx: Ctx, variant: str = "bh1", skip_type: str = "time_uniform",
          order: int = 3, lower_order_final: bool = True, t_start: float | None = None):
    """UniPC multistep (Zhao et al. 2023): a UniP predictor of the given order from the stored x0 predictions, then
    the UniC corrector with the model value at the predicted point (which is kept for the next step; no corrector
    on the last step). B(h) = h (bh1) or e^h − 1 (bh2), or the varying-coefficient form (vary_coeff). The model is
    called at the UNet time (t − 1/N)·1000 of the continuous t; x is in VP scale."""
    ns = VPSchedule(alphas_cumprod)
    t_0, t_T = 1.0 / ns.total_n, (1.0 if t_start is None else float(t_start))
    order = max(1, min(order, steps))
    ts = ns.time_steps(skip_type, t_T, t_0, steps)

    def data_pred(x, t):
        eps = model_eps(x, (t - 1.0 / ns.total_n) * 1000.0)
        return (x - ns.std(t) * eps) / ns.alpha(t)

    def update(x, models, times, t, k, use_corrector):
        lam_prev0, lam_t = ns.lam(times[-1]), ns.lam(t)
        m0 = models[-1]
        sigma_prev0, sigma_t, alpha_t = ns.std(times[-1]), ns.std(t), ns.alpha(t)
        h = lam_t - lam_prev0
        rks, d1s = [], []
        for i in range(1, k):
            rk = ((ns.lam(times[-(i + 1)]) - lam_prev0) / h)[0]
            rks.append(rk)
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks = torch.tensor([float(r) for r in rks] + [1.0])
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        base = sigma_t / sigma_prev0 * x - alpha_t * h_phi_1 * m0
        if variant in ("bh1", "bh2"):
            b_h = hh if variant == "bh1" else torch.expm1(hh)
            rows, b = [], []
            h_phi_k, fact = h_phi_1 / hh - 1, 1
            for i in range(1, k + 1):
                rows.append(torch.pow(rks, i - 1))
                b.append(h_phi_k * fact / b_h)
                fact *= i + 1
                h_phi_k = h_phi_k / hh - 1 / fact
            r_mat, b = torch.stack(rows), torch.tensor([float(v) for v in b])
            d1 = torch.stack(d1s, dim=1) if d1s else None
            if d1 is not None:
                rhos_p = torch.tensor([0.5]) if k == 2 else torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
                x_t = base - alpha_t * b_h * torch.einsum("k,bkchw->bchw", rhos_p, d1)
            else:
                x_t = base
            if not use_corrector:
                return x_t, None
            rhos_c = torch.tensor([0.5]) if k == 1 else torch.linalg.solve(r_mat, b)
            model_t = data_pred(x_t, t)
            corr = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1) if d1 is not None else 0
            return base - alpha_t * b_h * (corr + rhos_c[-1] * (model_t - m0)), model_t
        if variant != "vary_coeff":
            raise ValueError(f"uni_pc_variant: {variant!r}; choose one of bh1, bh2, vary_coeff")
        n_k = len(rks)
        cols, col = [], torch.ones_like(rks)
        for j in range(1, n_k + 1):
            cols.append(col)
            col = col * rks / (j + 1)
        c_mat = torch.stack(cols, dim=1)
        phis, h_phi_k, fact = [], h_phi_1, 1
        for j in range(1, n_k + 2):
            phis.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / fact
            fact *= j + 1
        d1 = torch.stack(d1s, dim=1) if d1s else None
        x_t = base
        if d1 is not None:
            a_p = torch.linalg.inv(c_mat[:-1, :-1])
            for j in range(n_k - 1):
                x_t = x_t - alpha_t * phis[j + 1] * torch.einsum("bkchw,k->bchw", d1, a_p[j])
        if not use_corrector:
            return x_t, None
        a_c = torch.linalg.inv(c_mat)
        model_t = data_pred(x_t, t)
        x_t, j = base, 0
        for j in range(n_k - 1):
            x_t = x_t - alpha_t * phis[j + 1] * torch.einsum("bkchw,k->bchw", d1, a_c[j][:-1])
        return x_t - alpha_t * phis[n_k] * ((model_t - m0) * a_c[j][-1]), model_t

    vec = ts[0].reshape(1)
    models, times = [data_pred(x, vec)], [vec]
    done = 0
    for k in range(1, order):
        vec = ts[k].reshape(1)
        x, m = update(x, models, times, vec, k, True)
        if m is None:
            m = data_pred(x, vec)
        x = ctx.done(done, x)
        done += 1
        models.append(m)
        times.append(vec)
    for step in range(order, steps + 1):
        vec = ts[step].reshape(1)
        k = min(order, steps + 1 - step) if lower_order_final else order
        x, m = update(x, models, times, vec, k, step != steps)
        x = ctx.done(done, x)
        done += 1
        models, times = models[1:] + [models[-1]], times[1:] + [vec]
        if step < steps:
            models[-1] = m if m is not None else data_pred(x, vec)
    return x
