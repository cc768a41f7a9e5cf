"""A1111 v1.10.1's sampling rules, written a second time, plainly, as the tests' reference.

Independent of the engine's sampler code on purpose (nothing from modules.engine.k_sampling / a1111_loop /
samplers is imported): σ scalars are Python floats here, the samplers are written as explicit loops, LMS integrates
with scipy's quad as k-diffusion does, the σ→t map uses numpy's interp. Only the text conditioning (encode_text) and
the loaded UNet are shared with the engine, since sampling is what is compared.

The rules (A1111 + the k-diffusion version it pins):
- ᾱ from the LDM β schedule (float64, stored float32); σ_t = sqrt((1 − ᾱ)/ᾱ); the UNet gets x/sqrt(σ²+1) and the
  continuous t of σ (piecewise linear in log σ between training steps); ε-models: x0 = x − σ·ε.
- σ lists: Uniform = t evenly from 999 to 0; Karras ρ = 7 between the model's σmin and σmax; Exponential evenly in
  log σ; then 0. DPM2, DPM2 a and DPM++ 3M SDE sample one step more and drop the next-to-last σ.
- initial noise: one CPU generator per image seeded with its seed, x = noise·σ0 (DDIM/PLMS: x = noise);
  step noise: the same generators continue (with ENSD: re-seeded with seed + ENSD after the initial noise);
  SDE samplers: one torchsde BrownianTree per image seeded with its seed over [σmin>0, σmax] of the list.
- CFG: D = D_u + s·(D_c − D_u); cond and uncond in one UNet batch when their token lengths agree, else separate
  UNet calls (A1111's "Pad prompt/negative prompt" is off by default).
- DDIM/PLMS: timesteps 1, 1 + k, … (k = 1000 // steps); len − 1 model calls from the top.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class Reference:
    def __init__(self, model, prompts: list[str], negatives: list[str], cfg_scale: float):
        from modules.engine.conditioning import encode_text
        cfg = model.scheduler_config()
        betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, cfg["num_train_timesteps"],
                            dtype=np.float64) ** 2
        self.acp = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
        self.model_sigmas = ((1 - self.acp) / self.acp) ** 0.5
        self.log_sigmas = self.model_sigmas.log().double().numpy()
        self.model = model
        self.cond = self._group([encode_text(model, t).context for t in prompts])
        self.uncond = self._group([encode_text(model, t).context for t in negatives])
        self.scale = cfg_scale
        self.calls = 0

    @staticmethod
    def _group(contexts: list[torch.Tensor]) -> torch.Tensor:
        """A1111 batches the prompts of a batch by repeating each one's last vector up to the longest."""
        longest = max(c.shape[1] for c in contexts)
        out = []
        for c in contexts:
            if c.shape[1] < longest:
                c = torch.cat([c, c[:, -1:].repeat(1, longest - c.shape[1], 1)], dim=1)
            out.append(c)
        return torch.cat(out)

    # --- noise levels ---------------------------------------------------------------------------------------------
    def t_of(self, sigma: float) -> float:
        return float(np.interp(math.log(sigma), self.log_sigmas, np.arange(len(self.log_sigmas))))

    def sigma_of_t(self, t: float) -> float:
        return math.exp(float(np.interp(t, np.arange(len(self.log_sigmas)), self.log_sigmas)))

    def sigmas(self, schedule: str, steps: int, discard: bool = False) -> list[float]:
        n = steps + 1 if discard else steps
        smin, smax = float(self.model_sigmas[0]), float(self.model_sigmas[-1])
        if schedule == "Uniform":
            out = [self.sigma_of_t(t) for t in np.linspace(999, 0, n)]
        elif schedule == "Karras":
            out = [(smax ** (1 / 7) + k / (n - 1) * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7 for k in range(n)]
        elif schedule == "Exponential":
            out = [math.exp(v) for v in np.linspace(math.log(smax), math.log(smin), n)]
        else:
            raise ValueError(schedule)
        out = out + [0.0]
        if discard:
            out = out[:-2] + out[-1:]
        return out

    # --- the model ------------------------------------------------------------------------------------------------
    def _unet(self, x, t: float, context):
        with torch.no_grad():
            tt = torch.tensor(t, dtype=torch.float32)
            return self.model.unet(x.to(self.model.dtype), tt, encoder_hidden_states=context.to(self.model.dtype),
                                   return_dict=False)[0].float()

    def _cfg_out(self, x_in, t: float, scale: float):
        b = x_in.shape[0]
        if self.cond.shape[1] == self.uncond.shape[1]:
            out = self._unet(torch.cat([x_in, x_in]), t, torch.cat([self.cond, self.uncond]))
            c, u = out[:b], out[b:]
        else:
            c, u = self._unet(x_in, t, self.cond), self._unet(x_in, t, self.uncond)
        self.calls += 1
        return c, u

    def denoise(self, x, sigma: float):
        """x (VE) → the guided x0, A1111's CFGDenoiser over k-diffusion's discrete ε denoiser."""
        c, u = self._cfg_out(x / math.sqrt(sigma ** 2 + 1), self.t_of(sigma), self.scale)
        d_c, d_u = x - sigma * c, x - sigma * u
        return d_u + (d_c - d_u) * self.scale

    # LCM's 50 distilled steps
    def lcm_sigmas(self, n: int) -> list[float]:
        ts = np.linspace(999, 19, n)
        logs = np.log(self.model_sigmas.double().numpy())[19::20]
        return [math.exp(np.interp((t - 19) / 20, np.arange(50), logs)) for t in ts] + [0.0]

    def lcm_denoise(self, x, sigma: float):
        logs = np.log(self.model_sigmas.double().numpy())[19::20]
        t = int(np.abs(logs - math.log(sigma)).argmin()) * 20 + 19
        c, u = self._cfg_out(x / math.sqrt(sigma ** 2 + 1), float(t), self.scale)
        x0 = x - sigma * (u + (c - u) * self.scale)
        st = t * 10.0
        return st / math.sqrt(st ** 2 + 0.25) * x0 + 0.25 / (st ** 2 + 0.25) * x

    def eps(self, x, t: float, scale: float | None = None):
        c, u = self._cfg_out(x, float(t), self.scale)
        s = self.scale if scale is None else scale
        return u + (c - u) * s, u


class Noise:
    """A1111's ImageRNG: per-image CPU generators; the first draw is the initial noise."""

    def __init__(self, seeds: list[int], shape, ensd: int = 0):
        self.seeds, self.shape, self.ensd = seeds, shape, ensd
        self.gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]

    def first(self):
        x = torch.stack([torch.randn(self.shape, generator=g) for g in self.gens])
        if self.ensd:
            self.gens = [torch.Generator("cpu").manual_seed(s + self.ensd) for s in self.seeds]
        return x

    def next(self, *_):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.gens])


