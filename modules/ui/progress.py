"""Progress in the page while a job runs: a bar with step, percentage and ETA, and the live preview.

Gradio-native rather than A1111's polling script: the Generate handler is a generator that submits the job to the
queue and yields the bar every half second until the job is done, then yields the result. The job's id is kept in
the browser's localStorage (gr.BrowserState); on page load a handler looks the id up in the job queue, which keeps
finished jobs with their results, and follows the job again, so a reloaded page gets the bar back and then the
images. Compared with a hand-written fetch loop this needs no JavaScript, goes through Gradio's own queue, auth and
--subpath handling, and reads the very JobState the API's /sdapi/v1/progress reads.
"""
from __future__ import annotations

import base64
import html
import io
import logging
from typing import Callable, Iterator

import gradio as gr

from modules.jobs import Interrupted, QueuedJob as Job
from modules.models.manager import NoModelError

log = logging.getLogger("sd.ui")
POLL_S = 0.5
EXPECTED_ERRORS = (ValueError, KeyError, NoModelError, RuntimeError, OSError, Interrupted)


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02}m"


class ProgressView:
    """Renders one job's progress as HTML; remembers the last encoded preview so it is encoded once per step."""

    def __init__(self, tab: str, queue):
        self.tab = tab
        self.queue = queue
        self._preview: tuple = (None, "")  # (job id, step) → data URI; one tuple, so threads never mix them

    def preview_uri(self, job: Job) -> str:
        st = job.state
        image, step = st.current_image, st.current_image_step
        if image is None:
            return ""
        key = (st.id, step)
        cached_key, uri = self._preview
        if key != cached_key:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            self._preview = (key, uri)
        return uri

    def render(self, job: Job) -> str:
        st = job.state
        running = self.queue.current is job
        fraction = st.progress() if running else 0.0
        if not running:
            text = "Waiting..."
        elif st.sampling_steps <= 0:
            text = "Preparing..."
        else:
            parts = [f"Step {st.sampling_step}/{st.sampling_steps}", f"{fraction:.0%}"]
            if st.job_count > 1:
                parts.insert(0, f"Batch {min(st.job_no + 1, st.job_count)}/{st.job_count}")
            eta = st.eta()
            if eta is not None:
                parts.append(f"ETA: {format_eta(eta)}")
            text = " · ".join(parts)
        if st.textinfo and running:
            text = f"{html.escape(st.textinfo)} · {text}"
        preview = self.preview_uri(job) if running else ""
        image = (f'<img id="{self.tab}_live_preview" class="sd-live-preview" src="{preview}" alt="Live preview" '
                 f'style="display:block;max-width:100%;max-height:360px;margin:8px auto 0;image-rendering:auto">'
                 if preview else "")
        return (
            f'<div class="sd-progress" id="{self.tab}_progressbar" role="progressbar" aria-valuemin="0" '
            f'aria-valuemax="100" aria-valuenow="{fraction * 100:.0f}" data-task-id="{html.escape(st.id)}">'
            f'<div style="position:relative;height:24px;border-radius:6px;overflow:hidden;'
            f'background:var(--block-background-fill,#e5e7eb);border:1px solid var(--border-color-primary,#d1d5db)">'
            f'<div class="sd-progress-fill" style="position:absolute;inset:0 auto 0 0;width:{fraction * 100:.1f}%;'
            f'background:var(--color-accent,#f97316);opacity:0.75"></div>'
            f'<span class="sd-progress-text" style="position:relative;display:block;text-align:center;'
            f'line-height:24px;font-size:0.85em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis">'
            f'{text}</span></div>{image}</div>')


def follow(job: Job, view: ProgressView, finish: Callable[[Job], tuple], n_results: int) -> Iterator[tuple]:
    """Yields (progress html, *results, task id): the bar while the job runs (results unchanged), then an empty
    bar, finish(job)'s results, and an empty task id, so that the page forgets the finished job."""
    skip = tuple(gr.skip() for _ in range(n_results))
    yield (view.render(job), *skip, remembered(job.state.id))
    while not job.done.wait(POLL_S):
        yield (view.render(job), *skip, gr.skip())
    yield ("", *finish(job), remembered(""))


def job_error(job: Job) -> str | None:
    """The failed job's message, readable: the exception's text, never a traceback."""
    return None if job.error is None else error_message(job.error, job.state.id)


def error_message(exc: BaseException, job_id: str = "") -> str:
    """One readable line for a failure, whether it happened when the job was submitted or while it ran."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # CPU RAM or torch's CUDA OOM
        # Only advice that lowers memory here: on a GPU --medvram / --lowvram keep the weights in RAM and move
        # each part in while it runs (modules/models/memory_offload.py), and --no-half / --precision full keep the
        # weights in fp32 instead of fp16 (modules/devices.py); --tiled-vae decodes large images in tiles.
        return ("Out of memory: try a smaller width/height or batch size, or --tiled-vae; on a GPU, start with "
                "--medvram (or --lowvram on 4 GB cards) and without --no-half / --precision full (they double the "
                f"model's memory) ({type(exc).__name__}: {exc})")
    if isinstance(exc, EXPECTED_ERRORS):
        return str(exc) or type(exc).__name__
    log.error("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
    return f"Generation failed: {type(exc).__name__}: {exc}"


def task_state(tab: str) -> gr.BrowserState:
    """The id of the tab's running job, kept in localStorage across page reloads."""
    return gr.BrowserState(remembered(""), storage_key=f"sd_webui_{tab}_task")


def remembered(task_id: str) -> dict:
    # a dict, not the bare id: Gradio's BrowserState does not write falsy values, so "" would never clear the id
    return {"task": task_id}


def reattach_on_load(queue, view: ProgressView, bar: gr.HTML, state: gr.BrowserState, results: list,
                     finish: Callable[[Job], tuple]) -> None:
    """On page load: if the remembered job is still known to the queue, follow it again (bar, then result)."""
    n_results = len(results)

    def reattach(stored):
        task_id = stored.get("task") if isinstance(stored, dict) else None
        job = queue.find(task_id) if task_id else None
        if job is None:  # nothing running, or the server forgot it (a restart): forget the id too
            yield ("", *(gr.skip() for _ in range(n_results)), remembered(""))
            return
        yield from follow(job, view, finish, n_results)

    root = gr.context.Context.root_block  # the Blocks being built: the tab needs no handle on it
    root.load(reattach, [state], [bar, *results, state], show_progress="hidden", concurrency_limit=None)
