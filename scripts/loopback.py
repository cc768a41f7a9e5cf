"""A1111's "Loopback" (img2img): the result of each pass is the init image of the next, `loops` times, the denoising
strength moving from the UI's value to the final one along a curve; with batch count > 1 each batch starts again
from the original image and the last image of each batch is kept; a grid of what was kept comes first. Arguments,
in A1111's order: loops, final_denoising_strength, denoising_curve ("Aggressive"/"Linear"/"Lazy"),
append_interrogation ("None"/"CLIP"/"DeepBooru")."""
import logging
import math

import gradio as gr

from modules import images, processing, scripts, shared
from modules.engine.params import ParamError
from modules.shared import opts, state

log = logging.getLogger("sd.scripts")
WHERE = "script_args"
CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATORS = ("None", "CLIP", "DeepBooru")


def denoising_strength(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """The strength of pass `loop` (0-based): `initial` at 0, `final` at the last, in between along the curve —
    Aggressive rises fast (sine), Lazy late (1 − cosine), Linear evenly."""
    if loops == 1:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        progress = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        progress = 1 - math.cos(progress * math.pi * 0.5)
    return initial + (final - initial) * progress


def interrogate(kind: str, image) -> str:
    """The CLIP or DeepBooru caption of `image` through A1111's names (shared.interrogator, deepbooru.model)."""
    try:
        if kind == "CLIP":
            return shared.interrogator.interrogate(image)
        from modules import deepbooru
        return deepbooru.model.tag(image)
    except (AttributeError, ImportError) as exc:
        raise ParamError(WHERE, f"Loopback: {kind} interrogation is not available here ({exc})") from None


class Script(scripts.Script):
    def title(self):
        return "Loopback"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        loops = gr.Slider(minimum=1, maximum=32, step=1, label="Loops", value=4, elem_id=self.elem_id("loops"))
        final_denoising_strength = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength",
                                             value=0.5, elem_id=self.elem_id("final_denoising_strength"))
        denoising_curve = gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear")
        append_interrogation = gr.Dropdown(label="Append interrogated prompt at each iteration",
                                           choices=list(INTERROGATORS), value="None")
        return [loops, final_denoising_strength, denoising_curve, append_interrogation]

    def run(self, p, loops, final_denoising_strength, denoising_curve, append_interrogation):
        if denoising_curve not in CURVES:
            raise ParamError(WHERE, f"Loopback: denoising strength curve must be one of {list(CURVES)}, "
                                    f"got {denoising_curve!r}")
        if append_interrogation not in INTERROGATORS:
            raise ParamError(WHERE, f"Loopback: append interrogated prompt must be one of {list(INTERROGATORS)}, "
                                    f"got {append_interrogation!r}")
        loops, final = int(loops), float(final_denoising_strength)
        if not 1 <= loops <= 32 or not 0 <= final <= 1:
            raise ParamError(WHERE, f"Loopback: loops must be 1..32 and the final denoising strength 0..1, got "
                                    f"{loops} and {final}")
        if not p.init_images:
            raise ParamError("init_images", "Loopback needs an init image")
        processing.fix_seed(p)
        batch_count = p.n_iter
        p.extra_generation_params = {"Final denoising strength": final, "Denoising curve": denoising_curve}
        p.batch_size = p.n_iter = 1
        p.do_not_save_grid = True
        initial_strength = 0.75 if p.denoising_strength is None else p.denoising_strength
        original_init, original_prompt, original_fill = p.init_images, p.prompt, p.inpainting_fill
        state.job_count = loops * batch_count

        history, kept, texts, seeds = [], [], [], []
        initial_seed, initial_info = None, None
        for n in range(batch_count):
            p.init_images, p.denoising_strength = original_init, initial_strength
            last, last_text, last_seed = None, None, None
            for i in range(loops):
                if append_interrogation != "None":
                    p.prompt = (f"{original_prompt}, " if original_prompt else "") + \
                        interrogate(append_interrogation, p.init_images[0])
                state.job = f"Iteration {i + 1}/{loops}, batch {n + 1}/{batch_count}"
                p.all_seeds = p.all_subseeds = None
                processed = processing.process_images(p)
                if state.interrupted or not processed.images:
                    break
                if initial_seed is None:
                    initial_seed, initial_info = processed.seed, processed.info
                p.seed = processed.seed + 1
                p.denoising_strength = denoising_strength(i + 1, loops, initial_strength, final, denoising_curve)
                if state.skipped:
                    break
                last, last_text, last_seed = processed.images[0], processed.infotexts[0], processed.seed
                p.init_images = [last]
                p.inpainting_fill = 1       # "original" from the second pass on: the masked part is the last result
                if batch_count == 1:
                    history.append(last)
                    kept.append(last)
                    texts.append(last_text)
                    seeds.append(last_seed)
            if batch_count > 1 and last is not None and not state.skipped and not state.interrupted:
                history.append(last)
                kept.append(last)
                texts.append(last_text)
                seeds.append(last_seed)
            p.inpainting_fill = original_fill
            if state.interrupted:
                break

        p.prompt = original_prompt
        result = processing.Processed(p, kept, initial_seed if initial_seed is not None else p.seed,
                                      initial_info or "", all_prompts=[p.prompt] * len(kept),
                                      all_negative_prompts=[p.negative_prompt] * len(kept), all_seeds=seeds,
                                      infotexts=texts)
        if len(history) > 1:
            grid = images.image_grid(history, rows=1)
            if opts.grid_save:
                images.save_image(grid, p.outpath_grids, "grid", initial_seed, p.prompt, opts.grid_format,
                                  info=initial_info, short_filename=not opts.grid_extended_filename, grid=True, p=p)
            if opts.return_grid:
                result.images.insert(0, grid)
                result.infotexts.insert(0, initial_info)
                result.index_of_first_image = 1
        return result
