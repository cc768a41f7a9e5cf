"""A1111's "Outpainting mk2" (img2img): the image grows by `pixels` towards each chosen side, one side at a time;
the new border is first filled with noise shaped like the picture's own spectrum and colours (so the model has
something plausible to denoise), then that strip is inpainted. Arguments, in A1111's order: the info text
(ignored), pixels, mask_blur, direction (a list of "left"/"right"/"up"/"down"), noise_q (fall-off exponent),
color_variation."""
import logging
import math

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from modules import images, processing, scripts
from modules.engine.params import ParamError
from modules.outpainting import DIRECTIONS, WHERE, check_direction, matched_noise, side_pixels
from modules.shared import opts, state

log = logging.getLogger("sd.scripts")


def _multiple_of_8(value: int) -> int:
    return max(8, value // 8 * 8)


class Script(scripts.Script):
    def title(self):
        return "Outpainting mk2"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        if not is_img2img:
            return None
        info = gr.HTML('<p style="margin-bottom:0.75em">Recommended settings: Sampling Steps: 80-100, Sampler: '
                       'Euler a, Denoising strength: 0.8</p>')
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128,
                           elem_id=self.elem_id("pixels"))
        mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=8,
                              elem_id=self.elem_id("mask_blur"))
        direction = gr.CheckboxGroup(label="Outpainting direction", choices=list(DIRECTIONS),
                                     value=list(DIRECTIONS), elem_id=self.elem_id("direction"))
        noise_q = gr.Slider(label="Fall-off exponent (lower=higher detail)", minimum=0.0, maximum=4.0, step=0.01,
                            value=1.0, elem_id=self.elem_id("noise_q"))
        color_variation = gr.Slider(label="Color variation", minimum=0.0, maximum=1.0, step=0.01, value=0.05,
                                    elem_id=self.elem_id("color_variation"))
        return [info, pixels, mask_blur, direction, noise_q, color_variation]

    def run(self, p, _, pixels, mask_blur, direction, noise_q, color_variation):
        direction = check_direction(direction)
        pixels, mask_blur = int(pixels), int(mask_blur)
        if pixels < 0 or mask_blur < 0:
            raise ParamError(WHERE, f"Outpainting mk2: pixels ({pixels}) and mask blur ({mask_blur}) must be >= 0")
        if not p.init_images:
            raise ParamError("init_images", "Outpainting mk2 needs an init image")
        processing.fix_seed(p)
        process_width, process_height = p.width, p.height
        p.mask_blur = mask_blur * 4
        p.inpaint_full_res = False
        p.inpainting_fill = 1           # "original": the shaped noise is what gets denoised
        p.do_not_save_samples = True    # the strips; the grown images are saved at the end
        p.do_not_save_grid = True
        init_img = p.init_images[0].convert("RGB")
        left, right, up, down = side_pixels(init_img.width, init_img.height, pixels, direction)
        first = {}

        def expand(sources: list, amount: int, side: str) -> list:
            horizontal = side in ("left", "right")
            grow_w, grow_h = (amount, 0) if horizontal else (0, amount)
            strips, grown = [], []
            for source in sources:
                res_w, res_h = source.width + grow_w, source.height + grow_h
                canvas_w, canvas_h = math.ceil(res_w / 64) * 64, math.ceil(res_h / 64) * 64
                canvas = Image.new("RGB", (canvas_w, canvas_h))
                canvas.paste(source, (grow_w if side == "left" else 0, grow_h if side == "up" else 0))
                mask = Image.new("RGB", (canvas_w, canvas_h), "white")
                ImageDraw.Draw(mask).rectangle((
                    amount + mask_blur if side == "left" else 0,
                    amount + mask_blur if side == "up" else 0,
                    canvas_w - amount - mask_blur if side == "right" else res_w,
                    canvas_h - amount - mask_blur if side == "down" else res_h), fill="black")
                noised = matched_noise(np.asarray(canvas, dtype=np.float64) / 255.0,
                                       np.asarray(mask, dtype=np.float64) / 255.0, noise_q, color_variation)
                grown_image = Image.fromarray(np.clip(noised * 255.0, 0, 255).astype(np.uint8), mode="RGB")
                # the strip that is inpainted: at most the UI's size, at the growing side
                strip_w = _multiple_of_8(min(process_width, res_w)) if horizontal else canvas_w
                strip_h = _multiple_of_8(min(process_height, res_h)) if not horizontal else canvas_h
                box = (0 if side == "left" else canvas_w - strip_w, 0 if side == "up" else canvas_h - strip_h,
                       strip_w if side == "left" else canvas_w, strip_h if side == "up" else canvas_h)
                p.width, p.height = strip_w, strip_h
                p.image_mask = mask.crop(box)
                strips.append(grown_image.crop(box))
                grown.append((grown_image, res_w, res_h))
            p.init_images = strips
            latent_mask = Image.new("RGB", (p.width, p.height), "white")
            ImageDraw.Draw(latent_mask).rectangle((
                amount + mask_blur * 2 if side == "left" else 0,
                amount + mask_blur * 2 if side == "up" else 0,
                p.width - amount - mask_blur * 2 if side == "right" else res_w,
                p.height - amount - mask_blur * 2 if side == "down" else res_h), fill="black")
            p.latent_mask = latent_mask
            p.batch_size = len(strips)
            p.all_seeds = p.all_subseeds = None
            processed = processing.process_images(p)
            first.setdefault("processed", processed)
            out = []
            for (grown_image, res_w, res_h), result in zip(grown, processed.images):
                grown_image.paste(result, (0 if side == "left" else grown_image.width - result.width,
                                           0 if side == "up" else grown_image.height - result.height))
                out.append(grown_image.crop((0, 0, res_w, res_h)))
            return out

        batch_count, batch_size, seed = p.n_iter, p.batch_size, p.seed
        p.n_iter = 1
        sides = [(side, amount) for side, amount in zip(DIRECTIONS, (left, right, up, down)) if amount > 0]
        state.job_count = batch_count * len(sides)
        results = []
        for i in range(batch_count):
            if state.interrupted:
                break
            state.job = f"Batch {i + 1} out of {batch_count}"
            p.seed = seed + i * batch_size
            grown = [init_img] * batch_size
            for side, amount in sides:
                if state.interrupted:
                    break
                grown = expand(grown, amount, side)
            else:
                results += grown

        processed = first.get("processed")
        info = processed.info if processed is not None else ""
        p.batch_size, p.n_iter = batch_size, batch_count
        res = processing.Processed(p, list(results), seed, info, all_prompts=[p.prompt] * len(results),
                                   all_negative_prompts=[p.negative_prompt] * len(results),
                                   all_seeds=[seed + i for i in range(len(results))],
                                   infotexts=[info] * len(results))
        processing.save_processed(p, res)
        if len(results) > 1:
            grid = images.image_grid(results)
            if opts.grid_save:
                images.save_image(grid, p.outpath_grids, "grid", seed, p.prompt, opts.grid_format, info=info,
                                  short_filename=not opts.grid_extended_filename, grid=True, p=p)
            if opts.return_grid:
                res.images.insert(0, grid)
                res.infotexts.insert(0, info)
                res.index_of_first_image = 1
        return res
