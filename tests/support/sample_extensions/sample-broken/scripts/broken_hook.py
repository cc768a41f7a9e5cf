"""Loads, but its process hook and a callback raise: the job must go on without them."""
from modules import script_callbacks, scripts


class BrokenHook(scripts.Script):
    def title(self):
        return "Broken hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise ValueError("sample-broken process hook fails on purpose")


def _bad_callback(params):
    raise ValueError("sample-broken cfg callback fails on purpose")


script_callbacks.on_cfg_denoiser(_bad_callback)
