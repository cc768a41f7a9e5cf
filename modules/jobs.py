"""The one job queue that both faces submit to: first in, first out, one job on the device at a time.

A queued job is data: a kind ("txt2img", "load_model", ...) and a serialisable payload (parameters without live
objects, images as PNG bytes). The queue hands both to the executor it was given — the runtime's, which looks the
kind up in modules/job_executors.py — so a remote worker can later run the same function on the same payload.

Each job carries a JobState that the engine updates every step (progress, ETA, live preview) and checks for
interrupt/skip, so both the UI and GET /sdapi/v1/progress read the same numbers.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("sd.jobs")
FINISHED_KEPT = 100


class Interrupted(Exception):
    """Raised inside the engine when the user interrupts; the images finished so far are kept."""


@dataclass
class JobState:
    id: str
    job: str = ""
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False
    stopping_generation: bool = False
    job_timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    time_start: float | None = None
    textinfo: str | None = None
    current_latent: Any = None
    current_image: Any = None
    current_image_step: int = -1

    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def progress(self) -> float:
        """Fraction done across all images of the job."""
        if self.job_count <= 0 or self.sampling_steps <= 0:
            return 0.0
        per_job = 1.0 / self.job_count
        return min(1.0, self.job_no * per_job + per_job * self.sampling_step / self.sampling_steps)

    def eta(self) -> float | None:
        p = self.progress()
        if self.time_start is None or p <= 0:
            return None
        elapsed = time.perf_counter() - self.time_start
        return elapsed / p - elapsed

    def to_api(self) -> dict:
        return {"skipped": self.skipped, "interrupted": self.interrupted,
                "stopping_generation": self.stopping_generation, "job": self.job, "job_count": self.job_count,
                "job_timestamp": self.job_timestamp, "job_no": self.job_no, "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps}


Executor = Callable[[str, dict, JobState], Any]


class QueuedJob:
    def __init__(self, kind: str, payload: dict, job_id: str | None = None):
        self.kind, self.payload = kind, payload
        self.state = JobState(id=job_id or f"task({uuid.uuid4().hex[:15]})", job=kind)
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.queued_at = time.perf_counter()

    def wait(self, timeout: float | None = None) -> Any:
        if not self.done.wait(timeout):
            raise TimeoutError(f"job {self.state.id} did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


class JobQueue:
    def __init__(self, execute: Executor):
        self.execute = execute
        self._queue: queue.Queue[QueuedJob] = queue.Queue()
        self._pending: dict[str, QueuedJob] = {}
        self._finished: dict[str, QueuedJob] = {}  # recent finished jobs, for progress polling by id
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.current: QueuedJob | None = None
        self.last: QueuedJob | None = None
        self._worker = threading.Thread(target=self._run, name="job-worker", daemon=True)
        self._worker.start()

    def submit(self, kind: str, payload: dict | None = None, job_id: str | None = None) -> QueuedJob:
        job = QueuedJob(kind, payload or {}, job_id)
        with self._lock:
            self._pending[job.state.id] = job
        self._queue.put(job)
        return job

    def run(self, kind: str, payload: dict | None = None, job_id: str | None = None) -> Any:
        """Submit and wait: the usual call from a request handler."""
        return self.submit(kind, payload, job_id).wait()

    def find(self, job_id: str) -> QueuedJob | None:
        with self._lock:
            return self._pending.get(job_id) or self._finished.get(job_id)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            self.current = job
            job.state.time_start = time.perf_counter()
            try:
                job.result = self.execute(job.kind, job.payload, job.state)
            except BaseException as exc:  # a failed job must never stop the worker
                job.error = exc
                if not isinstance(exc, (ValueError, KeyError, Interrupted)):
                    log.error("job %s failed:\n%s", job.state.id, traceback.format_exc())
            finally:
                with self._lock:
                    self._pending.pop(job.state.id, None)
                    self._finished[job.state.id] = job
                    while len(self._finished) > FINISHED_KEPT:
                        self._finished.pop(next(iter(self._finished)))
                self.last = job
                self.current = None
                job.done.set()

    def interrupt_current(self) -> None:
        job = self.current
        if job is not None:
            job.state.interrupt()

    def skip_current(self) -> None:
        job = self.current
        if job is not None:
            job.state.skip()
