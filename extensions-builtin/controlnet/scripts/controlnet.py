"""ControlNet, built in: sd-webui-controlnet's script ("ControlNet", always on), settings, flags and routes, on
this program's engine. The work is done in modules/controlnet (engine level), modules/ui/controlnet_ui.py (the
accordion) and modules/api/routes_controlnet.py (/controlnet/*); this file wires them to A1111's extension
interface, so ControlNet can be turned off like any extension (Extensions tab, --disable-extra-extensions does not
touch it: it is a built-in one)."""
from __future__ import annotations

from pathlib import Path

from modules import script_callbacks, scripts, shared
from modules.controlnet import units as cn_units
from modules.controlnet.annotators import default_folders
from modules.controlnet.service import ControlNetService, Folders
from modules.paths import DEMO_CONTROLNET

SECTION = ("control_net", "ControlNet")
EXTENSION_FOLDER = "sd-webui-controlnet"   # the real extension's folder: its models/ and annotator/ are used


def _setting(key: str, default=None):
    try:
        return shared.opts.data.get(key, default)
    except Exception:   # before the runtime is bound (tests building the script alone)
        return default


def _flag(name: str):
    return getattr(shared.cmd_opts, name, None)


def folders() -> Folders:
    extensions_dir = Path(shared.data_path) / "extensions"
    ext_dir = extensions_dir / EXTENSION_FOLDER
    if not ext_dir.is_dir():   # a zip download keeps "-main"
        ext_dir = next((p for p in sorted(extensions_dir.glob(EXTENSION_FOLDER + "*")) if p.is_dir()), ext_dir)
    models = [Path(shared.models_path) / "ControlNet", ext_dir / "models"]
    for extra in (_setting("control_net_models_path", ""), _flag("controlnet_dir")):
        if extra:
            models.append(Path(extra))
    if DEMO_CONTROLNET.parent not in models:    # the bundled demo ControlNet, also with --data-dir elsewhere
        models.append(DEMO_CONTROLNET.parent)
    download, search = default_folders(Path(shared.data_path), Path(shared.models_path),
                                       _flag("controlnet_annotator_models_path"),
                                       _setting("control_net_modules_path", ""))
    return Folders(models, download, [s for s in search if s != download])


service = ControlNetService(folders, lambda: _setting("control_net_model_cache_size", 2) or 2, _setting,
                            lambda: bool(_flag("no_half_controlnet")),
                            _flag("controlnet_preprocessor_cache_size") if _flag("controlnet_preprocessor_cache_size")
                            is not None else 16)


def unit_count() -> int:
    return max(1, min(10, int(_setting("control_net_unit_count", 3) or 3)))


class ControlNetScript(scripts.Script):
    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        from modules.ui import controlnet_ui
        deps = controlnet_ui.ControlNetUIDeps(unit_count(), service.model_titles, service.preview)
        return controlnet_ui.build("img2img" if is_img2img else "txt2img", is_img2img, deps)

    def check_api_args(self, given, where: str) -> None:
        """Rejects bad units before the job is queued (a 422 naming the unit and field)."""
        if isinstance(given, dict):
            given = given.get("args", given)
        if not isinstance(given, (list, tuple)):
            from modules.engine.params import ParamError
            raise ParamError(where, "must be a list of ControlNet units (objects)")
        cn_units.parse_units(given, unit_count(), where)

    def process(self, p, *args):
        units = cn_units.parse_units(args, max(unit_count(), len(args)))
        for i, unit in enumerate(units):
            if unit.enabled and unit.unknown_fields:
                p.comments.append(f"ControlNet unit {i}: unknown fields ignored: {', '.join(unit.unknown_fields)}")
        active = service.prepare(p, units)
        service.attach(p, active)

    def postprocess(self, p, processed, *args):
        active = getattr(p, "controlnet_units", None)
        if not active:
            return
        if _setting("control_net_detectmap_autosaving", False):
            _autosave(p, active)
        processed.images.extend(service.detected_maps(p, active))


def _autosave(p, active) -> None:
    """The extension's "Allow detectmap auto saving": each unit's map at the generation size, into
    <data>/<control_net_detectedmap_dir>/<module>/ (A1111's sequential file names)."""
    from PIL import Image

    from modules import images
    base = Path(_setting("control_net_detectedmap_dir", "detected_maps") or "detected_maps")
    base = base if base.is_absolute() else Path(shared.data_path) / base
    for au in active:
        folder = base / au.pre.label.split(" ")[0]
        folder.mkdir(parents=True, exist_ok=True)
        images.save_image(Image.fromarray(au.control.map_at(p.width, p.height)), str(folder), "")


def _settings():
    import gradio as gr
    add = shared.opts.add_option
    info = shared.OptionInfo
    add("control_net_detectedmap_dir", info("detected_maps", "Directory for detected maps auto saving",
                                            section=SECTION))
    add("control_net_models_path", info("", "Extra path to scan for ControlNet models (e.g. training output "
                                            "directory)", section=SECTION))
    add("control_net_modules_path", info("", "Path to directory containing annotator model directories (requires "
                                             "restart, overrides corresponding command line flag)", section=SECTION))
    add("control_net_unit_count", info(3, "Multi-ControlNet: ControlNet unit number (requires restart)", gr.Slider,
                                       {"minimum": 1, "maximum": 10, "step": 1}, section=SECTION).needs_restart())
    add("control_net_model_cache_size", info(2, "Model cache size (requires restart)", gr.Slider,
                                             {"minimum": 1, "maximum": 10, "step": 1}, section=SECTION))
    add("control_net_inpaint_blur_sigma", info(7, "ControlNet inpainting Gaussian blur sigma", gr.Slider,
                                               {"minimum": 0, "maximum": 64, "step": 1}, section=SECTION))
    add("control_net_no_detectmap", info(False, "Do not append detectmap to output", gr.Checkbox,
                                         {"interactive": True}, section=SECTION))
    add("control_net_detectmap_autosaving", info(False, "Allow detectmap auto saving", gr.Checkbox,
                                                 {"interactive": True}, section=SECTION))
    add("control_net_allow_script_control", info(False, "Allow other script to control this extension",
                                                 gr.Checkbox, {"interactive": True}, section=SECTION))
    add("control_net_sync_field_args", info(True, "Paste ControlNet parameters in infotext", gr.Checkbox,
                                            {"interactive": True}, section=SECTION))
    add("controlnet_ignore_noninpaint_mask", info(False, "Ignore mask on ControlNet input image if control type "
                                                         "is not inpaint", gr.Checkbox, {"interactive": True},
                                                  section=SECTION))
    add("controlnet_control_type_dropdown", info(False, "[Experimental] Use dropdown for control type",
                                                 gr.Checkbox, {"interactive": True}, section=SECTION)
        .needs_restart())


def _app_started(demo, app):
    from modules.api import routes_controlnet
    routes_controlnet.mount(app, service, unit_count)


script_callbacks.on_ui_settings(_settings)
script_callbacks.on_app_started(_app_started)
script_callbacks.on_model_loaded(lambda sd_model: service.clear_cache())
