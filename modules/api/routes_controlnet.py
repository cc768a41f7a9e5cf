"""sd-webui-controlnet's HTTP routes (CONTROLNET-REFERENCE §1.1–1.3), same paths and shapes, mounted by the built-in
ControlNet extension when the app starts (with or without --api, as the extension does). Errors are A1111's error
body; bad input is a 422 that names the field."""
from __future__ import annotations

import base64
import io
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict

from modules.api.common import error_response
from modules.engine.params import ParamError

API_VERSION = 3
UNSUPPORTED_DETECT = ("clip_vision", "revision_clipvision", "revision_ignore_prompt", "ip-adapter-auto")


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    controlnet_module: str = "none"
    controlnet_input_images: list[Any] = []
    controlnet_processor_res: float = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[Any] = []
    low_vram: bool = False


def _png_b64(array) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _reject(exc: ParamError):
    return error_response(422, "ParamError", str(exc))


def mount(app: FastAPI, service, unit_count: Callable[[], int]) -> None:
    from modules.controlnet import control_types as ct
    from modules.controlnet import preprocessors

    @app.get("/controlnet/version")
    def version():
        return {"version": API_VERSION}

    @app.get("/controlnet/model_list")
    def model_list(update: bool = Query(True)):
        return {"model_list": service.model_titles(refresh=update)}

    @app.get("/controlnet/module_list")
    def module_list(alias_names: bool = Query(False)):
        return preprocessors.module_list(alias_names)

    @app.get("/controlnet/control_types")
    def control_types():
        return ct.control_types(service.model_titles())

    @app.get("/controlnet/settings")
    def settings():
        return {"control_net_unit_count": unit_count()}

    @app.post("/controlnet/detect")
    def detect(req: DetectRequest):
        try:
            return _detect(req, service)
        except ParamError as exc:
            return _reject(exc)

    @app.post("/controlnet/render_openpose_json")
    def render_openpose_json(docs: list[dict[str, Any]]):
        from modules.controlnet.openpose import draw, pose_json
        if not docs:
            return {"info": "No pose data detected."}
        try:
            parsed = [pose_json.parse_documents(doc)[0] for doc in docs]
        except ValueError as exc:
            return error_response(422, "ValueError", str(exc))
        return {"images": [_png_b64(draw.draw(doc)) for doc in parsed], "info": "Success"}


def _detect(req: DetectRequest, service) -> dict:
    from modules.controlnet import preprocessors
    from modules.controlnet.units import parse_image
    pre = preprocessors.get(req.controlnet_module)
    if pre is None:
        raise ParamError("controlnet_module", f"Module not available: {req.controlnet_module!r} (GET "
                                              "/controlnet/module_list lists them)")
    if pre.name in UNSUPPORTED_DETECT or pre.label in UNSUPPORTED_DETECT:
        raise ParamError("controlnet_module", f"Module not supported: {pre.label}")
    if not req.controlnet_input_images:
        raise ParamError("controlnet_input_images", "No image selected")
    if pre.requires_mask and len(req.controlnet_masks) != len(req.controlnet_input_images):
        raise ParamError("controlnet_masks", f"Preprocessor {pre.label} requires controlnet_masks param "
                                             "(one mask per input image).")
    res, a, b = pre.clamp(req.controlnet_processor_res, req.controlnet_threshold_a, req.controlnet_threshold_b)
    images, poses = [], []
    store = service.store()
    for i, data in enumerate(req.controlnet_input_images):
        mask = req.controlnet_masks[i] if pre.accepts_mask and i < len(req.controlnet_masks) else None
        given = parse_image(data, mask, f"controlnet_input_images[{i}]")
        array = np.dstack([given.image, given.mask]) if pre.accepts_mask else given.image
        try:
            detected = pre.run(array, int(res), a, b, seed=0, store=store)
        except ParamError:
            raise
        except Exception as exc:   # missing weights (the message names file and folder), unbuilt networks
            raise ParamError("controlnet_module", f"{pre.label}: {exc}") from None
        if detected.shown is not None:
            images.append(_png_b64(np.ascontiguousarray(detected.shown)))
        if "openpose" in pre.name:
            poses.append(detected.pose)
    out = {"images": images, "info": "Success"}
    if "openpose" in pre.name:
        out["poses"] = poses
    return out
