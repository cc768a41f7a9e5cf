"""A1111's `shared.state`, as a view of the running job's JobState instead of a second progress record.

Inside a queued job (a script's hooks, an extension call run on the queue) every flag and counter is the job's own
JobState: a script that checks `state.interrupted` sees the user's Interrupt, and one that sets `state.job_count`
moves our progress bar. Outside a job, an extension that brackets its own work with `state.begin()` / `state.end()`
gets a JobState of its own for that time (begin/end may nest; an extra end() does nothing). With neither, reads
return an idle state.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from modules.jobs import JobState

log = logging.getLogger("sd.extensions")

# A1111 attribute → our JobState attribute
_FORWARDED = {name: name for name in (
    "job", "job_no", "job_count", "sampling_step", "sampling_steps", "interrupted", "skipped", "stopping_generation",
    "job_timestamp", "textinfo", "current_latent", "current_image", "time_start")}
_FORWARDED["current_image_sampling_step"] = "current_image_step"


class State:
    def __init__(self, runtime: Callable[[], Any]):
        self._runtime = runtime
        self._lock = threading.RLock()
        self._depth = 0
        self._local = JobState(id="idle")
        self.server_start = time.time()
        self.server_command: str | None = None
        self.id_live_preview = 0
        self.processing_has_refined_job_count = False

    # --- which JobState -------------------------------------------------------------------------------------------
    def _queue_job(self):
        rt = self._runtime()
        queue = getattr(rt, "queue", None)
        return getattr(queue, "current", None), getattr(queue, "_worker", None)

    def _in_job(self) -> JobState | None:
        """The running job's state when called from the job's own thread."""
        job, worker = self._queue_job()
        if job is not None and threading.current_thread() is worker:
            return job.state
        return None

    def target(self) -> JobState:
        """The JobState that A1111's fields read and write now."""
        in_job = self._in_job()
        if in_job is not None:
            return in_job
        if self._depth > 0:
            return self._local
        job, _worker = self._queue_job()
        return job.state if job is not None else self._local

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in _FORWARDED:
            raise AttributeError(f"shared.state has no attribute {name!r}")
        return getattr(self.target(), _FORWARDED[name])

    def __setattr__(self, name: str, value) -> None:
        if name in _FORWARDED:
            setattr(self.target(), _FORWARDED[name], value)
        else:
            object.__setattr__(self, name, value)

    # --- A1111's methods ------------------------------------------------------------------------------------------
    def begin(self, job: str = "(unknown)") -> None:
        """Inside a queued job the job's own state is kept (its flags must survive); outside, the outermost begin
        starts a fresh state for the caller's work."""
        if self._in_job() is not None:
            return
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._local = JobState(id=f"extension-{int(time.time() * 1000)}", job=job,
                                       time_start=time.perf_counter())
                self.id_live_preview = 0

    def end(self) -> None:
        if self._in_job() is not None:
            return
        with self._lock:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth == 0:
                started = self._local.time_start
                self._local.job = ""
                self._local.job_count = 0
                if started is not None:
                    log.debug("shared.state job took %.2f s", time.perf_counter() - started)

    def nextjob(self) -> None:
        target = self.target()
        target.job_no += 1
        target.sampling_step = 0
        target.current_image_step = 0

    def interrupt(self) -> None:
        self.target().interrupt()

    def skip(self) -> None:
        self.target().skip()

    def stop_generating(self) -> None:
        self.target().stopping_generation = True

    def assign_current_image(self, image) -> None:
        self.target().current_image = image
        self.id_live_preview += 1

    def set_current_image(self) -> None:
        """A1111 decodes a live preview here; ours are made by the engine as it samples."""

    def do_set_current_image(self) -> None:
        """See set_current_image."""

    def request_restart(self) -> None:
        """A1111 restarts the server; we have no in-process restart, so the request is recorded and the running job
        interrupted, and the user restarts."""
        self.interrupt()
        self.server_command = "restart"
        log.warning("an extension asked for a server restart; restart the web UI to apply its changes")

    def dict(self) -> dict:
        return self.target().to_api()

    @property
    def __dict__(self) -> dict:  # noqa: A003 - vars(shared.state) is what system-info dumps as JSON
        target = self.target()
        return {**target.to_api(), "textinfo": target.textinfo, "time_start": target.time_start,
                "current_image_sampling_step": target.current_image_step, "id_live_preview": self.id_live_preview,
                "server_start": self.server_start, "server_command": self.server_command}
