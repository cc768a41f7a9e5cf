"""A1111's "Prompts from file or textbox": one generation per line of the text (typed, or read from an uploaded
file), each line a prompt or A1111's command-line style options (`--prompt "a cat" --steps 30 --seed 5`).
Arguments, in A1111's order: checkbox_iterate, checkbox_iterate_batch, prompt_position ("start"/"end"),
prompt_txt.

Unlike A1111, which logs a line it cannot parse and then uses the whole line as the prompt, a bad option stops the
job before anything runs, with an error naming the line, the option and what is allowed."""
import copy
import logging
import random
import shlex

import gradio as gr

from modules import processing, scripts, shared
from modules.engine import samplers
from modules.engine.params import BY_NAME, ParamError
from modules.shared import state

log = logging.getLogger("sd.scripts")
WHERE = "script_args"
TITLE = "Prompts from file or textbox"


def _string(value: str) -> str:
    return value


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return value.lower() == "true"


def _styles(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _sampler(value: str) -> str:
    try:
        samplers.resolve(value, None)   # checked here; kept as written ("DPM++ 2M Karras" keeps its schedule)
        return value
    except samplers.SamplerError:
        raise ValueError(f"unknown sampler; choose one of {samplers.sampler_names()}") from None


def _scheduler(value: str) -> str:
    name = samplers.canonical_schedule(value)
    if name is None:
        raise ValueError(f"unknown schedule type; choose one of {list(samplers.SCHEDULES)}")
    return name


def _checkpoint(value: str) -> str:
    from modules import sd_models
    info = sd_models.get_closet_checkpoint_match(value)
    if info is None:
        raise ValueError(f"no checkpoint matches it; checkpoints: {shared.list_checkpoint_tiles()}")
    return info.filename


# A1111's line options and how each value is read (--prompt and --negative_prompt take the words up to the next
# option); "scheduler" is ours, for the schedule type A1111 keeps apart from the sampler since v1.9
PROMPT_TAGS = {
    "sd_model": _checkpoint, "outpath_samples": _string, "outpath_grids": _string, "prompt_for_display": _string,
    "prompt": _string, "negative_prompt": _string, "styles": _styles, "seed": _int, "subseed_strength": _float,
    "subseed": _int, "seed_resize_from_h": _int, "seed_resize_from_w": _int, "sampler_index": _int,
    "sampler_name": _sampler, "scheduler": _scheduler, "batch_size": _int, "n_iter": _int, "steps": _int,
    "cfg_scale": _float, "width": _int, "height": _int, "restore_faces": _bool, "tiling": _bool,
    "do_not_save_samples": _bool, "do_not_save_grid": _bool,
}
TYPE_NAMES = {_string: "text", _styles: "style names", _int: "an integer", _float: "a number", _bool: "true or false",
              _sampler: "a sampler name", _scheduler: "a schedule type", _checkpoint: "a checkpoint name"}


def cmdargs(line: str) -> dict:
    """A line's options as {name: value}; ValueError naming the option when one is unknown or its value wrong."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"cannot split the line into options ({exc})") from None
    result, pos = {}, 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise ValueError(f"{word!r} is not an option: options start with \"--\"")
        tag = word[2:]
        if tag not in PROMPT_TAGS:
            raise ValueError(f"unknown option {word}; options: {', '.join('--' + t for t in PROMPT_TAGS)}")
        if pos + 1 >= len(words):
            raise ValueError(f"option {word} has no value")
        if tag in ("prompt", "negative_prompt"):
            end = pos + 2
            while end < len(words) and not words[end].startswith("--"):
                end += 1
            result[tag] = " ".join(words[pos + 1:end])
            pos = end
            continue
        reader = PROMPT_TAGS[tag]
        try:
            value = reader(words[pos + 1])
        except ValueError as exc:
            detail = str(exc) if reader in (_sampler, _scheduler, _checkpoint, _bool) \
                else f"expected {TYPE_NAMES[reader]}"
            raise ValueError(f"option {word} {words[pos + 1]!r}: {detail}") from None
        field = BY_NAME.get(tag)
        if field is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and \
                tag not in ("seed", "subseed") and (
                field.minimum is not None and value < field.minimum or
                field.maximum is not None and value > field.maximum):
            raise ValueError(f"option {word} {value}: must be between {field.minimum:g} and {field.maximum:g}")
        result[tag] = value
        pos += 2
    return result


def parse_lines(text: str) -> list[dict]:
    """One {option: value} per non-empty line; a line without "--" is a prompt. ParamError names the bad line."""
    jobs = []
    lines = [line.strip() for line in (text or "").splitlines()]
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        if "--" not in line:
            jobs.append({"prompt": line})
            continue
        try:
            jobs.append(cmdargs(line))
        except ValueError as exc:
            raise ParamError(WHERE, f"{TITLE}: line {number}: {exc}") from None
    return jobs


def load_prompt_file(file):
    """The uploaded file's lines into the textbox (the file widget is emptied again, as A1111 does)."""
    if file is None:
        return None, gr.update()
    data = file if isinstance(file, bytes) else open(getattr(file, "name", file), "rb").read()
    lines = [line.strip() for line in data.decode("utf8", errors="ignore").split("\n")]
    return None, gr.update(value="\n".join(lines), lines=7)


class Script(scripts.Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=2, elem_id=self.elem_id("prompt_txt"))
        file = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))
        file.upload(fn=load_prompt_file, inputs=[file], outputs=[file, prompt_txt], show_progress=False)
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p, checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt):
        if prompt_position not in ("start", "end"):
            raise ParamError(WHERE, f"{TITLE}: 'Insert prompts at the' must be 'start' or 'end', "
                                    f"got {prompt_position!r}")
        jobs = parse_lines(prompt_txt if isinstance(prompt_txt, str) else "")
        if not jobs:
            raise ParamError(WHERE, f"{TITLE}: the list of prompt inputs is empty")
        p.do_not_save_grid = True
        state.job_count = sum(int(job.get("n_iter", p.n_iter)) for job in jobs)
        log.info("%s: %d lines in %d batches", TITLE, len(jobs), state.job_count)
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))

        rt = shared.runtime()
        original_model = p.sd_model
        images, infotexts = [], []
        all_prompts, all_negative_prompts, all_seeds, all_subseeds = [], [], [], []
        try:
            for job in jobs:
                if state.interrupted:
                    break
                state.job = f"{state.job_no + 1} out of {state.job_count}"
                copy_p = copy.copy(p)
                for key, value in job.items():
                    if key != "sd_model":
                        setattr(copy_p, key, value)
                copy_p.sd_model = self._model_for(rt, job.get("sd_model"), original_model)
                if job.get("prompt") and p.prompt:
                    copy_p.prompt = f"{job['prompt']} {p.prompt}" if prompt_position == "start" \
                        else f"{p.prompt} {job['prompt']}"
                if job.get("negative_prompt") and p.negative_prompt:
                    copy_p.negative_prompt = f"{job['negative_prompt']} {p.negative_prompt}" \
                        if prompt_position == "start" else f"{p.negative_prompt} {job['negative_prompt']}"
                processed = processing.process_images(copy_p)
                images += processed.images
                infotexts += processed.infotexts
                count = len(processed.images)
                all_prompts += processed.all_prompts[:count]
                all_negative_prompts += processed.all_negative_prompts[:count]
                all_seeds += processed.all_seeds[:count]
                all_subseeds += processed.all_subseeds[:count]
                if checkbox_iterate:
                    p.seed = p.seed + p.batch_size * p.n_iter
        finally:
            if original_model is not None and rt.models.model is not original_model:
                rt.models.load(original_model.info)
        # the seed shown is the first image's (A1111 gives p.seed, which is -1 when it was random)
        return processing.Processed(p, images, all_seeds[0] if all_seeds else p.seed,
                                    infotexts[0] if infotexts else "", all_prompts=all_prompts,
                                    all_negative_prompts=all_negative_prompts, all_seeds=all_seeds,
                                    all_subseeds=all_subseeds, infotexts=infotexts)

    @staticmethod
    def _model_for(rt, checkpoint: str | None, original):
        """The model a line runs on: its --sd_model (loaded now), else the job's."""
        wanted = checkpoint or (original.info.filename if original is not None else None)
        if wanted is None or (rt.models.model is not None and rt.models.model.info.filename == wanted):
            return rt.models.model or original
        return rt.models.load(rt.models.select(wanted))
