"""The two interrogators of one runtime: A1111's "Interrogate CLIP" (a BLIP caption, then the best CLIP matches from
each category list: "caption, artist, flavor, medium, movement") and "Interrogate DeepBooru" (comma-separated tags).

Models load on demand from their folders (downloaded on first use, modules.interrogate.weights) and are dropped
after each use unless the setting interrogate_keep_models_in_memory is on. Runs happen inside a queued job (kind
"interrogate", modules.job_executors), so they never race a generation for memory or the device.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from modules.interrogate import blip, categories, clip_model, deepbooru, weights

MODELS = ("clip", "deepdanbooru")
Settings = Callable[[str, Any], Any]


class UnknownInterrogator(ValueError):
    def __init__(self, name: str):
        super().__init__(f"model: unknown interrogator {name!r}; allowed: {', '.join(MODELS)}")


class Interrogator:
    def __init__(self, places: dict[str, weights.WeightPlace], categories_dir: Path, tokenizer_dir: Path,
                 device: torch.device | str = "cpu", allow_download: bool = True,
                 categories_source: str = categories.SOURCE):
        self.places = places
        self.categories_dir = Path(categories_dir)
        self.categories_source = categories_source
        self.tokenizer_dir = Path(tokenizer_dir)
        self.device = torch.device(device)
        self.allow_download = allow_download
        self._blip: blip.BlipCaptioner | None = None
        self._clip: clip_model.ClipRanker | None = None
        self._deepbooru = None
        self._lock = threading.Lock()

    def interrogate(self, image: Image.Image, model: str, setting: Settings, state=None) -> str:
        if model not in MODELS:
            raise UnknownInterrogator(model)
        with self._lock:
            try:
                image = image.convert("RGB")
                return self._clip_text(image, setting, state) if model == "clip" else \
                    self._deepbooru_text(image, setting, state)
            finally:
                if not setting("interrogate_keep_models_in_memory", False):
                    self.unload()

    def unload(self) -> None:
        self._blip = self._clip = self._deepbooru = None

    # --- CLIP --------------------------------------------------------------------------------------------------
    def _clip_text(self, image: Image.Image, setting: Settings, state) -> str:
        _progress(state, "interrogate: BLIP caption", 0, 3)
        # every file first, so an offline user hears about all that is missing before minutes of loading
        blip_path = weights.ensure(self.places["blip"], self.allow_download)
        clip_path = weights.ensure(self.places["clip"], self.allow_download)
        folder = categories.ensure(self.categories_dir, self.categories_source, self.allow_download)
        if self._blip is None:
            self._blip = blip.BlipCaptioner(blip_path, self.device)
        caption = self._blip.caption(image, num_beams=setting("interrogate_clip_num_beams", 1),
                                     min_length=setting("interrogate_clip_min_length", 24),
                                     max_length=setting("interrogate_clip_max_length", 48))
        if not setting("interrogate_keep_models_in_memory", False):
            self._blip = None            # A1111 sends BLIP away before loading CLIP
        _progress(state, "interrogate: CLIP", 1, 3)
        if self._clip is None:
            from modules.models.loader import tokenizer
            self._clip = clip_model.ClipRanker(clip_path, tokenizer(self.tokenizer_dir, "<|endoftext|>"),
                                               self.device)
        features = self._clip.image_features(image)
        limit = int(setting("interrogate_clip_dict_limit", 1500) or 0)
        ranks = bool(setting("interrogate_return_ranks", False))
        text = caption
        for category in categories.load(folder, list(setting("interrogate_clip_skip_categories", []) or [])):
            items = category.items[:limit] if limit else category.items
            for match, score in self._clip.rank(features, items, category.topn):
                text += f", ({match}:{score / 100:.3f})" if ranks else f", {match}"
        _progress(state, "interrogate", 3, 3)
        return text

    # --- DeepBooru ---------------------------------------------------------------------------------------------
    def _deepbooru_text(self, image: Image.Image, setting: Settings, state) -> str:
        _progress(state, "interrogate: DeepBooru", 0, 1)
        path = weights.ensure(self.places["deepdanbooru"], self.allow_download)
        if self._deepbooru is None:
            self._deepbooru = deepbooru.load(path, self.device)
        probs = deepbooru.probabilities(self._deepbooru, image)
        _progress(state, "interrogate: DeepBooru", 1, 1)
        return deepbooru.format_tags(
            probs, threshold=float(setting("interrogate_deepbooru_score_threshold", 0.5)),
            sort_alpha=bool(setting("deepbooru_sort_alpha", True)),
            use_spaces=bool(setting("deepbooru_use_spaces", True)), escape=bool(setting("deepbooru_escape", True)),
            filter_tags=str(setting("deepbooru_filter_tags", "") or ""),
            include_ranks=bool(setting("interrogate_return_ranks", False)))


def _progress(state, text: str, done: int, total: int) -> None:
    if state is None:
        return
    state.job = "interrogate"
    state.textinfo = text
    state.sampling_step, state.sampling_steps = done, total


def for_runtime(paths, device, clip_models_path: str | None = None) -> Interrogator:
    """The runtime's interrogator: A1111's folders under the models folder, the category lists in
    `<data>/interrogate` (A1111's `interrogate/` beside webui.py)."""
    return Interrogator(weights.default_places(paths.models, clip_models_path), paths.data / "interrogate",
                        paths.tokenizer_dir, device)
