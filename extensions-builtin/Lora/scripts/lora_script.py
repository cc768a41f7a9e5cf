"""The built-in Lora extension (A1111's extensions-builtin/Lora): registers the `lora` kind (and `lyco`), its
settings, the Lora cards page, /sdapi/v1/loras and /refresh-loras, and the paste rule that finds a pasted
network by its hash under the name it has here. The work is in modules/networks/."""
from __future__ import annotations

import extra_networks_lora
import networks
from modules import script_callbacks, shared
from modules.networks.lora import rename_pasted

SECTION = ("extra_networks", "Extra Networks")
_handler = extra_networks_lora.ExtraNetworkLora()


def _register_handler() -> None:
    if shared.bound():
        registry = shared.runtime().extra_networks
        registry.register(_handler)
        registry.aliases["lyco"] = "lora"


def _unregister_handler() -> None:
    if shared.bound():
        from modules.engine.extra_networks import Unavailable
        shared.runtime().extra_networks.register(Unavailable("lora"))


def _settings():
    import gradio as gr
    info, add = shared.OptionInfo, shared.opts.add_option
    add("sd_lora", info("None", "Add network to prompt", gr.Dropdown,
                        lambda: {"choices": ["None", *networks.available_networks]}, refresh=networks.list_available_networks,
                        section=SECTION))
    add("lora_preferred_name", info("Alias from file", "When adding to prompt, refer to Lora by", gr.Radio,
                                    {"choices": ["Alias from file", "Filename"]}, section=SECTION))
    add("lora_add_hashes_to_infotext", info(True, "Add Lora hashes to infotext", section=SECTION))
    add("lora_show_all", info(False, "Always show all networks on the Lora page", section=SECTION)
        .info("otherwise, those detected as for incompatible version of Stable Diffusion will be hidden"))
    add("lora_hide_unknown_for_versions", info([], "Hide networks of unknown versions for model versions",
                                               gr.CheckboxGroup, {"choices": ["SD1", "SD2", "SDXL"]},
                                               section=SECTION))
    add("lora_in_memory_limit", info(0, "Number of Lora networks to keep cached in memory", gr.Number,
                                     {"precision": 0}, section=SECTION))
    add("lora_not_found_warning_console", info(False, "Lora not found warning in console", section=SECTION))
    add("lora_not_found_gradio_warning", info(False, "Lora not found warning popup in webui", section=SECTION))


def infotext_pasted(infotext: str, params: dict) -> None:
    """A pasted prompt names LoRAs as the author had them; "Lora hashes" finds each one here by its hash and the
    prompt is rewritten to the local name (A1111's rule)."""
    preferred = shared.opts.data.get("lora_preferred_name", "Alias from file") if shared.bound() else \
        "Alias from file"
    rename_pasted(params, networks.catalog, preferred)


try:   # here, not in _before_ui: the extension's folder is on sys.path only while its scripts load
    import ui_extra_networks_lora
except ImportError:   # the cards page is not there (an install without the UI part)
    ui_extra_networks_lora = None


def _before_ui():
    if ui_extra_networks_lora is None:
        return
    from modules import ui_extra_networks
    ui_extra_networks.register_page(ui_extra_networks_lora.ExtraNetworksPageLora(networks.catalog))


def _app_started(_demo, app):
    from modules.api import routes_lora
    routes_lora.mount(app, networks.catalog)


_register_handler()
script_callbacks.on_script_unloaded(_unregister_handler)
script_callbacks.on_ui_settings(_settings)
script_callbacks.on_before_ui(_before_ui)
script_callbacks.on_infotext_pasted(infotext_pasted)
script_callbacks.on_app_started(_app_started)
script_callbacks.on_model_loaded(lambda _sd_model: networks.lora_networks.forget_merged())
