"""The Hypernetworks tab of Extra Networks (A1111's modules/ui_extra_networks_hypernets.py): one card per .pt file
of the hypernetwork catalog (rt.hypernetworks); a click adds `<hypernet:NAME:W>`, W the
extra_networks_default_multiplier setting."""
from __future__ import annotations

import os

from modules import shared, ui_extra_networks
from modules.ui_extra_networks import quote_js


class ExtraNetworksPageHypernetworks(ui_extra_networks.ExtraNetworksPage):
    def __init__(self, catalog=None):
        super().__init__("Hypernetworks")
        self._catalog = catalog   # a NetworkCatalog of .pt files; None: the runtime's (rt.hypernetworks)

    @property
    def catalog(self):
        if self._catalog is not None:
            return self._catalog
        return getattr(shared.runtime(), "hypernetworks", None) if shared.bound() else None

    def refresh(self) -> None:
        if self.catalog is not None:
            self.catalog.refresh()

    def warm(self) -> None:
        if self.catalog is not None:
            self.catalog.ensure()

    def create_item(self, name, index=None, enable_filter=True):
        catalog = self.catalog
        if catalog is None:
            return None
        catalog.ensure()
        net = catalog.available.get(name)
        if net is None:
            return None
        path = os.path.splitext(net.filename)[0]
        search_terms = [self.search_terms_from_path(net.filename)] + ([net.hash] if net.hash else [])
        return {
            "name": name,
            "filename": net.filename,
            "shorthash": net.shorthash,
            "preview": self.find_preview(path),
            "description": self.find_description(path),
            "search_terms": search_terms,
            "prompt": quote_js(f"<hypernet:{name}:") + " + opts.extra_networks_default_multiplier + " + quote_js(">"),
            "local_preview": f"{path}.preview.{ui_extra_networks.setting('samples_format')}",
            "sort_keys": {"default": index, **self.get_sort_keys(net.filename)},
        }

    def list_items(self):
        catalog = self.catalog
        if catalog is None:
            return
        catalog.ensure()
        for index, name in enumerate(list(catalog.available)):
            item = self.create_item(name, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list:
        catalog = self.catalog
        return [str(folder) for folder in catalog.folders()] if catalog is not None else []
