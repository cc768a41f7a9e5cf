"""A1111's "Poor man's outpainting" (img2img): the image is put on a larger canvas (`pixels` more towards each
chosen side, rounded up to a multiple of 64), the canvas is cut into tiles of the UI's width × height, and every
tile that reaches into the new border is inpainted with the chosen masked-content fill. Arguments, in A1111's
order: pixels, mask_blur, inpainting_fill (index of fill/original/latent noise/latent nothing, or the name),
direction."""
import logging
import re

import gradio as gr
from PIL import Image, ImageDraw

from modules import images, processing, scripts
from modules.engine.params import ParamError
from modules.outpainting import DIRECTIONS, check_direction, side_pixels
from modules.shared import state

log = logging.getLogger("sd.scripts")
WHERE = "script_args"
FILLS = ("fill", "original", "latent noise", "latent nothing")


def fill_index(value) -> int:
    if isinstance(value, str) and value in FILLS:
        return FILLS.index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(FILLS):
        raise ParamError(WHERE, f"Poor man's outpainting: masked content must be one of {list(FILLS)} or its "
                                f"index 0..3, got {value!r}")
    return index


class Script(scripts.Script):
    def title(self):
        return "Poor man's outpainting"

    def elem_id(self, item_id):
        # A1111's own ids for this script: img2img_script_poor_mans_outpainting_<item>
        return re.sub(r"[^a-z_0-9]", "", "img2img_script_" + re.sub(r"\s", "_", self.title().lower()) + "_" +
                      item_id)

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        if not is_img2img:
            return None
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128,
                           elem_id=self.elem_id("pixels"))
        mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4,
                              elem_id=self.elem_id("mask_blur"))
        inpainting_fill = gr.Radio(label="Masked content", choices=list(FILLS), value="fill", type="index",
                                   elem_id=self.elem_id("inpainting_fill"))
        direction = gr.CheckboxGroup(label="Outpainting direction", choices=list(DIRECTIONS),
                                     value=list(DIRECTIONS), elem_id=self.elem_id("direction"))
        return [pixels, mask_blur, inpainting_fill, direction]

    def run(self, p, pixels, mask_blur, inpainting_fill, direction):
        direction = check_direction(direction)
        pixels, mask_blur = int(pixels), int(mask_blur)
        if not 0 <= pixels < min(p.width, p.height):
            raise ParamError(WHERE, f"Poor man's outpainting: pixels to expand ({pixels}) is the tiles' overlap and "
                                    f"must be smaller than the tile size {p.width}x{p.height} (width and height)")
        if mask_blur < 0:
            raise ParamError(WHERE, f"Poor man's outpainting: mask blur must be >= 0, got {mask_blur}")
        if not p.init_images:
            raise ParamError("init_images", "Poor man's outpainting needs an init image")
        processing.fix_seed(p)
        p.mask_blur = mask_blur * 2
        p.inpainting_fill = fill_index(inpainting_fill)
        p.inpaint_full_res = False

        init_img = p.init_images[0].convert("RGB")
        left, right, up, down = side_pixels(init_img.width, init_img.height, pixels, direction)
        canvas = Image.new("RGB", (init_img.width + left + right, init_img.height + up + down))
        canvas.paste(init_img, (left, up))

        def border_mask(inset: int) -> Image.Image:
            """White where the canvas is new, the kept picture black, its edges towards new sides inset."""
            mask = Image.new("L", canvas.size, "white")
            ImageDraw.Draw(mask).rectangle((
                left + (inset if left else 0), up + (inset if up else 0),
                canvas.width - right - (inset if right else 0), canvas.height - down - (inset if down else 0)),
                fill="black")
            return mask

        grid = images.split_grid(canvas, tile_w=p.width, tile_h=p.height, overlap=pixels)
        grid_mask = images.split_grid(border_mask(mask_blur * 2), tile_w=p.width, tile_h=p.height, overlap=pixels)
        grid_latent = images.split_grid(border_mask(mask_blur // 2), tile_w=p.width, tile_h=p.height,
                                        overlap=pixels)

        def inside(x: int, w: int, y: int, h: int) -> bool:
            return x >= left and x + w <= canvas.width - right and y >= up and y + h <= canvas.height - down

        work = []    # (tile, mask tile, latent mask tile) for every tile touching the new border
        for (y, h, row), (_, _, row_mask), (_, _, row_latent) in zip(grid.tiles, grid_mask.tiles, grid_latent.tiles):
            for tile, tile_mask, tile_latent in zip(row, row_mask, row_latent):
                if not inside(tile[0], tile[1], y, h):
                    work.append((tile[2], tile_mask[2], tile_latent[2]))

        p.n_iter = p.batch_size = 1
        p.do_not_save_grid = True
        p.do_not_save_samples = True    # the tiles; the whole picture is saved at the end
        state.job_count = len(work)
        log.info("Poor man's outpainting: %d of %d tiles", len(work), sum(len(r[2]) for r in grid.tiles))
        seed, results, info = p.seed, [], None
        for i, (tile, tile_mask, tile_latent) in enumerate(work):
            if state.interrupted:
                break
            state.job = f"Batch {i + 1} out of {len(work)}"
            p.init_images, p.image_mask, p.latent_mask = [tile], tile_mask, tile_latent
            p.all_seeds = p.all_subseeds = None
            processed = processing.process_images(p)
            info = info or processed.info
            p.seed = processed.seed + 1
            results += processed.images
        if len(results) < len(work):
            return processing.Processed(p, [], seed, info or "")   # interrupted: no half-finished picture

        index = 0
        for y, h, row in grid.tiles:
            for tile in row:
                if not inside(tile[0], tile[1], y, h):
                    tile[2] = results[index]
                    index += 1
        combined = images.combine_grid(grid)
        p.seed = seed
        processed = processing.Processed(p, [combined], seed, info, all_prompts=[p.prompt],
                                         all_negative_prompts=[p.negative_prompt], all_seeds=[seed],
                                         infotexts=[info])
        processing.save_processed(p, processed)
        return processed
