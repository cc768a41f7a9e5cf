"""/sdapi/v1/loras and /sdapi/v1/refresh-loras, added by the built-in Lora extension (as A1111's Lora extension adds
them, on app start), behind --api-auth like the other /sdapi/v1 routes."""
from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from modules import shared
from modules.api.routes import _auth_dependency


def item(entry) -> dict:
    """A1111's shape: {name, alias, path, metadata}."""
    return {"name": entry.name, "alias": entry.alias, "path": entry.filename, "metadata": entry.metadata}


def mount(app: FastAPI, catalog) -> None:
    auth = _auth_dependency(getattr(shared.cmd_opts, "api_auth", None)) if shared.bound() else None
    r = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(auth)] if auth else [])

    @r.get("/loras")
    def loras():
        catalog.ensure()
        return [item(e) for e in catalog.available.values()]

    @r.post("/refresh-loras")
    def refresh_loras():
        catalog.refresh()

    app.include_router(r)
