"""Request/response shapes of A1111's /sdapi/v1 API. The generation fields of the txt2img and img2img requests are
derived from the parameter schema (modules/engine/params.FIELDS: names, types, A1111's API defaults); the fields
below are the API's own (how to answer, scripts, legacy names)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from modules.engine.params import FIELDS

_API_TYPES = {int: int, float: float, str: str, bool: bool, list: list[str], dict: dict[str, Any]}


def _schema_fields(img2img: bool) -> dict:
    out = {}
    for f in FIELDS:
        if f.img2img_only and not img2img:
            continue
        if f.name == "init_images":
            kind = list[str]
        elif f.name == "mask":
            kind = str
        else:
            kind = _API_TYPES[f.kind]
        default = f.api(img2img)
        if f.nullable or default is None:
            kind = kind | None
        if isinstance(default, (list, dict)):
            out[f.name] = (kind, Field(default_factory=lambda d=default: type(d)(d), description=f.help or None))
        else:
            out[f.name] = (kind, Field(default=default, description=f.help or None))
    return out


class _Txt2ImgApiFields(BaseModel):
    """The API's own txt2img fields (not generation parameters)."""
    model_config = ConfigDict(extra="allow")

    sampler_index: str = "Euler"            # A1111: used when sampler_name is empty
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_checkpoint_name: str | None = None
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class _Img2ImgApiFields(_Txt2ImgApiFields):
    image_cfg_scale: float | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_round: bool = True
    latent_mask: str | None = None
    include_init_images: bool = False


Txt2ImgRequest = create_model("Txt2ImgRequest", __base__=_Txt2ImgApiFields, **_schema_fields(img2img=False))
Img2ImgRequest = create_model("Img2ImgRequest", __base__=_Img2ImgApiFields, **_schema_fields(img2img=True))


class ImagesResponse(BaseModel):
    images: list[str] | None = Field(default=None, description="base64 PNG images")
    parameters: dict[str, Any]
    info: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None
    textinfo: str | None
