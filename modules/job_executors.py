"""What each kind of queued job does: a function of (runtime, payload, state) per kind.

A payload is plain data (modules/engine/payload.py for generation parameters), so the same function could run in
another process on a copy of the runtime. Generation executors run the engine only; saving images, params.txt and
persisting overrides happen afterwards, in the runtime (Runtime.finish_generation), on the machine that keeps the
files.
"""
from __future__ import annotations

from typing import Any, Callable

from modules import processing
from modules.engine import payload as payload_codec
from modules.engine.params import GenerationParams


def generate(rt, payload: dict, state) -> processing.Processed:
    params: GenerationParams = payload_codec.from_payload(payload["params"])
    overrides = dict(params.override_settings)
    checkpoint = overrides.pop("sd_model_checkpoint", None)
    if checkpoint is not None:
        rt.models.load(rt.models.select(str(checkpoint)))
    model = rt.models.require()
    view = rt.options_view(overrides)
    embeddings = rt.embeddings.for_job(model, bool(view.get("textual_inversion_add_hashes_to_infotext", True)))
    ctx = processing.RunContext(model, state, rt.run_options(params, view), rt.hooks, rt.extra_networks, rt.styles,
                                embeddings=embeddings, options=view, face_restorer=face_restorer(rt, view))
    with processing.current_run(ctx):
        p = processing.from_params(params)
        p.is_api = bool(payload.get("is_api"))
        if p.is_api and not payload.get("save"):
            p.do_not_save_grid = True   # A1111's API: no batch grid (returned or saved) unless it saves images
        # A1111 sets where a run's images and grids go (scripts save there themselves: Ultimate SD upscale)
        p.outpath_samples = str(rt.output_folder(view, params.mode))
        p.outpath_grids = str(rt.output_folder(view, params.mode, "grids"))
        script_args = payload.get("script_args")
        if script_args is None:
            return processing.process_images(p)
        from modules import scripts
        runner = scripts.runner_for(params.mode == "img2img")
        p.scripts = runner
        p.script_args = list(script_args)
        if script_args and script_args[0]:
            saved: list[str] = []
            ctx.save_processed = lambda p_, processed: saved.extend(rt.save_images(processed, payload))
            payload["saved_during_job"] = saved
            # a selectable script (the Script dropdown, or the API's script_name) drives the job; A1111's UI falls
            # back to a plain run when run() returns None, its API has no such fallback
            processed = runner.run(p, *p.script_args)
            if processed is not None:
                return processed
            if p.is_api:
                raise RuntimeError(f"script {runner.selectable_scripts[script_args[0] - 1].title()!r} returned "
                                   "nothing")
        return processing.process_images(p)


def load_model(rt, payload: dict, state) -> None:
    rt.models.load(rt.models.select(payload["checkpoint"]) if payload.get("checkpoint") else rt.models.require())


def require_model(rt, payload: dict, state) -> None:
    rt.models.require()


def unload_model(rt, payload: dict, state) -> None:
    rt.models.unload()


def reload_vae(rt, payload: dict, state) -> None:
    rt.models.reload_vae()


def merge(rt, payload: dict, state):
    from modules import merging
    return merging.merge_job(rt, merging.from_payload(payload["request"]), state)


def face_restorer(rt, view):
    """txt2img/img2img's "Restore faces": fn(image, model) with the job's settings (CodeFormer's weight, unloading);
    the restorers (and their weights) are made on first use."""
    def restore(image, name):
        from modules import face_restoration
        return face_restoration.apply(image, face_restoration.for_runtime(rt),
                                      name or view.get("face_restoration_model", "CodeFormer"),
                                      float(view.get("code_former_weight", 0.5)),
                                      bool(view.get("face_restoration_unload", False)))
    return restore


FACE_ARGS = ("gfpgan_visibility", "codeformer_visibility", "codeformer_weight")


def extras(rt, payload: dict, state) -> list:
    """Extras: the upscale, then face restoration (GFPGAN, then CodeFormer) when a visibility is above 0 — A1111's
    postprocessing order (upscale 1000, GFPGAN 2000, CodeFormer 3000)."""
    from modules.engine import extras as engine_extras
    from modules.models import upscaler_models
    images = [payload_codec.png_to_image(b) for b in payload["images"]]
    args = dict(payload["args"])
    faces = {k: float(args.pop(k)) for k in FACE_ARGS if k in args}
    view = rt.options_view({})
    models = upscaler_models.JobUpscalers(rt.upscaler_models, view.get)
    out = [engine_extras.upscale(im, models=models, state=state, **args) for im in images]
    if faces.get("gfpgan_visibility", 0) or faces.get("codeformer_visibility", 0):
        from modules import face_restoration
        restorers = face_restoration.for_runtime(rt)
        unload = bool(view.get("face_restoration_unload", False))
        out = [face_restoration.postprocess(im, restorers, unload=unload, **faces)[0] for im in out]
    return out


def interrogate(rt, payload: dict, state) -> str:
    """img2img's Interrogate CLIP / DeepBooru and POST /sdapi/v1/interrogate: {"image": PNG bytes, "model"}."""
    from modules.interrogate import service
    interrogator = getattr(rt, "interrogator", None)
    if interrogator is None:   # made on first use: most sessions never interrogate
        interrogator = rt.interrogator = service.for_runtime(rt.paths, rt.device.device,
                                                             getattr(rt.args, "clip_models_path", None))
    image = payload_codec.png_to_image(payload["image"])
    return interrogator.interrogate(image, payload.get("model", "clip"), rt.options_view({}).get, state)


# The built-in kinds; the runtime owns a copy (Runtime.executors) that extensions may add kinds to.
EXECUTORS: dict[str, Callable[[Any, dict, Any], Any]] = {
    "txt2img": generate, "img2img": generate, "load_model": load_model, "require_model": require_model,
    "unload_model": unload_model, "reload_vae": reload_vae, "extras": extras, "merge": merge,
    "interrogate": interrogate,
}

