"""The Textual Inversion tab of Extra Networks (A1111's modules/ui_extra_networks_textual_inversion.py): one card per
embedding of the database, the skipped ones too (marked, with why), as A1111 lists them. A click adds the
embedding's name to the prompt box last focused (prompt or negative prompt)."""
from __future__ import annotations

import os

from modules import hashes, shared, ui_extra_networks
from modules.ui_extra_networks import quote_js


def known_hash(embedding) -> str:
    """The file's sha256 if it was computed already (or is in the hash cache): an Embedding hashes its file on the
    first read of `.hash`, and a pane of a thousand cards must not hash a thousand files."""
    if isinstance(getattr(type(embedding), "hash", None), property):
        cached = getattr(embedding, "_hash", None)
        if cached is None and embedding.filename:
            cached = hashes.sha256_from_cache(embedding.filename, f"textual_inversion/{embedding.name}")
        return cached or ""
    return getattr(embedding, "hash", None) or ""


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
        sha256 = known_hash(embedding)
        search_terms = [self.search_terms_from_path(embedding.filename)] + ([sha256] if sha256 else [])
        item = {
            "name": name,
            "filename": embedding.filename,
            "shorthash": sha256[:12] or None,
            "preview": self.find_preview(path),
            "description": self.find_description(path),
            "search_terms": search_terms,
            "prompt": quote_js(embedding.name),
            "local_preview": f"{path}.preview.{ui_extra_networks.setting('samples_format')}",
            "sort_keys": {"default": index, **self.get_sort_keys(embedding.filename)},
        }
        if skipped:
            shape = getattr(embedding, "shape", None)
            expected = getattr(self.embeddings, "expected_shape", -1)
            item["skipped"] = (f"skipped: width {shape}, the model takes {expected}" if shape and expected > 0
                               else "skipped: does not fit the model")
        return item

    def list_items(self):
        db = self.embeddings
        if db is None:
            return
        if hasattr(db, "load_textual_inversion_embeddings"):
            db.load_textual_inversion_embeddings()   # a few stat calls unless a folder changed
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
