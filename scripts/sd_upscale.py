"""A1111's "SD upscale" (img2img): the init image is enlarged by an upscaler, cut into tiles of the width × height
set in the UI that overlap, each tile is img2img'd with the prompt, and the tiles are blended back together.
Arguments, in A1111's order: the info text (ignored), overlap, upscaler_index (an index into shared.sd_upscalers,
or the upscaler's name), scale_factor."""
import logging
import math

import gradio as gr
from PIL import Image

from modules import images, processing, scripts, shared
from modules.engine.params import ParamError
from modules.shared import state

log = logging.getLogger("sd.scripts")
WHERE = "script_args"


def find_upscaler(index_or_name):
    """shared.sd_upscalers entry by index or (case-insensitive) name; ParamError naming the choices."""
    upscalers = shared.sd_upscalers
    names = [u.name for u in upscalers]
    if isinstance(index_or_name, str) and not index_or_name.strip().lstrip("-").isdigit():
        lowered = [n.lower() for n in names]
        if index_or_name.strip().lower() in lowered:
            return upscalers[lowered.index(index_or_name.strip().lower())]
        raise ParamError(WHERE, f"SD upscale: unknown upscaler {index_or_name!r}; choose one of {names}")
    try:
        index = int(index_or_name)
    except (TypeError, ValueError):
        raise ParamError(WHERE, f"SD upscale: upscaler must be a name or an index, got {index_or_name!r}; "
                                f"upscalers: {names}") from None
    if not 0 <= index < len(upscalers):
        raise ParamError(WHERE, f"SD upscale: upscaler index {index} is out of range 0..{len(upscalers) - 1}; "
                                f"upscalers: {names}")
    return upscalers[index]


class Script(scripts.Script):
    def title(self):
        return "SD upscale"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        info = gr.HTML('<p style="margin-bottom:0.75em">Will upscale the image by the selected scale factor; use '
                       'width and height sliders to set tile size</p>')
        overlap = gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64,
                            elem_id=self.elem_id("overlap"))
        scale_factor = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0,
                                 elem_id=self.elem_id("scale_factor"))
        upscaler_index = gr.Radio(label="Upscaler", choices=[u.name for u in shared.sd_upscalers],
                                  value=shared.sd_upscalers[0].name, type="index",
                                  elem_id=self.elem_id("upscaler_index"))
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p, _, overlap, upscaler_index, scale_factor):
        upscaler = find_upscaler(upscaler_index)
        overlap = int(overlap)
        try:
            scale_factor = float(scale_factor)
        except (TypeError, ValueError):
            raise ParamError(WHERE, f"SD upscale: scale factor must be a number, got {scale_factor!r}") from None
        if scale_factor <= 0:
            raise ParamError(WHERE, f"SD upscale: scale factor must be above 0, got {scale_factor}")
        if not 0 <= overlap < min(p.width, p.height):
            raise ParamError(WHERE, f"SD upscale: tile overlap {overlap} must be at least 0 and smaller than the "
                                    f"tile size {p.width}x{p.height} (the width and height)")
        if not p.init_images:
            raise ParamError("init_images", "SD upscale needs an init image")
        processing.fix_seed(p)
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = upscaler.name

        init_img = p.init_images[0].convert("RGB")
        img = upscaler.scaler.upscale(init_img, scale_factor, upscaler.data_path) if upscaler.name != "None" \
            else init_img
        grid = images.split_grid(img, tile_w=p.width, tile_h=p.height, overlap=overlap)
        work = [tile[2] for _y, _h, row in grid.tiles for tile in row]

        batch_size, upscale_count, seed = p.batch_size, p.n_iter, p.seed
        p.n_iter = 1
        p.do_not_save_grid = True
        p.do_not_save_samples = True    # the tiles; the recombined images are saved below
        batch_count = math.ceil(len(work) / batch_size)
        state.job_count = batch_count * upscale_count
        log.info("SD upscale: %d tiles (%dx%d) per image, %d batches in all", len(work), len(grid.tiles[0][2]),
                 len(grid.tiles), state.job_count)

        results, seeds, infotexts = [], [], []
        for n in range(upscale_count):
            if state.interrupted:
                break
            start_seed = seed + n
            p.seed = start_seed
            tiles_done, info = [], None
            for i in range(batch_count):
                if state.interrupted:
                    break
                chunk = work[i * batch_size:(i + 1) * batch_size]
                p.batch_size, p.init_images = len(chunk), chunk
                p.all_seeds = p.all_subseeds = None     # each call seeds from p.seed, as A1111's does
                state.job = f"Batch {i + 1 + n * batch_count} out of {state.job_count}"
                processed = processing.process_images(p)
                info = info or processed.info
                p.seed = processed.seed + 1
                tiles_done += processed.images
            if len(tiles_done) < len(work):
                break   # interrupted: a half-done image is not a result
            index = 0
            for _y, _h, row in grid.tiles:
                for tile in row:
                    tile[2] = tiles_done[index] if index < len(tiles_done) else Image.new("RGB", (p.width, p.height))
                    index += 1
            results.append(images.combine_grid(grid))
            seeds.append(start_seed)
            infotexts.append(info)

        p.batch_size, p.n_iter = batch_size, upscale_count
        processed = processing.Processed(p, results, seed, infotexts[0] if infotexts else "",
                                         all_prompts=[p.prompt] * len(results),
                                         all_negative_prompts=[p.negative_prompt] * len(results),
                                         all_seeds=seeds, infotexts=infotexts)
        processing.save_processed(p, processed)
        return processed
