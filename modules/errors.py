"""A1111's `modules.errors`: how extensions report problems (logged to the console, the last few kept for the
system-info page and /internal/sysinfo-style dumps)."""
from __future__ import annotations

import logging
import sys
import textwrap
import traceback

log = logging.getLogger("sd.extensions")

exception_records: list[dict] = []
already_displayed: dict[str, int] = {}
KEPT = 5


def format_traceback(tb) -> list[list[str]]:
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line or ""]
            for frame in traceback.extract_tb(tb)]


def format_exception(e: BaseException, tb) -> dict:
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions() -> list[dict]:
    """The last few exceptions reported, newest first."""
    return list(reversed(exception_records))


def record_exception() -> None:
    _, e, tb = sys.exc_info()
    if e is None:
        return
    record = format_exception(e, tb)
    if exception_records and exception_records[-1] == record:
        return
    exception_records.append(record)
    del exception_records[:-KEPT]


def report(message: str, exc_info: bool = False) -> None:
    """Logs `message` (and, with exc_info, the exception being handled)."""
    record_exception()
    text = "\n".join(f"*** {line}" for line in message.splitlines())
    if exc_info:
        text += "\n" + textwrap.indent(traceback.format_exc(), "    ")
    log.error("%s", text)


def print_error_explanation(message: str) -> None:
    record_exception()
    lines = message.strip().split("\n")
    rule = "=" * max(len(line) for line in lines)
    log.error("%s", "\n".join([rule, *lines, rule]))


def display(e: BaseException, task, *, full_traceback: bool = False) -> None:
    """Logs the exception `e` raised while doing `task`."""
    record_exception()
    te = traceback.TracebackException.from_exception(e)
    if full_traceback:
        te.stack = traceback.StackSummary(traceback.extract_stack()[:-2] + list(te.stack))
    log.error("%s: %s\n%s", task or "error", type(e).__name__, "".join(te.format()))


def display_once(e: BaseException, task) -> None:
    record_exception()
    if task in already_displayed:
        return
    display(e, task)
    already_displayed[task] = 1


def run(code, task) -> None:
    """Calls `code()`; an exception is displayed, not raised."""
    try:
        code()
    except Exception as e:  # noqa: BLE001 - that is the point
        display(e, task)


def check_versions() -> None:
    """A1111 warns about torch/xformers/gradio versions here; our launcher pins them."""
