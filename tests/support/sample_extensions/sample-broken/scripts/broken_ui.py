"""Its controls and its tab fail to build: the page must come up without them."""
from modules import script_callbacks, scripts


class BrokenUi(scripts.Script):
    def title(self):
        return "Broken ui"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        raise RuntimeError("sample-broken ui() fails on purpose")


def _tab():
    raise RuntimeError("sample-broken tab fails on purpose")


script_callbacks.on_ui_tabs(_tab)
