"""A1111's `modules.call_queue`: wrappers extensions put around their Gradio handlers.

`wrap_gradio_gpu_call` runs the handler as a job on our one job queue (kind "extension_call"), so an extension's
GPU work waits for the running generation instead of sharing the device with it, shows in the progress API, and
sees the user's Interrupt through shared.state. Such a job carries a function, so it runs in this process only.
`wrap_gradio_call` turns an exception into an error line in the handler's last output, as A1111 does.
"""
from __future__ import annotations

import functools
import html
import threading
import time

from modules import errors, shared

queue_lock = threading.RLock()
JOB_KIND = "extension_call"


def wrap_queued_call(func):
    """func, called while holding queue_lock (A1111's way of keeping two callers off the model at once)."""
    @functools.wraps(func)
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)
    return f


def _execute(rt, payload: dict, state):
    func, args, kwargs = payload["call"]
    with queue_lock:
        return func(*args, **kwargs)


def run_queued(func, args: tuple = (), kwargs: dict | None = None, task_id: str | None = None):
    """Runs func(*args, **kwargs) as a job on the runtime's queue and returns its result (at once, under
    queue_lock, when there is no runtime or when already inside a job)."""
    kwargs = kwargs or {}
    if not shared.bound() or shared.on_job_thread():
        with queue_lock:
            return func(*args, **kwargs)
    rt = shared.runtime()
    rt.executors.setdefault(JOB_KIND, _execute)
    job = rt.queue.submit(JOB_KIND, {"call": (func, args, kwargs)}, task_id)
    return job.wait()


def wrap_gradio_gpu_call(func, extra_outputs=None):
    """A1111: the handler as a queued job; a first argument "task(<id>)" becomes the job's id (the page polls
    progress by it)."""
    name = getattr(func, "__name__", "extension call")

    @functools.wraps(func)
    def f(*args, **kwargs):
        task_id = args[0] if args and isinstance(args[0], str) and args[0].startswith("task(") \
            and args[0].endswith(")") else None
        return run_queued(func, args, kwargs, task_id)

    f.__name__ = name
    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats: bool = False):
    """func's outputs as a tuple; on an exception, `extra_outputs` (default [None, '']) and an error line."""
    @functools.wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        start = time.perf_counter()
        try:
            res = func(*args, **kwargs)
            res = list(res) if isinstance(res, (list, tuple)) else [res]
        except Exception as e:  # noqa: BLE001 - the UI shows the error instead of failing the event
            errors.report(f"Error completing request\nArguments: {args!r:.500} {kwargs!r:.500}", exc_info=True)
            outputs = [None, ""] if extra_outputs_array is None else list(extra_outputs_array)
            res = outputs + [f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]
        if add_stats and res and isinstance(res[-1], str):
            res[-1] += (f"<div class='performance'><p class='time'>Time taken: <span class='measurement'>"
                        f"{time.perf_counter() - start:.1f} s</span></p></div>")
        return tuple(res)
    return f
