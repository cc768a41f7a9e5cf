"""The Textual Inversion tab of Extra Networks (A1111's modules/ui_extra_networks_textual_inversion.py): one card per
embedding of the database, the skipped ones too (marked, with why), as A1111 lists them. A click adds the
embedding's name to the prompt box last focused (prompt or negative prompt)."""
from __future__ import annotations

import os

from modules import shared, ui_extra_networks
from modules.ui_extra_networks import quote_js


class ExtraNetworksPageTextualInversion(ui_extra_networks.ExtraNetworksPage):
    def __init__(self, embeddings=None):
        super().__init__("Textual Inversion")
        self.allow_negative_prompt = True
        self._embeddings = embeddings   # an EmbeddingDatabase; None: the runtime's (rt.embeddings)

    @property
    def embeddings(self):
        if self._embeddings is not None:
            return self._embeddings
        return getattr(shared.runtime(), "embeddings", None) if shared.bound() else None

    def refresh(self) -> None:
        db = self.embeddings
        if db is not None and hasattr(db, "load_textual_inversion_embeddings"):
            db.load_textual_inversion_embeddings(force_reload=True)

    def _find(self, name):
        db = self.embeddings
        if db is None:
            return None, False
        found = db.word_embeddings.get(name)
        if found is not None:
            return found, False
        return getattr(db, "skipped_embeddings", {}).get(name), True

    def create_item(self, name, index=None, enable_filter=True):
        embedding, skipped = self._find(name)
        if embedding is None or not getattr(embedding, "filename", None):
            return None
        path = os.path.splitext(embedding.filename)[0]
        search_terms = [self.search_terms_from_path(embedding.filename)]
        if getattr(embedding, "hash", None):
            search_terms.append(embedding.hash)
        item = {
            "name": name,
            "filename": embedding.filename,
            "shorthash": getattr(embedding, "shorthash", None),
            "preview": self.find_preview(path),
            "description": self.find_description(path),
            "search_terms": search_terms,
            "prompt": quote_js(embedding.name),
            "local_preview": f"{path}.preview.{ui_extra_networks.setting('samples_format')}",
            "sort_keys": {"default": index, **self.get_sort_keys(embedding.filename)},
        }
        if skipped:
            shape = getattr(embedding, "shape", None)
            item["skipped"] = f"skipped: width {shape} does not fit the model" if shape else "skipped"
        return item

    def list_items(self):
        db = self.embeddings
        if db is None:
            return
        names = list(db.word_embeddings) + [n for n in getattr(db, "skipped_embeddings", {})
                                            if n not in db.word_embeddings]
        for index, name in enumerate(names):
            item = self.create_item(name, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list:
        db = self.embeddings
        dirs = getattr(db, "embedding_dirs", None) if db is not None else None
        if dirs:
            return [str(d) for d in dirs]
        return [str(shared.runtime().paths.embeddings)] if shared.bound() else []
