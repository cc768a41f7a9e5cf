"""Image and score-map plumbing shared by the body, hand and face estimators: the resizing and stride padding the
CMU networks were run with (area when shrinking, Lanczos when enlarging; pad right/bottom with grey 128 to a
multiple of the network's stride 8), and the forward pass from a BGR uint8 image to H×W×C score maps."""
from __future__ import annotations

import cv2
import numpy as np
import torch

STRIDE = 8
PAD_VALUE = 128


def resize(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area when the result is smaller (by summed sides), Lanczos-4 when larger; any channel count."""
    h, w = x.shape[:2]
    interpolation = cv2.INTER_AREA if (width + height) / (w + h) < 1 else cv2.INTER_LANCZOS4
    if x.ndim == 2 or x.shape[2] in (1, 3):
        out = cv2.resize(x, (int(width), int(height)), interpolation=interpolation)
        return out.reshape(out.shape[:2] + x.shape[2:]) if x.ndim == 3 else out
    # cv2 resizes at most 4 channels per call with Lanczos; score maps have 19–71
    return np.stack([cv2.resize(np.ascontiguousarray(x[:, :, c]), (int(width), int(height)),
                                interpolation=interpolation) for c in range(x.shape[2])], axis=2)


def pad_to_stride(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Pad bottom/right with PAD_VALUE to multiples of STRIDE; returns the image and the padded (bottom, right)."""
    h, w = image.shape[:2]
    bottom, right = -h % STRIDE, -w % STRIDE
    padded = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, bottom, right


def to_input(image_bgr: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 H×W×3 BGR → 1×3×H×W float in [−0.5, 0.5) (the networks' /256 − 0.5 normalisation)."""
    x = torch.from_numpy(np.ascontiguousarray(image_bgr.transpose(2, 0, 1))).to(device=device, dtype=torch.float32)
    return (x / 256.0 - 0.5).unsqueeze(0)


def upsample_maps(maps: torch.Tensor, padded_hw: tuple[int, int], pad: tuple[int, int],
                  out_hw: tuple[int, int]) -> np.ndarray:
    """1×C×h×w network output → H×W×C: ×STRIDE (Lanczos), padding cut off, resized to out_hw."""
    m = maps[0].float().cpu().numpy().transpose(1, 2, 0)
    m = resize(m, m.shape[1] * STRIDE, m.shape[0] * STRIDE)
    m = m[:padded_hw[0] - pad[0], :padded_hw[1] - pad[1]]
    return resize(m, out_hw[1], out_hw[0])
