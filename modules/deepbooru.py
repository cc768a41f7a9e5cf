"""A1111's `modules.deepbooru`: `model.tag(pil_image)` gives the DeepBooru tags of an image as one prompt string, with
the deepbooru_* settings (what Loopback's "append interrogated prompt" and extensions call). The work is the queued
"interrogate" job (modules/interrogate), run at once when called from inside a job."""
from __future__ import annotations

from modules import shared
from modules.engine import payload as payload_codec


def _interrogate(image, model: str) -> str:
    return shared.run_job("interrogate", {"image": payload_codec.image_to_png(image.convert("RGB")), "model": model})


class DeepDanbooru:
    """A1111's class: load/start/stop manage the network there; here the interrogator loads it on first use and keeps
    it, so they do nothing."""

    def load(self):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def tag(self, pil_image) -> str:
        return _interrogate(pil_image, "deepdanbooru")

    def tag_multi(self, pil_image, force_disable_ranks: bool = False) -> str:
        return self.tag(pil_image)


class ClipInterrogator:
    """`shared.interrogator`: A1111's InterrogateModels, of which extensions call `interrogate(pil_image)`."""

    def interrogate(self, pil_image) -> str:
        return _interrogate(pil_image, "clip")

    def load(self):
        pass

    def unload(self):
        pass

    def send_clip_to_ram(self):
        pass

    def send_blip_to_ram(self):
        pass


model = DeepDanbooru()
interrogator = ClipInterrogator()
