"""A1111's `modules.deepbooru`: `model.tag(pil_image)` gives the DeepBooru tags of an image as one prompt string
(modules/interrogate/a1111_names.py)."""
from __future__ import annotations

from modules import shared
from modules.interrogate.a1111_names import DeepDanbooru

model = DeepDanbooru(lambda kind, payload: shared.run_job(kind, payload))