class Brownian:
    def __init__(self, x, sigmas: list[float], seeds: list[int]):
        import torchsde
        positive = [s for s in sigmas if s > 0]
        self.lo, self.hi = min(positive), max(sigmas)
        self.trees = [torchsde.BrownianTree(torch.tensor(self.lo, dtype=torch.float32), torch.zeros_like(x[0]),
                                            torch.tensor(self.hi, dtype=torch.float32), entropy=s) for s in seeds]

    def __call__(self, sigma: float, sigma_next: float):
        a, b = sorted((float(sigma), float(sigma_next)))
        w = torch.stack([tree(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
                         for tree in self.trees])
        # the tree runs from σmin to σmax: going down in σ flips the increment's sign
        sign = -1.0 if sigma_next < sigma else 1.0
        return w * sign / math.sqrt(abs(sigma_next - sigma))


def ancestral(s: float, s_next: float, eta: float = 1.0) -> tuple[float, float]:
    if not eta:
        return s_next, 0.0
    up = min(s_next, eta * math.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2))
    return math.sqrt(s_next ** 2 - up ** 2), up


# --- samplers: (ref, x, sigmas, noise) → x ---------------------------------------------------------------------------

def s_euler(ref, x, sig, noise, **_):
    for i in range(len(sig) - 1):
        noise()  # Algorithm 2 draws its churn noise every step, used or not
        d = (x - ref.denoise(x, sig[i])) / sig[i]
        x = x + d * (sig[i + 1] - sig[i])
    return x


