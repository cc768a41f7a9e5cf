"""A1111's "Prompt matrix": the prompt's `|`-separated parts after the first are switched on and off in every
combination (2^n images), and a grid labelled with the parts is put first. Arguments, in A1111's order:
put_at_start, different_seeds, prompt_type ("positive"/"negative"), variations_delimiter ("comma"/"space"),
margin_size."""
import logging
import math

import gradio as gr

from modules import images, processing, scripts
from modules.engine.params import ParamError
from modules.shared import opts, state

log = logging.getLogger("sd.scripts")

PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}


def matrix_prompts(prompt: str, put_at_start: bool, delimiter: str) -> tuple[list[str], list[str]]:
    """(the prompt's parts, one prompt per combination): combination i keeps part k+1 when bit k of i is set, the
    first part always (after the chosen parts when put_at_start)."""
    parts = prompt.split("|")
    prompts = []
    for combination in range(1 << (len(parts) - 1)):
        chosen = [text.strip().strip(",") for k, text in enumerate(parts[1:]) if combination & (1 << k)]
        prompts.append(delimiter.join(chosen + [parts[0]] if put_at_start else [parts[0]] + chosen))
    return parts, prompts


class Script(scripts.Script):
    def title(self):
        return "Prompt matrix"

    def ui(self, is_img2img):
        gr.HTML("<br />")
        with gr.Row():
            with gr.Column():
                put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                              elem_id=self.elem_id("different_seeds"))
            with gr.Column():
                prompt_type = gr.Radio(list(PROMPT_TYPES), label="Select prompt", value="positive",
                                       elem_id=self.elem_id("prompt_type"))
                variations_delimiter = gr.Radio(list(DELIMITERS), label="Select joining char", value="comma",
                                                elem_id=self.elem_id("variations_delimiter"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p, put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size):
        if prompt_type not in PROMPT_TYPES:
            raise ParamError("script_args", f"Prompt matrix: prompt type must be one of {list(PROMPT_TYPES)}, "
                                            f"got {prompt_type!r}")
        if variations_delimiter not in DELIMITERS:
            raise ParamError("script_args", f"Prompt matrix: joining char must be one of {list(DELIMITERS)}, "
                                            f"got {variations_delimiter!r}")
        processing.fix_seed(p)
        source = p.prompt if prompt_type == "positive" else p.negative_prompt
        original_prompt = source[0] if isinstance(source, list) else source
        positive_prompt = p.prompt[0] if isinstance(p.prompt, list) else p.prompt
        parts, all_prompts = matrix_prompts(original_prompt, bool(put_at_start), DELIMITERS[variations_delimiter])

        p.n_iter = math.ceil(len(all_prompts) / p.batch_size)
        p.do_not_save_grid = True
        state.job_count = p.n_iter
        log.info("Prompt matrix: %d images in %d batches", len(all_prompts), p.n_iter)
        if prompt_type == "positive":
            p.prompt = all_prompts
        else:
            p.negative_prompt = all_prompts
        p.seed = [int(p.seed) + (i if different_seeds else 0) for i in range(len(all_prompts))]
        p.prompt_for_display = positive_prompt
        processed = processing.process_images(p)

        if processed.images and len(processed.images) == len(all_prompts) and \
                images.check_grid_size(processed.images):
            first = processed.images[0]
            grid = images.image_grid(processed.images, p.batch_size, rows=1 << ((len(parts) - 1) // 2))
            grid = images.draw_prompt_matrix(grid, first.width, first.height, parts, int(margin_size or 0))
            processed.images.insert(0, grid)
            processed.index_of_first_image = 1
            processed.infotexts.insert(0, processed.infotexts[0])
            if opts.grid_save:
                # with the first image's infotext (A1111 saves this grid without one)
                images.save_image(grid, p.outpath_grids, "prompt_matrix", extension=opts.grid_format,
                                  prompt=original_prompt, seed=processed.seed, info=processed.infotexts[0],
                                  grid=True, p=p)
        return processed
