"""The Lora tab of Extra Networks (A1111's extensions-builtin/Lora/ui_extra_networks_lora.py): one card per file of
the catalog (models/Lora, --lora-dir, models/LyCORIS, the demo folder). A click adds `<lora:ALIAS:W>` — W the
card's "preferred weight", else the extra_networks_default_multiplier setting — with the "activation text" after it,
and the "negative text" to the negative prompt. Files made for another model family than the loaded one are hidden
unless lora_show_all is set, as in A1111."""
from __future__ import annotations

import os

from modules import shared, ui_extra_networks
from modules.ui_extra_networks import quote_js

SD_VERSIONS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}   # the catalog's family → A1111's SdVersion name
SD_VERSION_CHOICES = ["Unknown", "SD1", "SD2", "SDXL"]


def _loaded_family() -> str | None:
    """The loaded model's A1111 version name ("SD1", "SDXL"), None when no model is loaded."""
    if not shared.bound():
        return None
    model = shared.runtime().models.model
    return SD_VERSIONS.get(model.spec.family) if model is not None else None


def preferred_weight(user_metadata: dict) -> float | None:
    """The card's "preferred weight" as a number; None when unset, 0 or not a number (the default then applies)."""
    try:
        value = float(user_metadata.get("preferred weight") or 0)
    except (TypeError, ValueError):
        return None
    return value or None


class ExtraNetworksPageLora(ui_extra_networks.ExtraNetworksPage):
    user_metadata_fields = (("description", "Description", "text"), ("sd version", "Stable Diffusion version",
                                                                      "choice"),
                            ("activation text", "Activation text", "text"),
                            ("preferred weight", "Preferred weight", "weight"),
                            ("negative text", "Negative prompt", "text"), ("notes", "Notes", "text"))
    choices = {"sd version": SD_VERSION_CHOICES}

    def __init__(self, catalog):
        super().__init__("Lora")
        self.catalog = catalog   # a modules.networks.network_files.NetworkCatalog
        self._listing: dict | None = None

    def refresh(self) -> None:
        self.catalog.refresh()

    def warm(self) -> None:
        self.catalog.ensure()   # A1111 scans the LoRA folders at start-up; we do it in the background

    def _settings(self) -> dict:
        """What every card reads, once per pane (a folder of 2,000 LoRAs asks 2,000 times)."""
        if self._listing is not None:
            return self._listing
        keys = ("lora_preferred_name", "samples_format", "lora_show_all", "lora_hide_unknown_for_versions")
        return {"family": _loaded_family(), **{k: ui_extra_networks.setting(k) for k in keys}}

    def create_item(self, name, index=None, enable_filter=True):
        self.catalog.ensure()
        lora = self.catalog.available.get(name)
        if lora is None:
            return None
        conf = self._settings()
        path = os.path.splitext(lora.filename)[0]
        alias = lora.get_alias(conf["lora_preferred_name"])
        search_terms = [self.search_terms_from_path(lora.filename)] + ([lora.hash] if lora.hash else [])
        if alias != name:
            search_terms.append(alias)
        item = {
            "name": name,
            "filename": lora.filename,
            "shorthash": lora.shorthash,
            "preview": self.find_preview(path),
            "description": self.find_description(path),
            "search_terms": search_terms,
            "local_preview": f"{path}.{conf['samples_format']}",
            "metadata": lora.metadata,
            "sort_keys": {"default": index, **self.get_sort_keys(lora.filename)},
            "sd_version": SD_VERSIONS.get(lora.sd_version or "", "Unknown"),
        }
        self.read_user_metadata(item)
        user = item["user_metadata"]
        weight = preferred_weight(user)
        item["prompt"] = (quote_js(f"<lora:{alias}:") + " + " + (repr(weight) if weight is not None
                          else "opts.extra_networks_default_multiplier") + " + " + quote_js(">"))
        if user.get("activation text"):
            item["prompt"] += " + " + quote_js(" " + str(user["activation text"]))
        negative = user.get("negative text")
        item["negative_prompt"] = quote_js(f"({negative}:1)" if negative else "")
        if user.get("sd version") in SD_VERSION_CHOICES:
            item["sd_version"] = user["sd version"]
        if enable_filter and not self._shown(item["sd_version"], conf):
            return None
        return item

    @staticmethod
    def _shown(version: str, conf: dict) -> bool:
        family = conf["family"]
        if family is None or conf["lora_show_all"]:
            return True
        if version == "Unknown":
            return family not in (conf["lora_hide_unknown_for_versions"] or [])
        return version == family

    def list_items(self):
        self.catalog.ensure()
        self._listing = self._settings()
        try:
            for index, name in enumerate(list(self.catalog.available)):   # a copy: a refresh may run meanwhile
                item = self.create_item(name, index)
                if item is not None:
                    yield item
        finally:
            self._listing = None

    def allowed_directories_for_previews(self) -> list:
        return [str(folder) for folder in self.catalog.folders()]