def s_euler_a(ref, x, sig, noise, eta=1.0, **_):
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        down, up = ancestral(sig[i], sig[i + 1], eta)
        x = x + (x - den) / sig[i] * (down - sig[i])
        if sig[i + 1] > 0:
            x = x + noise(sig[i], sig[i + 1]) * up
    return x


def s_heun(ref, x, sig, noise, **_):
    for i in range(len(sig) - 1):
        noise()
        d = (x - ref.denoise(x, sig[i])) / sig[i]
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = (x2 - ref.denoise(x2, sig[i + 1])) / sig[i + 1]
            x = x + (d + d2) * 0.5 * dt
    return x


def s_dpm2(ref, x, sig, noise, **_):
    for i in range(len(sig) - 1):
        noise()
        d = (x - ref.denoise(x, sig[i])) / sig[i]
        if sig[i + 1] == 0:
            x = x + d * (0 - sig[i])
        else:
            mid = math.exp((math.log(sig[i]) + math.log(sig[i + 1])) / 2)
            x2 = x + d * (mid - sig[i])
            x = x + (x2 - ref.denoise(x2, mid)) / mid * (sig[i + 1] - sig[i])
    return x


def s_dpm2_a(ref, x, sig, noise, eta=1.0, **_):
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        down, up = ancestral(sig[i], sig[i + 1], eta)
        d = (x - den) / sig[i]
        if down == 0:
            x = x + d * (down - sig[i])
        else:
            mid = math.exp((math.log(sig[i]) + math.log(down)) / 2)
            x2 = x + d * (mid - sig[i])
            x = x + (x2 - ref.denoise(x2, mid)) / mid * (down - sig[i])
            x = x + noise(sig[i], sig[i + 1]) * up
    return x


def s_lms(ref, x, sig, noise, order=4, **_):
    from scipy import integrate
    ds = []
    for i in range(len(sig) - 1):
        ds.append((x - ref.denoise(x, sig[i])) / sig[i])
        ds = ds[-order:]
        cur = min(i + 1, order)

        def coeff(j):
            def basis(tau):
                prod = 1.0
                for k in range(cur):
                    if k != j:
                        prod *= (tau - sig[i - k]) / (sig[i - j] - sig[i - k])
                return prod
            return integrate.quad(basis, sig[i], sig[i + 1], epsrel=1e-4)[0]
        x = x + sum(coeff(j) * d for j, d in enumerate(reversed(ds)))
    return x


def s_dpmpp_2m(ref, x, sig, noise, **_):
    old = None
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        if sig[i + 1] == 0:
            x = den  # σ_next/σ·x − (e^{−h} − 1)·D with h = ∞
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
            if old is None:
                mixed = den
            else:
                r = (math.log(sig[i - 1]) - math.log(sig[i])) / h
                mixed = (1 + 1 / (2 * r)) * den - 1 / (2 * r) * old
            x = sig[i + 1] / sig[i] * x - math.expm1(-h) * mixed
        old = den
    return x


def s_dpmpp_2s_a(ref, x, sig, noise, eta=1.0, **_):
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        down, up = ancestral(sig[i], sig[i + 1], eta)
        if down == 0:
            x = x + (x - den) / sig[i] * (down - sig[i])
        else:
            h = math.log(sig[i]) - math.log(down)
            s_mid = math.exp(math.log(sig[i]) - h / 2)
            x2 = s_mid / sig[i] * x - math.expm1(-h / 2) * den
            x = down / sig[i] * x - math.expm1(-h) * ref.denoise(x2, s_mid)
        if sig[i + 1] > 0:
            x = x + noise(sig[i], sig[i + 1]) * up
    return x


def s_dpmpp_sde(ref, x, sig, noise, eta=1.0, **_):
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        if sig[i + 1] == 0:
            x = x + (x - den) / sig[i] * (0 - sig[i])
            continue
        lt, lt_next = -math.log(sig[i]), -math.log(sig[i + 1])
        h = lt_next - lt
        s_mid = math.exp(-(lt + h / 2))
        down, up = ancestral(sig[i], s_mid, eta)
        x2 = down / sig[i] * x - math.expm1(lt + math.log(down)) * den
        x2 = x2 + noise(sig[i], s_mid) * up
        den2 = ref.denoise(x2, s_mid)
        down, up = ancestral(sig[i], sig[i + 1], eta)
        x = down / sig[i] * x - math.expm1(lt + math.log(down)) * den2
        x = x + noise(sig[i], sig[i + 1]) * up
    return x


