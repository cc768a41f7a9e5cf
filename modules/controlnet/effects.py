"""ControlNet effects that act on the model's prediction or on the decoded image rather than through residuals
(CONTROLNET-REFERENCE §4.7, §4.9).

* `inpaint_only` (and `inpaint_only+lama`): after every UNet call the predicted x0 is replaced, outside the mask, by
  the VAE latent of the control image; the prediction is recomputed from that x0 and mixed in with
  w = clamp(weight, 0, 1). After decoding each image is blended in pixels with the control image through the mask
  dilated and box-blurred by the setting control_net_inpaint_blur_sigma. In img2img with an A1111 mask the unit
  becomes plain `inpaint` (global harmonious), as in the extension.
* `tile_colorfix` / `tile_colorfix+sharp`: after every UNet call x0 keeps its detail but takes its low frequencies
  (box blur of radius Variation, doubled in the hires pass) from the control image's latent; +sharp blends the
  negative-prompt rows' x0 towards its blur by Sharpness/100. Mixed in with clamp(weight, 0, 1).
* `recolor_luminance` / `recolor_intensity`: after decoding, the image's L (Lab) resp. V (HSV) channel becomes the
  control map.

As in sd-webui-controlnet, the per-step replacements and the pixel blends happen at every step whatever the unit's
guidance window: they are what makes the unit "only" inpaint or keep the tile's colours; the window governs the
ControlNet model (modules/controlnet/apply.py).

The UNet sees x_t = a·x0 + b·ε with a = 1/√(1+σ²), b = σ/√(1+σ²) whatever the sampler (k-diffusion schedulers
scale their latents to that before the call; DDIM-like ones keep them so), so x0 and ε follow from the call's input
and σ alone; v-prediction models are converted too (the extension treated every output as ε).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from modules.controlnet.apply import ActiveUnit

RESTORE = "inpaint_only"           # a substring: inpaint_only+lama restores too
COLORFIX = "colorfix"


# --- the noise schedule seen by the UNet ----------------------------------------------------------------------------
def noise_levels(sigma: float) -> tuple[float, float]:
    """(a, b) with x_t = a·x0 + b·ε for the UNet input at noise level σ."""
    if not math.isfinite(sigma):
        return 0.0, 1.0
    s = math.sqrt(1.0 + sigma * sigma)
    return 1.0 / s, sigma / s


def defined(sigma: float, prediction_type: str) -> bool:
    """Whether x0 follows from the output at this σ (not at σ = 0, nor at σ = ∞ with ε-prediction)."""
    a, b = noise_levels(sigma)
    return b > 0 and (a > 0 or prediction_type == "v_prediction")


def split_prediction(x: torch.Tensor, out: torch.Tensor, sigma: float, prediction_type: str):
    """The model output → (x0, ε), where `defined`."""
    a, b = noise_levels(sigma)
    if prediction_type == "v_prediction":
        return a * x - b * out, b * x + a * out
    return (x - b * out) / a, out


def join_prediction(x: torch.Tensor, x0: torch.Tensor, sigma: float, prediction_type: str) -> torch.Tensor:
    """The model output that predicts `x0` from `x` (inverse of split_prediction's x0)."""
    a, b = noise_levels(sigma)
    eps = (x - a * x0) / b
    return a * eps - b * x0 if prediction_type == "v_prediction" else eps


def box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a (2k+1)² window with replicated edges (the extension's blur)."""
    if k <= 0:
        return x
    return F.avg_pool2d(F.pad(x, (k, k, k, k), mode="replicate"), 2 * k + 1, stride=1)


def encode_map(model, rgb: np.ndarray) -> torch.Tensor:
    """An RGB uint8 map → its latent, 1×C×h×w float32 on the model's device."""
    from PIL import Image

    from modules.engine.vae_codec import images_to_latents
    return images_to_latents(model, [Image.fromarray(np.ascontiguousarray(rgb[..., :3]))])


def clamp01(value: float) -> float:
    return max(0.0, min(1.0, float(value)))


def slider_values(au: ActiveUnit) -> tuple[float, float]:
    """threshold_a and threshold_b after the §0.4 clamp (the slider defaults replace -1)."""
    _, a, b = au.pre.clamp(au.unit.processor_res, au.unit.threshold_a, au.unit.threshold_b)
    return float(a), float(b)


# --- per step: x0 replacement ---------------------------------------------------------------------------------------
class StepEffects:
    """Registered on `before_unet` (remembers the call: its input and σ) and `cfg_denoised` (edits that call's
    output in place, before the CFG combine), so every row — prompt and negative — is corrected as in the
    extension, which did this at the end of the UNet's forward."""

    def __init__(self, colorfix: list[ActiveUnit], restore: list[ActiveUnit], factor: int, hires_enabled: bool,
                 prediction_type: str):
        self.colorfix, self.restore = colorfix, restore
        self.factor, self.hires_enabled, self.prediction_type = factor, hires_enabled, prediction_type
        self.latents: dict[tuple, torch.Tensor] = {}
        self.masks: dict[tuple, torch.Tensor] = {}
        self.call = None

    def before_unet(self, call) -> None:
        self.call = call

    def cfg_denoised(self, params) -> None:
        call, self.call = self.call, None
        if call is None:
            return
        x = call.x[:, :4].float()
        sigma = float(call.step.sigma)
        out = params.x.float()
        if not defined(sigma, self.prediction_type):
            return
        height, width = x.shape[-2] * self.factor, x.shape[-1] * self.factor
        for au in self.colorfix:
            x0 = split_prediction(x, out, sigma, self.prediction_type)[0]
            x0 = self._colorfix(au, call, x0, width, height)
            out = self._mix(au, x, x0, out, sigma)
        for au in self.restore:
            x0 = split_prediction(x, out, sigma, self.prediction_type)[0]
            mask = self._mask(au, width, height, x.device)
            x0 = x0 * mask + self._latent(au, call.model, width, height) * (1 - mask)
            out = self._mix(au, x, x0, out, sigma)
        params.x.copy_(out.to(params.x.dtype))

    def _mix(self, au: ActiveUnit, x, x0, out, sigma: float) -> torch.Tensor:
        w = clamp01(au.unit.weight)
        return join_prediction(x, x0, sigma, self.prediction_type) * w + out * (1 - w)

    def _colorfix(self, au: ActiveUnit, call, x0: torch.Tensor, width: int, height: int) -> torch.Tensor:
        variation, sharpness = slider_values(au)
        k = int(variation)
        if self.hires_enabled and call.step.pass_name == "hires" and au.unit.hr_option != "Low res only":
            k *= 2
        x0 = x0 - box_blur(x0, k) + box_blur(self._latent(au, call.model, width, height), k)
        if "+sharp" in au.pre.name and call.uncond_rows:
            detail = sharpness * 0.01
            rows = call.uncond_rows
            x0 = x0.clone()
            x0[rows] = detail * box_blur(x0[rows], k) + (1 - detail) * x0[rows]
        return x0

    def _latent(self, au: ActiveUnit, model, width: int, height: int) -> torch.Tensor:
        key = (au.number, height, width)
        if key not in self.latents:
            self.latents[key] = encode_map(model, au.control.map_at(width, height))
        return self.latents[key]

    def _mask(self, au: ActiveUnit, width: int, height: int, device) -> torch.Tensor:
        """The repaint mask on the latent grid: a (f+2)² max-pool with stride f and padding 1 (10/8/1 for SD's
        factor 8), so the latent cells at the mask's edge count as repainted."""
        key = (au.number, height, width)
        if key not in self.masks:
            m = au.control.map_at(width, height)
            if m.ndim != 3 or m.shape[2] != 4:
                raise ValueError(f"{au.pre.name}: the control map has no mask channel")
            mask = torch.from_numpy((m[..., 3] > 127).astype(np.float32))[None, None]
            f = self.factor
            self.masks[key] = F.max_pool2d(mask, f + 2, stride=f, padding=1).to(device)
        return self.masks[key]


# --- after decoding -------------------------------------------------------------------------------------------------
def blend_mask(mask: np.ndarray, sigma: int) -> np.ndarray:
    """The pixel blend's mask: the binary repaint mask dilated with a σ×σ box, then box-blurred σ×σ (σ < 1: as is)."""
    m = (mask > 127).astype(np.float32)
    if sigma >= 1:
        m = cv2.dilate(m, np.ones((sigma, sigma), np.uint8))
        m = cv2.blur(m, (sigma, sigma))
    return m


def recolor(image: np.ndarray, grey: np.ndarray, kind: str) -> np.ndarray:
    """RGB uint8 image with its Lab L (kind "luminance") or HSV V ("intensity") channel replaced by `grey`."""
    to, back = (cv2.COLOR_RGB2LAB, cv2.COLOR_LAB2RGB) if kind == "luminance" else \
        (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
    converted = cv2.cvtColor(image, to)
    converted[:, :, 2 if kind == "intensity" else 0] = grey
    return cv2.cvtColor(converted, back)


class DecodedEffects:
    """The `postprocess_batch` hook: decoded images (B×3×H×W, 0..1) edited in place, unit by unit."""

    def __init__(self, restore: list[ActiveUnit], recolors: list[ActiveUnit], blur_sigma: int):
        self.units = [(au, "restore") for au in restore] + [(au, "recolor") for au in recolors]
        self.units.sort(key=lambda item: item[0].number)
        self.blur_sigma = int(blur_sigma)

    def __call__(self, p, images: torch.Tensor, batch_number=None, **kwargs) -> None:
        height, width = images.shape[-2:]
        for au, kind in self.units:
            m = au.control.map_at(width, height)
            if kind == "restore":
                raw = torch.from_numpy(m[..., :3].astype(np.float32) / 255).permute(2, 0, 1).to(images)
                mask = torch.from_numpy(blend_mask(m[..., 3], self.blur_sigma))[None].to(images)
                images.copy_((mask * images.clamp(0, 1) + (1 - mask) * raw).clamp(0, 1))
                continue
            channel = "luminance" if "luminance" in au.pre.name else "intensity"
            for i in range(images.shape[0]):
                rgb = (images[i] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                out = recolor(np.ascontiguousarray(rgb), m[..., 0], channel)
                images[i] = torch.from_numpy(out.astype(np.float32) / 255).permute(2, 0, 1).to(images)


# --- wiring ---------------------------------------------------------------------------------------------------------
def attach(p, active: list[ActiveUnit], hires_enabled: bool, blur_sigma: int) -> None:
    """Registers the hooks the units need on p.hooks. Call before the infotext is written: an `inpaint_only` unit
    in img2img with an A1111 mask is renamed `inpaint` here (the extension's fallback)."""
    if getattr(p, "is_img2img", False) and getattr(p, "image_mask", None) is not None:
        for au in active:
            if au.pre.name == "inpaint_only":
                from modules.controlnet import preprocessors
                au.unit.module, au.pre = "inpaint", preprocessors.get("inpaint")
    colorfix = [au for au in active if COLORFIX in au.pre.name]
    restore = [au for au in active if RESTORE in au.pre.name]
    recolors = [au for au in active if "recolor" in au.pre.name]
    model = p.sd_model
    if colorfix or restore:
        prediction = model.scheduler_config().get("prediction_type", "epsilon")
        step = StepEffects(colorfix, restore, model.vae_scale_factor, hires_enabled, prediction)
        p.hooks.add("before_unet", step.before_unet)
        p.hooks.add("cfg_denoised", step.cfg_denoised)
    if restore or recolors:
        p.hooks.add("postprocess_batch", DecodedEffects(restore, recolors, blur_sigma))
