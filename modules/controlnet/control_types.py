"""Control types (§1.1): the UI's "Control Type" filter and GET /controlnet/control_types. A type is a preprocessor
tag; it narrows the preprocessors to those with the tag and the models to those whose title names the type (or an
alias of it), and picks a default of each. Also the §3.4 pairing the other way round: a model title → a fitting
preprocessor.
"""
from __future__ import annotations

from modules.controlnet import preprocessors

# Other spellings a model title may use for a type (the extension's filter aliases).
TAG_ALIASES = {
    "instructp2p": ("ip2p",),
    "segmentation": ("seg",),
    "normalmap": ("normal",),
    "t2i-adapter": ("t2i_adapter", "t2iadapter", "t2ia"),
    "ip-adapter": ("ip_adapter", "ipadapter"),
    "openpose": ("openpose", "densepose"),
    "instant-id": ("instant_id", "instantid"),
    "scribble": ("sketch",),
    "tile": ("blur",),
}
# Types a ControlNet-Union model serves, so "union" models are listed under them.
UNION_TAGS = ("openpose", "depth", "softedge", "scribble", "canny", "lineart", "mlsd", "normalmap", "segmentation",
              "inpaint", "tile")
SD_VERSIONS = ("sd1", "sd2", "sdxl")


def tag_filters(tag: str) -> set[str]:
    """The lowercase words a model title is searched for under `tag`."""
    low = tag.lower()
    return {low, *TAG_ALIASES.get(low, ()), *(("union",) if low in UNION_TAGS else ())}


def _model_version(title: str) -> str | None:
    """The extension's guess from a title: sd14/15/16 → sd1, sd21 or 2.1 → sd2, xl → sdxl, else unknown."""
    low = title.lower()
    if any(f"sd{v}" in low for v in ("14", "15", "16")):
        return "sd1"
    if "sd21" in title or "2.1" in title:
        return "sd2"
    if "xl" in low:
        return "sdxl"
    return None


def _compatible(sd_version: str | None, title: str) -> bool:
    """Only SDXL against non-SDXL is incompatible; an unknown version on either side matches."""
    other = _model_version(title)
    if sd_version is None or other is None:
        return True
    return (sd_version == "sdxl") == (other == "sdxl")


def _check_version(sd_version: str | None) -> None:
    if sd_version is not None and sd_version not in SD_VERSIONS:
        raise ValueError(f"sd_version must be one of {', '.join(SD_VERSIONS)} or None (got {sd_version!r})")


def models_for_tag(tag: str, model_titles: list[str], sd_version: str | None = None) -> list[str]:
    """"None" and the titles matching the type ("All": every title), optionally only those a checkpoint of
    `sd_version` can use."""
    _check_version(sd_version)
    titles = [t for t in model_titles if t != "None"]
    if tag.lower() == "all":
        return ["None", *titles]
    words = tag_filters(tag)
    return ["None", *(t for t in titles
                      if any(w in t.lower() for w in words) and _compatible(sd_version, t))]


def _default_model(models: list[str]) -> str:
    """The first title whose name part contains "11" (a ControlNet 1.1 model), else the first real one."""
    if len(models) == 1:
        return "None"
    for title in models:
        if "11" in title.split("[")[0]:
            return title
    return models[1]


def control_type(tag: str, model_titles: list[str], sd_version: str | None = None) -> dict:
    """One control type's entry: module_list (labels, "none" first), model_list ("None" first), default_option,
    default_model."""
    models = models_for_tag(tag, model_titles, sd_version)
    ordered = preprocessors.all_preprocessors()
    if tag.lower() == "all":
        return {"module_list": [p.label for p in ordered], "model_list": models, "default_option": "none",
                "default_model": "None"}
    modules = [p.label for p in ordered if tag in p.tags or p.label == "none"]
    return {"module_list": modules, "model_list": models, "default_option": modules[1] if len(modules) > 1 else
            modules[0], "default_model": _default_model(models)}


def control_types(model_titles: list[str], sd_version: str | None = None) -> dict:
    """The GET /controlnet/control_types body: "All", then every tag in sorted order."""
    return {"control_types": {tag: control_type(tag, model_titles, sd_version) for tag in preprocessors.all_tags()}}


# §3.4, model title → preprocessor label. First match wins, so specific words come before general ones.
_PAIRING: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ip-adapter", "ip_adapter", "ipadapter"), "ip-adapter-auto"),
    (("instant_id", "instantid", "instant-id"), "instant_id_face_keypoints"),
    (("revision",), "revision_clipvision"),
    (("inpaint",), "inpaint_only"),
    (("t2iadapter_color", "t2i-adapter_color", "t2ia_color", "coadapter-color"), "t2ia_color_grid"),
    (("t2iadapter_style", "t2i-adapter_style", "t2ia_style", "coadapter-style"), "t2ia_style_clipvision"),
    (("t2iadapter_sketch", "t2i-adapter_sketch", "t2ia_sketch", "coadapter-sketch"), "t2ia_sketch_pidi"),
    (("ip2p",), "none"),
    (("shuffle",), "shuffle"),
    (("recolor",), "recolor_luminance"),
    (("tile", "blur"), "tile_resample"),
    (("lineart_anime",), "lineart_anime"),
    (("lineart",), "lineart_standard (from white bg & black line)"),
    (("normalbae",), "normal_bae"),
    (("control_sd15_normal",), "normal_midas"),
    (("normal",), "normal_bae"),
    (("densepose",), "densepose (pruple bg & purple torso)"),
    (("control_sd15_openpose",), "openpose"),   # 1.0 was trained on body-only maps
    (("t2iadapter_openpose", "t2iadapter_keypose"), "openpose"),
    (("openpose", "pose"), "openpose_full"),
    (("control_sd15_hed",), "softedge_hed"),
    (("softedge", "hed", "pidi", "teed", "anyline", "mistoline"), "softedge_pidinet"),
    (("control_sd15_scribble", "fake_scribble"), "scribble_hed"),
    (("scribble", "sketch"), "scribble_pidinet"),
    (("control_sd15_seg", "t2iadapter_seg"), "seg_ufade20k"),
    (("seg",), "seg_ofade20k"),
    (("mlsd",), "mlsd"),
    (("depth",), "depth_midas"),
    (("canny", "edge"), "canny"),
)


def suggest_preprocessor(model_title: str) -> str | None:
    """A preprocessor label that makes the input the model was trained on (§3.4), from words in its title; None when
    the title says nothing known (a union model, a QR-code model, ...)."""
    name = model_title.split(" [")[0].lower()
    if not name or name == "none" or "union" in name:
        return None
    for words, label in _PAIRING:
        if any(w in name for w in words):
            return label
    return None
