"""What a preprocessor gives back. A leaf module of its own because both `modules.controlnet.preprocessors` (which
runs the openpose networks) and `modules.controlnet.openpose` (which builds the result) need it: defined inside
either, the two packages would import each other. `modules.controlnet.preprocessors` re-exports it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detected:
    """image: the detected map, H×W×3 uint8 (H×W×4 for inpaint modules: alpha = the mask, 255 = repaint); None for
    preprocessors that give no image. pose: the openpose JSON document (§6.3) of openpose modules. display: the
    image /controlnet/detect and the preview show when it differs from `image` (inpaint: alpha = 255 − mask/2)."""
    image: np.ndarray | None
    pose: dict | None = None
    display: np.ndarray | None = None

    @property
    def shown(self) -> np.ndarray | None:
        return self.display if self.display is not None else self.image
