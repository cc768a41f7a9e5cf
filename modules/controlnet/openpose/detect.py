"""The openpose preprocessor family (openpose, openpose_face, openpose_faceonly, openpose_full, openpose_hand): the
CMU networks on the image at processor resolution, the poses drawn as the openpose ControlNets expect, and the pose
JSON `/controlnet/detect` returns (CONTROLNET-REFERENCE §1.2, §3.3, §6).

The body network always runs (hands and faces are found from the body's arms and head); `body=False`
(openpose_faceonly) only leaves the body out of the drawing, not out of the JSON.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from modules.controlnet.annotators import annotators_file
from modules.controlnet.detected import Detected
from modules.controlnet.openpose import body as body_estimator
from modules.controlnet.openpose import hand_face
from modules.controlnet.openpose.draw import draw
from modules.controlnet.openpose.networks import BodyPoseNet, FacePoseNet, HandPoseNet
from modules.controlnet.openpose.pose_json import Person, PoseDocument, to_json

BODY_FILE = annotators_file("body_pose_model.pth", "openpose")
HAND_FILE = annotators_file("hand_pose_model.pth", "openpose")
FACE_FILE = annotators_file("facenet.pth", "openpose")
ANNOTATOR_FILES = (BODY_FILE, HAND_FILE, FACE_FILE)

NETWORK_CLASSES = {"body": BodyPoseNet, "hand": HandPoseNet, "face": FacePoseNet}

_lock = threading.Lock()          # one detection at a time: the cached networks move between devices
_cache: dict[str, tuple[tuple, torch.nn.Module]] = {}


def load_network(kind: str, path: str | Path) -> torch.nn.Module:
    """The `kind` ("body", "hand", "face") network with the weights of `path`, on the CPU, in eval mode. The file
    must hold exactly that network's tensors (restricted unpickler; strict key and shape check)."""
    from modules.controlnet.annotator_nets.loaded_nets import load_strict
    return load_strict(NETWORK_CLASSES[kind](), path, f"openpose {kind}")


def cached_network(kind: str, path: Path) -> torch.nn.Module:
    """load_network, kept while the file is unchanged (the three files are 150–200 MB each)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    hit = _cache.get(kind)
    if hit is None or hit[0] != key:
        _cache.pop(kind, None)
        _cache[kind] = (key, load_network(kind, path))
    return _cache[kind][1]


def unload() -> None:
    """Forget the loaded networks (memory back to the system)."""
    with _lock:
        _cache.clear()


def run(image: np.ndarray, resolution: int, store, *, body: bool = True, hand: bool = False, face: bool = False,
        device: torch.device | None = None) -> Detected:
    """Detect people in an RGB (or grey/RGBA) uint8 image. The image is scaled so its short side is `resolution`
    and edge-padded to multiples of 64 (§3.1); poses are found and drawn on the padded canvas, the map is cropped
    back, and the JSON keeps the padded canvas with coordinates normalised to it (as the extension reports them)."""
    from modules.controlnet.resize import preprocess_resize, to_rgb
    if store is None:
        raise ValueError("openpose needs an annotator store to find body_pose_model.pth")
    if device is None:
        from modules import devices
        device = devices.get_device_for("controlnet")
    paths = {"body": store.ensure(BODY_FILE)}
    if hand:
        paths["hand"] = store.ensure(HAND_FILE)
    if face:
        paths["face"] = store.ensure(FACE_FILE)

    padded, remove_pad = preprocess_resize(to_rgb(image), int(resolution))
    bgr = np.ascontiguousarray(padded[:, :, ::-1])       # the CMU networks were trained on BGR
    with _lock:
        nets = {kind: cached_network(kind, Path(p)) for kind, p in paths.items()}
        try:
            for net in nets.values():
                net.to(device)
            doc = find_poses(bgr, nets, device)
        finally:
            for net in nets.values():
                net.to("cpu")
    canvas = draw(doc, body=body, hands=hand, face=face)
    return Detected(image=remove_pad(canvas), pose=to_json(doc, normalised=True))


def find_poses(image_bgr: np.ndarray, nets: dict, device: torch.device) -> PoseDocument:
    """People in a BGR image with the networks given ("body" required; "hand", "face" optional), in its pixels."""
    height, width = image_bgr.shape[:2]
    people = [Person(body=points) for points in body_estimator.estimate(nets["body"], image_bgr, device)]
    for person in people:
        add_hands_and_face(person, image_bgr, nets, device)
    return PoseDocument(width, height, people)


def add_hands_and_face(person: Person, image_bgr: np.ndarray, nets: dict, device: torch.device) -> None:
    """Hands ("hand" in nets) and face ("face" in nets) of one person, from crops placed by its body points."""
    height, width = image_bgr.shape[:2]

    def shifted(points, x, y):
        return [None if p is None else (float(p[0] + x), float(p[1] + y)) for p in points]

    if "hand" in nets:
        for x, y, side, is_left in hand_face.hand_boxes(person.body, width, height):
            found = hand_face.estimate_hand(nets["hand"], image_bgr[y:y + side, x:x + side], device)
            if is_left:
                person.left_hand = shifted(found, x, y)
            else:
                person.right_hand = shifted(found, x, y)
    if "face" in nets:
        box = hand_face.face_box(person.body, width, height)
        if box is not None:
            x, y, side = box
            person.face = shifted(hand_face.estimate_face(nets["face"], image_bgr[y:y + side, x:x + side], device),
                                  x, y)
