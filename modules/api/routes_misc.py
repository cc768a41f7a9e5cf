"""The rest of A1111's /sdapi/v1 routes: extras, PNG info, model and list endpoints (embeddings, hypernetworks),
memory, server control, and the A1111-shaped answers for features we do not have yet (empty lists, or 501 for
actions). /loras and /refresh-loras belong to the built-in Lora extension."""
from __future__ import annotations

import os
import threading
from typing import Any

import psutil
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modules import images
from modules.api.common import decode_image, encode_png, error_response
from modules.engine import infotext
from modules.engine import payload as payload_codec
from modules.interrogate import service as interrogate_service
from modules.interrogate.weights import WeightsMissing


class ExtrasSingleRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str = ""
    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchRequest(ExtrasSingleRequest):
    image: str = ""
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 (A1111's field name)


class InterrogateRequest(BaseModel):
    image: str = ""
    model: str = "clip"


class PngInfoRequest(BaseModel):
    image: str


def not_implemented(what: str) -> JSONResponse:
    return error_response(501, "NotImplementedError", f"{what} is not available in this web UI yet")


def _extras(rt, req: ExtrasSingleRequest, images: list) -> list:
    # upscale_first is accepted and, as in A1111 1.10, unused: the upscale runs first, then GFPGAN, then CodeFormer
    return rt.extras(images, upscaler_1=req.upscaler_1, upscaler_2=req.upscaler_2,
                     visibility_2=req.extras_upscaler_2_visibility, resize_mode=req.resize_mode,
                     scale=req.upscaling_resize, width=req.upscaling_resize_w, height=req.upscaling_resize_h,
                     crop=req.upscaling_crop, gfpgan_visibility=req.gfpgan_visibility,
                     codeformer_visibility=req.codeformer_visibility, codeformer_weight=req.codeformer_weight)


def create_router(rt, deps) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", dependencies=deps)

    @r.post("/extra-single-image")
    def extra_single_image(req: ExtrasSingleRequest):
        image = decode_image(req.image, "image")
        out = _extras(rt, req, [image])[0]
        return {"image": encode_png(out, None), "html_info": f"<p>{out.width}x{out.height}</p>"}

    @r.post("/extra-batch-images")
    def extra_batch_images(req: ExtrasBatchRequest):
        images = [decode_image(f.data, f"imageList[{i}].data") for i, f in enumerate(req.imageList)]
        outs = _extras(rt, req, images)
        return {"images": [encode_png(o, None) for o in outs], "html_info": f"<p>{len(outs)} images</p>"}

    @r.post("/png-info")
    def png_info(req: PngInfoRequest):
        text, items = images.read_info(decode_image(req.image, "image"))
        if text is None:
            return {"info": "", "items": items, "parameters": {}}
        return {"info": text, "items": items, "parameters": infotext.parse(text)}

    @r.post("/interrogate")
    def interrogate(req: InterrogateRequest):
        # A1111 answers 404 for an unknown model; the allowed names are in the message
        if req.model not in interrogate_service.MODELS:
            return error_response(404, "HTTPException", f"Model not found: {req.model!r}; model must be one of "
                                  f"{', '.join(interrogate_service.MODELS)}")
        image = decode_image(req.image, "image").convert("RGB")
        try:
            caption = rt.queue.run("interrogate", {"image": payload_codec.image_to_png(image), "model": req.model})
        except WeightsMissing as exc:   # offline, or the download failed: which file, from where, into which folder
            return error_response(404, "WeightsMissing", str(exc))
        return {"caption": caption}

    def action_501(path: str):
        def handler(body: dict[str, Any] | None = None):
            return not_implemented(f"POST /sdapi/v1/{path}")
        return handler

    for path in ("create/embedding", "create/hypernetwork", "train/embedding", "train/hypernetwork",
                 "preprocess"):
        r.add_api_route(f"/{path}", action_501(path), methods=["POST"])

    @r.post("/refresh-embeddings")
    def refresh_embeddings():
        rt.embeddings.load_textual_inversion_embeddings(force_reload=True)

    @r.post("/unload-checkpoint")
    def unload_checkpoint():
        rt.queue.run("unload_model")

    @r.post("/reload-checkpoint")
    def reload_checkpoint():
        rt.queue.run("require_model")

    @r.get("/memory")
    def memory():
        vm = psutil.virtual_memory()
        ram = {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
        import torch
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            cuda = {"system": {"free": free, "used": total - free, "total": total},
                    "active": {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()},
                    "allocated": {"current": torch.cuda.memory_allocated(),
                                  "peak": torch.cuda.max_memory_allocated()},
                    "reserved": {"current": torch.cuda.memory_reserved(), "peak": torch.cuda.max_memory_reserved()},
                    "inactive": {"current": 0, "peak": 0}, "events": {"retries": 0, "oom": 0}}
        else:
            cuda = {"error": "unavailable: no CUDA device"}
        return {"ram": ram, "cuda": cuda}

    @r.get("/face-restorers")
    def face_restorers():
        # A1111: [{name, cmd_dir}] for shared.face_restorers (an extension's own restorers included)
        from modules import face_restoration
        return face_restoration.for_runtime(rt).describe()

    @r.get("/hypernetworks")
    def hypernetworks():
        rt.hypernetworks.refresh()
        return [{"name": name, "path": entry.filename} for name, entry in
                sorted(rt.hypernetworks.available.items(), key=lambda item: item[0].lower())]

    @r.get("/embeddings")
    def embeddings():
        # the embeddings that fit the loaded model, and the ones that do not ("skipped"), as A1111 lists them
        return rt.embeddings.describe()

    if rt.args.api_server_stop:
        def stop(code: int):
            threading.Timer(0.5, lambda: os._exit(code)).start()
            return {"stopping": True}
        r.add_api_route("/server-kill", lambda: stop(0), methods=["POST"])
        r.add_api_route("/server-stop", lambda: stop(0), methods=["POST"])
        r.add_api_route("/server-restart", lambda: stop(1), methods=["POST"])  # a supervisor restarts on 1
    return r
