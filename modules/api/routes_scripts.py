"""The API's script and extension endpoints (A1111's /sdapi/v1/scripts, /script-info, /extensions)."""
from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from modules import extensions, scripts


def extension_info(ext) -> dict:
    """A1111's fields, plus ours: whether it is built in, why it is off, and the last error per phase."""
    ext.read_info_from_repo()
    return {"name": ext.name, "remote": ext.remote, "branch": ext.branch, "commit_hash": ext.commit_hash,
            "version": ext.version, "commit_date": ext.commit_date, "enabled": ext.enabled,
            "is_builtin": ext.is_builtin, "disabled_reason": ext.disabled_reason, "errors": dict(ext.errors)}


def create_router(rt, deps: list) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", dependencies=deps)

    @r.get("/scripts")
    def list_scripts():
        def names(runner):
            return [s.name for s in runner.scripts if s.name is not None]
        return {"txt2img": names(scripts.scripts_txt2img), "img2img": names(scripts.scripts_img2img)}

    @r.get("/script-info")
    def script_info():
        out = []
        for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
            for s in runner.scripts:
                if s.api_info is not None:
                    out.append(dataclasses.asdict(s.api_info))
        return out

    @r.get("/extensions")
    def list_extensions():
        """Every extension found (A1111 lists only those with a git remote; ours also shows local and failed ones,
        so that a user can see why one does not work)."""
        return [extension_info(ext) for ext in getattr(rt, "extensions", extensions.extensions)]

    return r
