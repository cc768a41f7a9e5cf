"""The A1111-compatible /sdapi/v1 routes: a thin face over the runtime (same params object, same job queue)."""
from __future__ import annotations

import base64
import json
import io
import secrets
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules import images
from modules.api import models as m
from modules.engine import samplers
from modules.engine.params import GenerationParams, ParamError
from modules.models.manager import NoModelError
from modules.models.safe_load import ModelFileError
from modules.options import OptionError


def _error(status: int, error: str, detail: str, body: Any = None, errors: Any = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=jsonable_encoder(
        {"error": error, "detail": detail, "body": body, "errors": errors}))


def install_error_handlers(app: FastAPI) -> None:
    """A1111's error shape {error, detail, body, errors}; validation problems are 422 and name the field."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                           for e in errs)
        return _error(422, "RequestValidationError", detail, None, str(errs)[:2000])

    for cls, status in ((ParamError, 422), (OptionError, 422), (samplers.SamplerError, 422), (KeyError, 422),
                        (ModelFileError, 500), (NoModelError, 503)):
        def handler(request: Request, exc: Exception, _status=status):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return _error(_status, type(exc).__name__, str(message))
        app.add_exception_handler(cls, handler)


def encode_png(image, infotext: str | None) -> str:
    return base64.b64encode(images.png_bytes(image, infotext)).decode("ascii")


def _auth_dependency(credentials_text: str | None):
    if not credentials_text:
        return None
    allowed = dict(pair.split(":", 1) for pair in credentials_text.split(",") if ":" in pair)
    security = HTTPBasic()

    def check(credentials: HTTPBasicCredentials = Depends(security)):
        expected = allowed.get(credentials.username)
        if expected is None or not secrets.compare_digest(credentials.password, expected):
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})
    return check


def txt2img_params(req: m.Txt2ImgRequest) -> GenerationParams:
    sampler = req.sampler_name or req.sampler_index
    return GenerationParams(
        prompt=req.prompt, negative_prompt=req.negative_prompt, styles=list(req.styles), seed=req.seed,
        subseed=req.subseed, subseed_strength=req.subseed_strength, seed_resize_from_w=req.seed_resize_from_w,
        seed_resize_from_h=req.seed_resize_from_h, sampler_name=sampler, scheduler=req.scheduler or "Automatic",
        steps=req.steps, cfg_scale=req.cfg_scale, width=req.width, height=req.height, batch_size=req.batch_size,
        n_iter=req.n_iter, tiling=bool(req.tiling), restore_faces=bool(req.restore_faces), eta=req.eta,
        do_not_save_samples=req.do_not_save_samples, do_not_save_grid=req.do_not_save_grid,
        override_settings=dict(req.override_settings or {}))


def create_router(rt) -> APIRouter:
    deps = [Depends(dep)] if (dep := _auth_dependency(rt.args.api_auth)) else []
    r = APIRouter(prefix="/sdapi/v1", dependencies=deps)

    @r.post("/txt2img", response_model=m.ImagesResponse)
    def txt2img(req: m.Txt2ImgRequest):
        p = txt2img_params(req)
        samplers.resolve(p.sampler_name, p.scheduler)  # unknown names are a 422 before queueing
        result = rt.generate(p, save=req.save_images and not req.do_not_save_samples,
                                     job_id=req.force_task_id)
        imgs = [encode_png(img, text) for img, text in zip(result.images, result.infotexts)] if req.send_images else []
        return {"images": imgs, "parameters": req.model_dump(), "info": json.dumps(result.info)}

    @r.get("/sd-models", response_model=list[m.SDModelItem])
    def sd_models():
        return [c.to_api() for c in rt.registry.checkpoints]

    @r.post("/refresh-checkpoints")
    def refresh_checkpoints():
        rt.registry.refresh_checkpoints()

    @r.get("/sd-vae")
    def sd_vae():
        return [v.to_api() for v in rt.registry.vaes]

    @r.post("/refresh-vae")
    def refresh_vae():
        rt.registry.refresh_vaes()

    @r.get("/samplers", response_model=list[m.SamplerItem])
    def list_samplers():
        return [s.to_api() for s in samplers.SAMPLERS]

    @r.get("/schedulers", response_model=list[m.SchedulerItem])
    def list_schedulers():
        return [{"name": s.lower(), "label": s, "aliases": None, "default_rho": -1, "need_inner_model": False}
                for s in samplers.SCHEDULES]

    @r.get("/options")
    def get_options():
        return rt.options.as_dict()

    @r.post("/options")
    def set_options(body: dict[str, Any]):
        for key, value in body.items():  # validate everything before changing anything
            rt.options.validate(key, value)
        for key, value in body.items():
            rt.options.set(key, value)
        return None

    @r.get("/cmd-flags")
    def cmd_flags():
        return vars(rt.args)

    @r.get("/progress", response_model=m.ProgressResponse)
    def progress(skip_current_image: bool = False):
        job = rt.queue.current
        if job is None:
            return {"progress": 0, "eta_relative": 0, "state": {}, "current_image": None, "textinfo": None}
        st = job.state
        return {"progress": st.progress(), "eta_relative": st.eta() or 0, "state": st.to_api(),
                "current_image": None, "textinfo": st.textinfo}

    @r.post("/interrupt")
    def interrupt():
        rt.queue.interrupt_current()

    @r.post("/skip")
    def skip():
        rt.queue.skip_current()

    return r


def mount(app: FastAPI, rt) -> None:
    install_error_handlers(app)
    app.include_router(create_router(rt))


def decode_image(data: str):
    """base64 or data: URI → PIL image; a clear error otherwise."""
    from PIL import Image
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
    except Exception:
        raise ParamError("image", "is not a valid base64-encoded image") from None
