"""The A1111-compatible /sdapi/v1 routes: a thin face over the runtime (same params object, same job queue)."""
from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBasic, HTTPBasicCredentials

import logging

from pydantic import BaseModel

from modules import scripts
from modules.api import models as m, routes_misc, routes_scripts
from modules.api.common import decode_image, encode_png, error_response as _error
from modules.engine import run as engine_run, samplers
from modules.engine.params import FIELDS, IMAGE_FIELDS, GenerationParams, ParamError, from_values
from modules.interrogate.weights import WeightsMissing
from modules.jobs import JobState
from modules.models.manager import NoModelError
from modules.models.safe_load import ModelFileError
from modules.models.upscaler_models import UpscalerModelMissing
from modules.options import OptionError


log = logging.getLogger("sd.api")


def install_error_handlers(app: FastAPI) -> None:
    """A1111's error shape {error, detail, body, errors}; validation problems are 422 and name the field."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                           for e in errs)
        return _error(422, "RequestValidationError", detail, None, str(errs)[:2000])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # a failed job answers in A1111's error shape; the server keeps serving
        log.error("API %s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _error(500, type(exc).__name__, str(exc) or type(exc).__name__)

    for cls, status in ((ParamError, 422), (OptionError, 422), (samplers.SamplerError, 422), (KeyError, 422),
                        (ModelFileError, 500), (NoModelError, 503), (UpscalerModelMissing, 404),
                        (WeightsMissing, 404)):   # a face restorer's or interrogator's file, offline
        def handler(request: Request, exc: Exception, _status=status):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return _error(_status, type(exc).__name__, str(message))
        app.add_exception_handler(cls, handler)


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


def request_params(req, img2img: bool = False) -> GenerationParams:
    """A txt2img or img2img request → GenerationParams, field by field from the schema: a field the request leaves
    None gets its UI default (A1111's API does the same through its processing defaults), except the legacy and
    API-only spellings handled below."""
    values = {}
    for f in FIELDS:
        if f.img2img_only and not img2img or f.name in IMAGE_FIELDS:
            continue
        value = getattr(req, f.name)
        values[f.name] = f.ui_default() if value is None and f.default is not None else value
    values["sampler_name"] = req.sampler_name or req.sampler_index
    values["hr_sampler_name"] = req.hr_sampler_name or None
    values["hr_scheduler"] = req.hr_scheduler or None
    if not img2img and req.enable_hr and req.firstphase_width and req.firstphase_height:  # legacy hires fields
        values["width"], values["height"] = req.firstphase_width, req.firstphase_height
    if img2img:
        if not req.init_images:
            raise ParamError("init_images", "img2img needs at least one init image (base64 or data: URI)")
        values["init_images"] = [decode_image(data, "init_images") for data in req.init_images]
        values["mask"] = decode_image(req.mask, "mask") if req.mask else None
        values["mask_blur"] = req.mask_blur if req.mask_blur is not None else max(req.mask_blur_x, req.mask_blur_y)
        values["enable_hr"] = False
    return from_values(values, "img2img" if img2img else "txt2img")


def _images_response(rt, req, p: GenerationParams, include: list | None = None):
    runner = scripts.runner_for(bool(p.init_images))
    script_args = scripts.api_script_args(runner, req.script_name, req.script_args, req.alwayson_scripts)
    # the runtime checks the sampler and the overrides before queueing (a 422), and keeps the overrides afterwards
    # when the request asks for it
    result = rt.generate(p, save=req.save_images and not req.do_not_save_samples, job_id=req.force_task_id,
                         restore_overrides=req.override_settings_restore_afterwards, script_args=script_args,
                         is_api=True)
    # images after the last infotext are extras scripts appended (ControlNet's detected maps): no infotext
    texts = list(result.infotexts) + [None] * (len(result.images) - len(result.infotexts))
    images = [encode_png(img, text) for img, text in zip(result.images, texts)] if req.send_images else []
    if include:
        images += [encode_png(img, None) for img in include]
    params = req.model_dump()
    for key in ("init_images", "mask"):
        if params.get(key) is not None:
            params[key] = None  # A1111 does not echo the (large) input images back
    return {"images": images, "parameters": params, "info": result.js()}


def create_router(rt, deps: list) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", dependencies=deps)

    @r.post("/txt2img", response_model=m.ImagesResponse)
    def txt2img(req: m.Txt2ImgRequest):
        return _images_response(rt, req, request_params(req))

    @r.post("/img2img", response_model=m.ImagesResponse)
    def img2img(req: m.Img2ImgRequest):
        p = request_params(req, img2img=True)
        return _images_response(rt, req, p, p.init_images if req.include_init_images else None)

    @r.get("/prompt-styles")
    def prompt_styles():
        rt.styles.reload()
        return [s.to_api() for s in rt.styles.styles.values()]

    @r.get("/latent-upscale-modes")
    def latent_upscale_modes():
        return [{"name": name} for name in engine_run.LATENT_UPSCALE_MODES]

    @r.get("/upscalers")
    def upscalers():
        # A1111's shape; the model upscalers after the Pillow ones, their folders read again (a new file shows)
        pillow = [{"name": name, "model_name": None, "model_path": None, "model_url": None,
                   "scale": 4 if name != "None" else 1} for name in engine_run.IMAGE_UPSCALERS]
        models = [{"name": m.name, "model_name": m.family.model_name, "model_path": m.data_path,
                   "model_url": m.download.url if m.download is not None else None, "scale": m.scale}
                  for m in rt.upscaler_models.list()]
        return pillow + models

    @r.get("/realesrgan-models")
    def realesrgan_models():
        # A1111: the Real-ESRGAN upscaler's models (its offered download list and the files in its folder)
        return [{"name": m.name, "path": m.data_path, "scale": m.scale} for m in rt.upscaler_models.list()
                if m.family.name == "RealESRGAN"]

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
        # A1111's SamplerItem types the options as strings: its flags (True) go over the wire as "True"
        return [{**item, "options": {k: str(v) for k, v in item["options"].items()}}
                for item in (s.to_api() for s in samplers.SAMPLERS)]

    @r.get("/schedulers", response_model=list[m.SchedulerItem])
    def list_schedulers():
        names = {v: k for k, v in samplers.SCHEDULE_ALIASES.items()}
        return [{"name": names[s], "label": s, "aliases": None, "default_rho": samplers.SCHEDULE_RHO.get(s, -1),
                 "need_inner_model": False} for s in samplers.SCHEDULES]

    @r.get("/options")
    def get_options():
        return rt.options.as_dict()

    @r.post("/options")
    def set_options(body: dict[str, Any]):
        for key, value in body.items():  # validate everything before changing anything
            rt.options.validate(key, value)
        for key, value in body.items():
            rt.options.set(key, value, is_api=True)
        return None

    @r.get("/cmd-flags")
    def cmd_flags():
        return vars(rt.args)

    @r.get("/progress", response_model=m.ProgressResponse)
    def progress(skip_current_image: bool = False):
        job = rt.queue.current
        if job is None:
            idle = JobState(id="")
            return {"progress": 0, "eta_relative": 0, "state": idle.to_api(), "current_image": None,
                    "textinfo": None}
        st = job.state
        image = None
        if not skip_current_image and st.current_image is not None:
            image = encode_png(st.current_image, None)
        return {"progress": st.progress(), "eta_relative": st.eta() or 0, "state": st.to_api(),
                "current_image": image, "textinfo": st.textinfo}

    @r.post("/interrupt")
    def interrupt():
        rt.queue.interrupt_current()

    @r.post("/skip")
    def skip():
        rt.queue.skip_current()

    return r


def mount(app: FastAPI, rt) -> None:
    install_error_handlers(app)
    deps = [Depends(dep)] if (dep := _auth_dependency(rt.args.api_auth)) else []
    app.include_router(create_router(rt, deps))
    app.include_router(routes_misc.create_router(rt, deps))
    app.include_router(routes_scripts.create_router(rt, deps))
    app.include_router(create_internal_router(rt))
    if rt.args.api_log:
        @app.middleware("http")
        async def log_requests(request: Request, call_next):
            response = await call_next(request)
            log.info("API %s %s %s", request.method, request.url.path, response.status_code)
            return response



class InternalProgressRequest(BaseModel):
    id_task: str | None = None
    id_live_preview: int = -1
    live_preview: bool = True


def create_internal_router(rt) -> APIRouter:
    """The UI's own progress endpoint (A1111's /internal/progress), also used by some clients with force_task_id."""
    r = APIRouter(prefix="/internal")

    @r.post("/progress")
    def internal_progress(req: InternalProgressRequest):
        job = rt.queue.find(req.id_task) if req.id_task else None
        if job is None:
            return {"active": False, "queued": False, "completed": False, "progress": None, "eta": None,
                    "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting..."}
        st = job.state
        active = rt.queue.current is job
        completed = job.done.is_set()
        preview, preview_id = None, req.id_live_preview
        if active and req.live_preview and st.current_image is not None and st.current_image_step != preview_id:
            preview = "data:image/png;base64," + encode_png(st.current_image, None)
            preview_id = st.current_image_step
        queued = not active and not completed
        return {"active": active, "queued": queued, "completed": completed,
                "progress": 1.0 if completed else st.progress(), "eta": st.eta() if active else None,
                "live_preview": preview, "id_live_preview": preview_id,
                "textinfo": "Waiting..." if queued else st.textinfo}

    return r
