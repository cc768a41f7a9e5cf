"""The built-in Lora extension (A1111's extensions-builtin/Lora): registers the `lora` kind (and `lyco`), its
settings, the Lora cards page, /sdapi/v1/loras and /refresh-loras, and the paste rule that finds a pasted
network by its hash under the name it has here. The work is in modules/networks/."""
from __future__ import annotations

import re

import extra_networks_lora
import networks
from modules import script_callbacks, shared

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


_LORA_TOKEN = re.compile(r"<(lora|lyco):([^:>]+)")


def infotext_pasted(infotext: str, params: dict) -> None:
    """A pasted prompt names LoRAs as the author had them; "Lora hashes" finds each one here by its hash and the
    prompt is rewritten to the local name (A1111's rule). Names whose hash is unknown here stay as they are."""
    given = params.get("Lora hashes")
    if not isinstance(given, str) or not given.strip():
        return
    by_name = {}
    for part in given.split(","):
        name, sep, shorthash = part.strip().rpartition(":")
        if sep and name.strip():
            by_name[name.strip()] = shorthash.strip()
    preferred = shared.opts.data.get("lora_preferred_name", "Alias from file") if shared.bound() else \
        "Alias from file"

    def local_name(m: re.Match) -> str:
        shorthash = by_name.get(m.group(2))
        entry = networks.catalog.by_shorthash(shorthash) if shorthash else None
        return f"<{m.group(1)}:{entry.get_alias(preferred) if entry is not None else m.group(2)}"
    for key in ("Prompt", "Negative prompt", "Hires prompt", "Hires negative prompt"):
        if isinstance(params.get(key), str):
            params[key] = _LORA_TOKEN.sub(local_name, params[key])


def _before_ui():
    try:
        import ui_extra_networks_lora
        from modules import ui_extra_networks
    except ImportError:   # the cards page is not there (an install without the UI part)
        return
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
