"""A sample A1111-style extension script (ours, for tests): an always-on script that records every method the
runner calls, with the arguments it got, and edits prompts, seeds and the infotext; plus a callback for every
category of modules.script_callbacks."""
import os

import gradio as gr

from modules import script_callbacks, scripts

EXTENSION_DIR = scripts.basedir()   # while this file loads: the extension's folder

EVENTS = []     # (name, details) in calling order; tests read it through sys.modules["recorder.py"]


def record(name, **details):
    EVENTS.append((name, details))


class Recorder(scripts.Script):
    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Recorder", open=False):
            enabled = gr.Checkbox(label="Recorder enabled", value=False, elem_id=self.elem_id("enabled"))
            suffix = gr.Textbox(label="Prompt suffix", value=", recorded", elem_id=self.elem_id("suffix"))
            seed_offset = gr.Number(label="Seed offset", value=0, precision=0)
        return [enabled, suffix, seed_offset]

    def before_component(self, component, **kwargs):
        if kwargs.get("elem_id") in ("txt2img_prompt", "img2img_prompt"):
            record("before_component", elem_id=kwargs["elem_id"])

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") in ("txt2img_width", "img2img_width"):
            self.width_component = component
            record("after_component", elem_id=kwargs["elem_id"])

    def setup(self, p, enabled, suffix, seed_offset):
        record("setup", enabled=enabled, is_api=p.is_api)

    def before_process(self, p, enabled, suffix, seed_offset):
        record("before_process", enabled=enabled, has_all_prompts=p.all_prompts is not None)

    def process(self, p, enabled, suffix, seed_offset):
        record("process", enabled=enabled, all_prompts=list(p.all_prompts), all_seeds=list(p.all_seeds))
        if enabled:
            p.all_prompts = [prompt + suffix for prompt in p.all_prompts]
            p.all_seeds = [seed + int(seed_offset) for seed in p.all_seeds]
            p.extra_generation_params["Recorder suffix"] = suffix.strip(", ")

    def before_process_batch(self, p, enabled, suffix, seed_offset, **kwargs):
        record("before_process_batch", keys=sorted(kwargs), prompts=list(kwargs["prompts"]))

    def after_extra_networks_activate(self, p, enabled, suffix, seed_offset, **kwargs):
        record("after_extra_networks_activate", keys=sorted(kwargs))

    def process_batch(self, p, enabled, suffix, seed_offset, **kwargs):
        record("process_batch", keys=sorted(kwargs), seeds=list(kwargs["seeds"]))

    def process_before_every_sampling(self, p, enabled, suffix, seed_offset, **kwargs):
        record("process_before_every_sampling", keys=sorted(kwargs))

    def before_hr(self, p, enabled, suffix, seed_offset):
        record("before_hr")

    def post_sample(self, p, ps, enabled, suffix, seed_offset):
        record("post_sample", shape=tuple(ps.samples.shape))

    def postprocess_batch(self, p, enabled, suffix, seed_offset, **kwargs):
        record("postprocess_batch", keys=sorted(kwargs), shape=tuple(kwargs["images"].shape))

    def postprocess_batch_list(self, p, pp, enabled, suffix, seed_offset, **kwargs):
        record("postprocess_batch_list", n=len(pp.images), keys=sorted(kwargs))

    def on_mask_blend(self, p, mba, enabled, suffix, seed_offset):
        record("on_mask_blend", final=mba.is_final_blend)

    def postprocess_maskoverlay(self, p, ppmo, enabled, suffix, seed_offset):
        record("postprocess_maskoverlay", index=ppmo.index)

    def postprocess_image(self, p, pp, enabled, suffix, seed_offset):
        record("postprocess_image", size=pp.image.size)
        if enabled:
            pp.image = pp.image.copy()
            pp.image.putpixel((0, 0), (255, 0, 255))

    def postprocess_image_after_composite(self, p, pp, enabled, suffix, seed_offset):
        record("postprocess_image_after_composite", size=pp.image.size)

    def postprocess(self, p, processed, enabled, suffix, seed_offset):
        record("postprocess", n_images=len(processed.images), infotext=processed.infotexts[0])


def _callback(category):
    def fn(*args, **kwargs):
        record(f"callback:{category}", n_args=len(args), kwargs=sorted(kwargs))
        if category in ("list_optimizers", "list_unets"):
            args[0].append(f"sample {category}")
        if category == "infotext_pasted":
            args[1]["Recorder pasted"] = "yes"
        if category in ("before_reload", "script_unloaded"):   # survives the module being replaced
            with open(os.path.join(EXTENSION_DIR, "reload.log"), "a", encoding="utf-8") as f:
                f.write(category + "\n")
    return fn


for _category in ("app_started", "model_loaded", "ui_train_tabs", "ui_settings", "before_image_saved",
                  "image_saved", "extra_noise", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_component",
                  "after_component", "image_grid", "infotext_pasted", "script_unloaded", "before_ui",
                  "before_reload", "list_optimizers", "list_unets", "before_token_counter"):
    getattr(script_callbacks, f"on_{_category}")(_callback(_category), name="recorder")


def _tab():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown("Sample recorder tab", elem_id="sample_recorder_text")
    return [(tab, "Recorder", "sample_recorder")]


script_callbacks.on_ui_tabs(_tab)


def _settings():
    from modules import shared
    shared.opts.add_option("sample_recorder_mark", shared.OptionInfo(
        "off", "Sample recorder mark", gr.Radio, {"choices": ["off", "on"]},
        section=("sample_recorder", "Sample recorder")).info("a setting added by an extension"))


def _routes(demo, app):
    @app.get("/sample-recorder/events")
    def events():
        return [name for name, _ in EVENTS]


script_callbacks.on_ui_settings(_settings)
script_callbacks.on_app_started(_routes)
