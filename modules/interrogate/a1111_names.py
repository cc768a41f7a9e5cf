"""The objects behind A1111's interrogation names: `shared.interrogator` (InterrogateModels, whose `interrogate(
pil_image)` gives the CLIP caption) and `modules.deepbooru.model` (DeepDanbooru, whose `tag(pil_image)` gives the tags
as one prompt string, with the deepbooru_* settings). What Loopback's "append interrogated prompt" and extensions
call. Each runs the queued "interrogate" job through `run_job(kind, payload)` (shared.run_job: at once when called
from inside a job). Their load/start/stop/unload methods manage the networks in A1111; here the interrogator loads a
network on first use and keeps it, so they do nothing."""
from __future__ import annotations

from typing import Any, Callable

from modules.engine import payload as payload_codec

RunJob = Callable[[str, dict], Any]


def _interrogate(run_job: RunJob, image, model: str) -> str:
    return run_job("interrogate", {"image": payload_codec.image_to_png(image.convert("RGB")), "model": model})


class DeepDanbooru:
    def __init__(self, run_job: RunJob):
        self._run_job = run_job

    def load(self):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def tag(self, pil_image) -> str:
        return _interrogate(self._run_job, pil_image, "deepdanbooru")

    def tag_multi(self, pil_image, force_disable_ranks: bool = False) -> str:
        return self.tag(pil_image)


class InterrogateModels:
    def __init__(self, run_job: RunJob):
        self._run_job = run_job

    def interrogate(self, pil_image) -> str:
        return _interrogate(self._run_job, pil_image, "clip")

    def load(self):
        pass

    def unload(self):
        pass

    def send_clip_to_ram(self):
        pass

    def send_blip_to_ram(self):
        pass
