"""The Checkpoints tab of Extra Networks (A1111's modules/ui_extra_networks_checkpoints.py): one card per checkpoint
of the registry; a click selects it (A1111 sets the sd_model_checkpoint quicksetting; ours picks it in the top
bar's checkpoint dropdown, which loads it)."""
from __future__ import annotations

import html
import os

from modules import shared, ui_extra_networks
from modules.ui_extra_networks import quote_js


class ExtraNetworksPageCheckpoints(ui_extra_networks.ExtraNetworksPage):
    def __init__(self, registry=None):
        super().__init__("Checkpoints")
        self.allow_prompt = False
        self._registry = registry   # a modules.models.registry.ModelRegistry; None: the runtime's

    @property
    def registry(self):
        if self._registry is not None:
            return self._registry
        return shared.runtime().registry if shared.bound() else None

    def refresh(self) -> None:
        if self.registry is not None:
            self.registry.refresh()

    def _checkpoint(self, name):
        registry = self.registry
        if registry is None:
            return None
        for info in registry.checkpoints:
            if name in (info.title, info.name):
                return info
        return None

    def create_item(self, name, index=None, enable_filter=True):
        info = self._checkpoint(name)
        if info is None:
            return None
        filename = str(info.filename)
        path = os.path.splitext(filename)[0]
        search_terms = [self.search_terms_from_path(filename)] + ([info.sha256] if info.sha256 else [])
        return {
            "name": os.path.splitext(info.name)[0],   # A1111's name_for_extra, with its subfolder
            "filename": filename,
            "shorthash": info.shorthash,
            "preview": self.find_preview(path),
            "description": self.find_description(path),
            "search_terms": search_terms,
            "onclick": html.escape(f"return selectCheckpoint({quote_js(info.title)})"),
            "local_preview": f"{path}.{ui_extra_networks.setting('samples_format')}",
            "metadata": {},
            "sort_keys": {"default": index, **self.get_sort_keys(filename)},
        }

    def list_items(self):
        registry = self.registry
        if registry is None:
            return
        for index, info in enumerate(list(registry.checkpoints)):
            item = self.create_item(info.title, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list:
        registry = self.registry
        dirs = list(getattr(registry, "checkpoint_dirs", []) or []) if registry is not None else []
        if not dirs and shared.bound():
            dirs = shared.runtime().paths.checkpoint_dirs()
        fallback = getattr(registry, "fallback", None)
        if fallback is not None and any(registry.is_fallback(c) for c in registry.checkpoints):
            dirs.append(fallback.parent)   # the bundled demo model, listed when no other checkpoint is found
        return [str(d) for d in dirs if os.path.isdir(str(d))]
