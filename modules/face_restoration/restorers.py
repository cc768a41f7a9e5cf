"""GFPGAN and CodeFormer as A1111's face restorers (`name()`, `restore(np_image)` on an RGB uint8 array), with the
networks built by spandrel (GFPGAN) and spandrel_extra_arches (CodeFormer) from the weights, and the faces found,
aligned and pasted back by our RetinaFace detector and alignment (modules/face_restoration/retinaface.py, align.py).

Files are read without running code (modules.models.safe_load) and handed to spandrel as a state dict; spandrel
detects the architecture from the keys and unwraps `params_ema` as the published files have it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable
import cv2
import numpy as np
import torch

from modules.face_restoration import align, retinaface
from modules.face_restoration import weights as face_weights
from modules.interrogate.weights import WeightPlace


class FaceRestoration:
    """A1111's base class (modules.face_restoration.FaceRestoration): extensions subclass it and append instances
    to shared.face_restorers."""

    def name(self) -> str:
        return "None"

    def restore(self, np_image: np.ndarray) -> np.ndarray:
        return np_image


def load_spandrel(path: Path, expected: str, device) -> torch.nn.Module:
    """The network in `path` through spandrel (modules/models/spandrel_models: no torchvision, no pickle code); a
    file of another architecture is refused, naming both."""
    from modules.models import spandrel_models
    descriptor = spandrel_models.load_model(path, extra_arches=expected == "CodeFormer")
    if descriptor.architecture.id != expected:
        raise ValueError(f"{path}: is a {descriptor.architecture.id} model, expected {expected}")
    return descriptor.model.to(device).eval()


def load_detector(path: Path, device) -> retinaface.RetinaFaceDetector:
    from modules.models import spandrel_models
    net = retinaface.RetinaFaceNet.from_state_dict(spandrel_models.read_state_dict(path))
    return retinaface.RetinaFaceDetector(net, device)


def rgb_to_tensor(face_rgb: np.ndarray, device) -> torch.Tensor:
    """A 512×512 RGB uint8 crop → 1×3×512×512 in [-1, 1] (what both networks take)."""
    t = torch.from_numpy(face_rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return (t * 2 - 1).to(device)


def tensor_to_rgb(t: torch.Tensor) -> np.ndarray:
    t = (t[0].float().detach().cpu().clamp(-1, 1) + 1) / 2
    return (t.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


class CommonFaceRestoration(FaceRestoration):
    """A spandrel face network plus the detector: find faces (scaled so the shorter side is 640, as A1111 asks
    facexlib), align each to 512×512, restore it, paste it back. Networks load on first use and stay loaded;
    with `unload` (the face_restoration_unload setting) they go back to the CPU after each image."""
    architecture = ""

    def __init__(self, place: WeightPlace, detector_place: WeightPlace, device="cpu", allow_download: bool = True):
        self.place, self.detector_place = place, detector_place
        self.model_path = str(place.download_dir)   # A1111's attribute
        self.cmd_dir = self.model_path
        self.device, self.allow_download = torch.device(device), allow_download
        self.net: torch.nn.Module | None = None
        self.detector: retinaface.RetinaFaceDetector | None = None
        self.unload = False
        self._lock = threading.Lock()

    def load_net(self) -> torch.nn.Module:
        return load_spandrel(face_weights.ensure(self.place, self.allow_download), self.architecture, self.device)

    def _load(self) -> None:
        if self.net is None:
            self.net = self.load_net()
        if self.detector is None:
            self.detector = load_detector(face_weights.ensure(self.detector_place, self.allow_download),
                                          self.device)
        self.net.to(self.device)
        self.detector.to(self.device)

    def restore_face(self, face: torch.Tensor, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def detect(self, rgb: np.ndarray) -> list[retinaface.Face]:
        """Faces with eyes at least 5 pixels apart (A1111's eye_dist_threshold), found on a copy whose shorter side
        is 640 pixels."""
        bgr = rgb[:, :, ::-1]
        scale = min(bgr.shape[:2]) / 640.0
        small = bgr if scale == 1 else cv2.resize(
            bgr, (int(bgr.shape[1] / scale), int(bgr.shape[0] / scale)), interpolation=cv2.INTER_LANCZOS4)
        faces = self.detector.detect(np.ascontiguousarray(small))
        for face in faces:
            face.box, face.landmarks = face.box * scale, face.landmarks * scale
        return [f for f in faces if np.linalg.norm(f.landmarks[0] - f.landmarks[1]) >= 5]

    def restore_aligned(self, crop_rgb: np.ndarray, **kwargs) -> np.ndarray:
        """One aligned 512×512 face → the restored face."""
        with torch.no_grad():
            out = self.restore_face(rgb_to_tensor(crop_rgb, self.device), **kwargs)
        return tensor_to_rgb(out)

    def restore_found(self, image: np.ndarray, faces: list[retinaface.Face], **kwargs) -> np.ndarray:
        """`image` (RGB uint8) with each of `faces` aligned, restored and pasted back."""
        out = image.copy()
        for face in faces:
            matrix = align.face_transform(face.landmarks)
            restored = self.restore_aligned(align.crop_face(image, matrix), **kwargs)
            out = align.paste_face(out, restored, matrix)
        return out

    def restore(self, np_image: np.ndarray, **kwargs) -> np.ndarray:
        """An RGB uint8 image with each face found restored; an image without faces comes back unchanged."""
        with self._lock:   # one image at a time per network
            self._load()
            try:
                image = np.ascontiguousarray(np_image[:, :, :3])
                return self.restore_found(image, self.detect(image), **kwargs)
            finally:
                if self.unload:
                    self.net.to("cpu")
                    self.detector.to("cpu")


class GFPGANRestorer(CommonFaceRestoration):
    architecture = "GFPGAN"

    def name(self) -> str:
        return "GFPGAN"

    def restore_face(self, face: torch.Tensor, **kwargs) -> torch.Tensor:
        # the file's stored noise instead of fresh noise per call (A1111 draws new noise each time): the same
        # image and settings give the same pixels again
        return self.net(face, return_rgb=False, randomize_noise=False)[0]


class CodeFormerRestorer(CommonFaceRestoration):
    architecture = "CodeFormer"
    weight = 0.5   # the code_former_weight setting: 0 = strongest effect, 1 = closest to the input

    def name(self) -> str:
        return "CodeFormer"

    def restore(self, np_image: np.ndarray, w: float | None = None) -> np.ndarray:   # A1111's signature
        return super().restore(np_image, w=self.weight if w is None else w)

    def restore_face(self, face: torch.Tensor, w: float = 0.5, **kwargs) -> torch.Tensor:
        # spandrel's CodeFormer names the fidelity `weight` (A1111 passes w=, which spandrel ignores)
        return self.net(face, weight=float(w))[0]


class FaceRestorers:
    """The runtime's face restorers (A1111's shared.face_restorers list: CodeFormer, GFPGAN, then any an extension
    adds) and the restore step the generation and Extras use."""

    def __init__(self, places: dict[str, WeightPlace], device="cpu", allow_download: bool = True):
        self.places = places
        self.setting: Callable[..., Any] = lambda key, default=None: default   # the runtime's settings, by key
        self.list: list[FaceRestoration] = [
            CodeFormerRestorer(places["CodeFormer"], places["detector"], device, allow_download),
            GFPGANRestorer(places["GFPGAN"], places["detector"], device, allow_download),
        ]

    def names(self) -> list[str]:
        return [r.name() for r in self.list]

    def find(self, name: str, field: str = "face_restoration_model") -> FaceRestoration:
        for restorer in self.list:
            if restorer.name() == name:
                return restorer
        from modules.engine.params import ParamError
        raise ParamError(field, f"unknown face restorer {name!r}; choose one of {self.names()}")

    def restore(self, np_image: np.ndarray, name: str, codeformer_weight: float | None = None,
                unload: bool = False) -> np.ndarray:
        restorer = self.find(name)
        if hasattr(restorer, "unload"):
            restorer.unload = unload
        if isinstance(restorer, CodeFormerRestorer):
            return restorer.restore(np_image, w=codeformer_weight)
        return restorer.restore(np_image)

    def describe(self) -> list[dict]:
        """/sdapi/v1/face-restorers: [{name, cmd_dir}] (cmd_dir: the model folder, None for one without)."""
        return [{"name": r.name(), "cmd_dir": getattr(r, "cmd_dir", None)} for r in self.list]


def for_paths(models_dir: Path, device="cpu", gfpgan_models_path: str | None = None,
              codeformer_models_path: str | None = None, allow_download: bool = True) -> FaceRestorers:
    return FaceRestorers(face_weights.default_places(models_dir, gfpgan_models_path, codeformer_models_path),
                         device, allow_download)

