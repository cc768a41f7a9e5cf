"""A sample selectable script (ours, for tests), shaped like Ultimate SD upscale: run() re-enters process_images once
per tile of the init image with a changed p, saves the stitched result with images.save_image and returns it."""
import gradio as gr
from PIL import Image

from modules import processing, scripts

CALLS = []


class Tiler(scripts.Script):
    def title(self):
        return "Sample tiler"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        tiles = gr.Slider(label="Tiles", minimum=1, maximum=4, step=1, value=2)
        return [tiles]

    def run(self, p, tiles):
        tiles = int(tiles)
        source = p.init_images[0]
        width, height = source.size
        tile_w = width // tiles
        p.do_not_save_samples = True
        processing.fix_seed(p)
        out = Image.new("RGB", (tile_w * tiles, height))
        last = None
        for i in range(tiles):
            p.init_images = [source.crop((i * tile_w, 0, (i + 1) * tile_w, height))]
            p.width, p.height = tile_w, height
            last = processing.process_images(p)
            CALLS.append({"tile": i, "size": last.images[0].size, "seed": last.seed})
            out.paste(last.images[0], (i * tile_w, 0))
        return processing.Processed(p, [out], p.seed, last.info if last else "")
