"""A1111's `modules.scripts_postprocessing`: the classes of Extras-tab (postprocessing) scripts. Extensions subclass
ScriptPostprocessing; the runner that calls them from the Extras tab comes with that tab's extension support, so
these are the real classes with A1111's fields and defaults, not yet called by our Extras."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class PostprocessedImageSharedInfo:
    target_width: int | None = None
    target_height: int | None = None


class PostprocessedImage:
    """One image going through the postprocessing scripts, with what they add (infotext items, extra images,
    name tags for the file name)."""

    def __init__(self, image):
        self.image = image
        self.info: dict = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption: str | None = None

    def get_suffix(self, used_suffixes=None) -> str:
        """'-tag1-tag2' for the file name, made unique among used_suffixes."""
        used_suffixes = {} if used_suffixes is None else used_suffixes
        suffix = "-".join(self.nametags)
        if suffix:
            suffix = "-" + suffix
        if suffix not in used_suffixes:
            used_suffixes[suffix] = 1
            return suffix
        for i in range(1, 100):
            proposed = suffix + "-" + str(i)
            if proposed not in used_suffixes:
                used_suffixes[proposed] = 1
                return proposed
        return suffix

    def create_copy(self, new_image, *, nametags=None, disable_processing: bool = False) -> "PostprocessedImage":
        pp = PostprocessedImage(new_image)
        pp.shared = self.shared
        pp.nametags = self.nametags.copy()
        pp.info = self.info.copy()
        pp.disable_processing = disable_processing
        if nametags is not None:
            pp.nametags += nametags
        return pp


class ScriptPostprocessing:
    filename: str | None = None
    controls: dict | None = None
    args_from: int | None = None
    args_to: int | None = None
    order = 1000            # lower runs first
    name: str | None = None
    group = None

    def ui(self) -> dict:
        """Creates the script's controls; returns {argument name: component} (the names process() gets)."""
        return {}

    def process(self, pp: PostprocessedImage, **args) -> None:
        """Changes pp.image (and pp.info) in place."""

    def process_firstpass(self, pp: PostprocessedImage, **args) -> None:
        """Runs before process() for every script, to set pp.shared.target_width/height."""

    def image_changed(self) -> None:
        """The user picked another image in the Extras tab."""


def wrap_settings_list(x) -> list:
    return x if isinstance(x, list) else [x]