def s_dpmpp_2m_sde(ref, x, sig, noise, eta=1.0, heun=False, **_):
    old, h_last = None, None
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        h = None
        if sig[i + 1] == 0:
            x = den
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
            eh = eta * h
            x = sig[i + 1] / sig[i] * math.exp(-eh) * x - math.expm1(-h - eh) * den
            if old is not None:
                r = h_last / h
                if heun:
                    x = x + (-math.expm1(-h - eh) / (-h - eh) + 1) / r * (den - old)
                else:
                    x = x - 0.5 * math.expm1(-h - eh) / r * (den - old)
            if eta:
                x = x + noise(sig[i], sig[i + 1]) * sig[i + 1] * math.sqrt(-math.expm1(-2 * eh))
        old, h_last = den, h
    return x


def s_dpmpp_3m_sde(ref, x, sig, noise, eta=1.0, **_):
    hist = []  # (denoised, h) of earlier steps, newest first
    for i in range(len(sig) - 1):
        den = ref.denoise(x, sig[i])
        h = None
        if sig[i + 1] == 0:
            x = den
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
            he = h * (eta + 1)
            x = math.exp(-he) * x - math.expm1(-he) * den
            phi2 = math.expm1(-he) / he + 1
            if len(hist) >= 2 and hist[1][1] is not None and hist[0][1] is not None:
                r0, r1 = hist[0][1] / h, hist[1][1] / h
                d1_0 = (den - hist[0][0]) / r0
                d1_1 = (hist[0][0] - hist[1][0]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi2 * d1 - (phi2 / he - 0.5) * d2
            elif hist and hist[0][1] is not None:
                x = x + phi2 * (den - hist[0][0]) / (hist[0][1] / h)
            if eta:
                x = x + noise(sig[i], sig[i + 1]) * sig[i + 1] * math.sqrt(-math.expm1(-2 * h * eta))
        hist = [(den, h)] + hist[:1]
    return x


def _karras(n: int, lo: float, hi: float) -> list[float]:
    return [(hi ** (1 / 7) + k / (n - 1) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7 for k in range(n)] + [0.0]


def s_restart(ref, x, sig, noise, **_):
    """Restart sampling (Xu et al. 2023) with A1111's automatic plan: from 20 steps, Heun on a Karras list shortened by
    the restart steps; after the level nearest σ = 0.1, jump back up to the level nearest σ = 2 (re-noising) and
    come down again on its own Karras list, once (twice from 36 steps)."""
    steps = len(sig) - 1
    pairs = list(zip(sig[:-1], sig[1:]))
    if steps >= 20:
        r_steps, r_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        main = _karras(steps - r_steps * r_times, sig[-2], sig[0])
        at = min(range(len(main)), key=lambda k: abs(main[k] - 0.1))
        top = min(range(len(main)), key=lambda k: abs(main[k] - 2))
        pairs = []
        for k in range(len(main) - 1):
            pairs.append((main[k], main[k + 1]))
            if k + 1 == at and top < at:
                inner = _karras(r_steps + 1, main[at], main[top])[:-1]
                pairs += list(zip(inner[:-1], inner[1:])) * r_times
    last = None
    for old, new in pairs:
        if last is not None and last < old:
            x = x + noise() * math.sqrt(old ** 2 - last ** 2)
        d = (x - ref.denoise(x, old)) / old
        if new == 0:
            x = x + d * (new - old)
        else:
            x2 = x + d * (new - old)
            x = x + (d + (x2 - ref.denoise(x2, new)) / new) / 2 * (new - old)
        last = new
    return x


def s_dpm_fast(ref, x, smin: float, smax: float, n: int, noise, eta=1.0, **_):
    """DPM-Solver-fast, ε form, orders 3…3 then 2,1 or n % 3. A1111 passes its ancestral eta (1) to it, so each step
    ends below the grid's next level and adds noise back up to it."""
    def eps(x, lt):
        s = math.exp(-lt)
        return (x - ref.denoise(x, s)) / s

    lt0, lt1 = -math.log(smax), -math.log(smin)
    m = n // 3 + 1
    ts = torch.linspace(lt0, lt1, m + 1).double().tolist()
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for k, order in enumerate(orders):
        t, t_grid = ts[k], ts[k + 1]
        down, _ = ancestral(math.exp(-t), math.exp(-t_grid), eta)
        tn = min(lt1, -math.log(down)) if eta else t_grid
        up = math.sqrt(math.exp(-t_grid) ** 2 - math.exp(-tn) ** 2) if eta else 0.0
        h = tn - t
        e = eps(x, t)
        if order == 1:
            x = x - math.exp(-tn) * math.expm1(h) * e
        elif order == 2:
            s1 = t + h / 2
            u1 = x - math.exp(-s1) * math.expm1(h / 2) * e
            e1 = eps(u1, s1)
            x = x - math.exp(-tn) * math.expm1(h) * e - math.exp(-tn) * math.expm1(h) * (e1 - e)
        else:
            s1, s2 = t + h / 3, t + 2 * h / 3
            u1 = x - math.exp(-s1) * math.expm1(h / 3) * e
            e1 = eps(u1, s1)
            u2 = x - math.exp(-s2) * math.expm1(2 * h / 3) * e - math.exp(-s2) * 2 * \
                (math.expm1(2 * h / 3) / (2 * h / 3) - 1) * (e1 - e)
            e2 = eps(u2, s2)
            x = x - math.exp(-tn) * math.expm1(h) * e - math.exp(-tn) * 1.5 * (math.expm1(h) / h - 1) * (e2 - e)
        x = x + up * noise()
    return x


def s_dpm_adaptive(ref, x, smin: float, smax: float, noise, eta=1.0, rtol=0.05, atol=0.0078, h=0.05, **_):
    """DPM-Solver-23 with adaptive steps (PID controller with only the integral term, safety 0.81), A1111's eta 1:
    each accepted step ends below the target level and adds noise back up to it."""
    def eps(x, lt):
        s = math.exp(-lt)
        return (x - ref.denoise(x, s)) / s

    def solve2(x, t, tn, e, r1=1 / 3):
        hh = tn - t
        s1 = t + r1 * hh
        e1 = eps(x - math.exp(-s1) * math.expm1(r1 * hh) * e, s1)
        return x - math.exp(-tn) * math.expm1(hh) * e - math.exp(-tn) / (2 * r1) * math.expm1(hh) * (e1 - e)

    def solve3(x, t, tn, e):
        hh = tn - t
        s1, s2 = t + hh / 3, t + 2 * hh / 3
        e1 = eps(x - math.exp(-s1) * math.expm1(hh / 3) * e, s1)
        u2 = x - math.exp(-s2) * math.expm1(2 * hh / 3) * e - math.exp(-s2) * 2 * \
            (math.expm1(2 * hh / 3) / (2 * hh / 3) - 1) * (e1 - e)
        e2 = eps(u2, s2)
        return x - math.exp(-tn) * math.expm1(hh) * e - math.exp(-tn) * 1.5 * (math.expm1(hh) / hh - 1) * (e2 - e)

    s, t_end = -math.log(smax), -math.log(smin)
    x_prev, inv_prev = x, None
    while s < t_end - 1e-5:
        t = min(t_end, s + h)
        down, _ = ancestral(math.exp(-s), math.exp(-t), eta)
        t_ = min(t_end, -math.log(down))
        up = math.sqrt(math.exp(-t) ** 2 - math.exp(-t_) ** 2)
        e = eps(x, s)
        low, high = solve2(x, s, t_, e), solve3(x, s, t_, e)
        delta = torch.maximum(torch.tensor(atol), rtol * torch.maximum(low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((low - high) / delta) / x.numel() ** 0.5)
        inv = 1 / (error + 1e-8)
        factor = 1 + math.atan(inv ** (1 / 1.5) - 1)
        h *= factor
        if factor >= 0.81:
            x_prev = low
            x = high + up * noise()
            s = t
    return x


def ddim_grid(steps: int) -> list[int]:
    return [min(max(t + 1, 0), 999) for t in range(0, 1000, 1000 // steps)]


def s_ddim(ref, x, grid, noise, eta=0.0, cfgpp=False, **_):
    acp = ref.acp.double()
    for index in range(len(grid) - 1, 0, -1):
        a, a_prev = float(ref.acp[grid[index]]), float(acp[grid[index - 1]])
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        if cfgpp:
            e, u = ref.eps(x, grid[index], ref.scale / 12.5)
        else:
            e, u = ref.eps(x, grid[index])
            u = e
        x0 = (x - math.sqrt(1 - a) * e) / math.sqrt(a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma ** 2) * u + sigma * noise()
    return x


def s_plms(ref, x, grid, noise, **_):
    acp = ref.acp.double()

    def step(x, e, index):
        a, a_prev = float(ref.acp[grid[index]]), float(acp[grid[index - 1]])
        return math.sqrt(a_prev) * (x - math.sqrt(1 - a) * e) / math.sqrt(a) + math.sqrt(1 - a_prev) * e

    olds = []
    for index in range(len(grid) - 1, 0, -1):
        e = ref.eps(x, grid[index])[0]
        if not olds:
            e2 = ref.eps(step(x, e, index), grid[index - 1])[0]
            ep = (e + e2) / 2
        elif len(olds) == 1:
            ep = (3 * e - olds[-1]) / 2
        elif len(olds) == 2:
            ep = (23 * e - 16 * olds[-1] + 5 * olds[-2]) / 12
        else:
            ep = (55 * e - 59 * olds[-1] + 37 * olds[-2] - 9 * olds[-3]) / 24
        x = step(x, ep, index)
        olds = (olds + [e])[-3:]
    return x


def s_unipc(ref, x, grid, noise, order=3, **_):
    """UniPC-bh1 multistep with data prediction (Zhao et al. 2023) as A1111 configures it: len(grid) steps on t
    evenly spaced from 1 to 1/1000, log α piecewise linear in t, the UNet at (t − 1/1000)·1000, lower orders first
    and last, no corrector on the last step."""
    n_train = len(ref.acp)
    t_grid = np.linspace(0, 1, n_train + 1)[1:]
    log_alpha = 0.5 * np.log(ref.acp.double().numpy())

    def alpha(t):
        return math.exp(np.interp(t, t_grid, log_alpha))

    def std(t):
        return math.sqrt(1 - alpha(t) ** 2)

    def lam(t):
        return math.log(alpha(t)) - math.log(std(t))

    def x0(x, t):
        e, _ = ref.eps(x, (t - 1 / n_train) * 1000)
        return (x - std(t) * e) / alpha(t)

    steps = len(grid)
    order = min(order, steps)
    ts = np.linspace(1.0, 1 / n_train, steps + 1)
    hist = [(ts[0], x0(x, ts[0]))]  # (t, x0 prediction), oldest first

    def step(x, t, k, correct):
        t0, m0 = hist[-1]
        h = lam(t) - lam(t0)
        rks = [(lam(hist[-(i + 1)][0]) - lam(t0)) / h for i in range(1, k)]
        d1s = [(hist[-(i + 1)][1] - m0) / rk for i, rk in enumerate(rks, start=1)]
        rks = rks + [1.0]
        hh = -h
        phi, fact, b = math.expm1(hh) / hh - 1, 1, []
        for i in range(1, k + 1):
            b.append(phi * fact / hh)  # B(h) = h
            fact *= i + 1
            phi = phi / hh - 1 / fact
        R = np.array([[r ** (i - 1) for r in rks] for i in range(1, k + 1)])
        base = std(t) / std(t0) * x - alpha(t) * math.expm1(hh) * m0
        pred = base
        if d1s:
            rho = [0.5] if k == 2 else np.linalg.solve(R[:-1, :-1], np.array(b[:-1]))
            pred = base - alpha(t) * hh * sum(float(r) * d for r, d in zip(rho, d1s))
        if not correct:
            return pred, None
        rho_c = [0.5] if k == 1 else np.linalg.solve(R, np.array(b))
        m_t = x0(pred, t)
        corr = sum(float(r) * d for r, d in zip(rho_c[:-1], d1s)) if d1s else 0
        return base - alpha(t) * hh * (corr + float(rho_c[-1]) * (m_t - m0)), m_t

    for i in range(1, steps + 1):
        k = min(order, i, steps + 1 - i)
        x, m = step(x, ts[i], k, i < steps)
        if i < steps:
            hist.append((ts[i], m if m is not None else x0(x, ts[i])))
            hist = hist[-order:]
    return x


def s_lcm(ref, x, sig, noise, **_):
    """A1111's LCM: its denoiser knows only t = 19, 39, …, 999 (σ snapped to the nearest), returns the consistency
    output c_skip·x + c_out·x0 (σ_data 0.5, time ×10); the sampler jumps to it and renoises to the next σ."""
    for i in range(len(sig) - 1):
        x = ref.lcm_denoise(x, sig[i])
        if sig[i + 1] > 0:
            x = x + sig[i + 1] * noise()
    return x


# sampler name → (function, default schedule, discard next-to-last σ, Brownian noise)
K_SAMPLERS = {
    "Euler": (s_euler, "Uniform", False, False),
    "Euler a": (s_euler_a, "Uniform", False, False),
    "Heun": (s_heun, "Uniform", False, False),
    "LMS": (s_lms, "Uniform", False, False),
    "DPM2": (s_dpm2, "Karras", True, False),
    "DPM2 a": (s_dpm2_a, "Karras", True, False),
    "DPM++ 2M": (s_dpmpp_2m, "Karras", False, False),
    "DPM++ 2S a": (s_dpmpp_2s_a, "Karras", False, False),
    "DPM++ SDE": (s_dpmpp_sde, "Karras", False, True),
    "DPM++ 2M SDE": (s_dpmpp_2m_sde, "Exponential", False, True),
    "DPM++ 2M SDE Heun": (lambda *a, **k: s_dpmpp_2m_sde(*a, heun=True, **k), "Exponential", False, True),
    "DPM++ 3M SDE": (s_dpmpp_3m_sde, "Exponential", True, True),
    "Restart": (s_restart, "Karras", False, False),
}
TIMESTEP_SAMPLERS = {"DDIM": s_ddim, "DDIM CFG++": lambda *a, **k: s_ddim(*a, cfgpp=True, **k), "PLMS": s_plms,
                     "UniPC": s_unipc}


def run(model, sampler: str, steps: int, seeds: list[int], prompts: list[str], negatives: list[str],
        cfg_scale: float, width: int, height: int, schedule: str = "Automatic", ensd: int = 0) -> torch.Tensor:
    """The latents A1111 would produce (before the VAE)."""
    ref = Reference(model, prompts, negatives, cfg_scale)
    factor = model.vae_scale_factor
    shape = (model.vae.config.latent_channels, height // factor, width // factor)
    rng = Noise(seeds, shape, ensd)
    x = rng.first()
    if sampler in TIMESTEP_SAMPLERS:
        return TIMESTEP_SAMPLERS[sampler](ref, x, ddim_grid(steps), rng.next)
    if sampler == "LCM":
        sig = ref.lcm_sigmas(steps)
        return s_lcm(ref, x * sig[0], sig, rng.next)
    if sampler == "DPM adaptive":
        sig = ref.sigmas("Uniform", steps)
        return s_dpm_adaptive(ref, x * sig[0], float(ref.model_sigmas[0]), float(ref.model_sigmas[-1]), rng.next)
    if sampler == "DPM fast":
        sig = ref.sigmas("Uniform", steps)
        return s_dpm_fast(ref, x * sig[0], float(ref.model_sigmas[0]), float(ref.model_sigmas[-1]), steps, rng.next)
    fn, default, discard, brownian = K_SAMPLERS[sampler]
    sig = ref.sigmas(default if schedule == "Automatic" else schedule, steps, discard)
    x = x * sig[0]
    noise = Brownian(x, sig, seeds) if brownian else rng.next
    return fn(ref, x, sig, noise)
