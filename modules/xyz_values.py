"""The value syntax of the X/Y/Z plot's axes (A1111's): comma-separated values read as CSV (so "a, b" and
"\"x, y\", z" both work), and ranges for number axes:

    1-5          1, 2, 3, 4, 5                (integers: every step of 1)
    1-10 (+3)    1, 4, 7, 10                  (a step in parentheses, may be negative: 10-1 (-3))
    1-10 [4]     1, 4, 7, 10                  (a count in brackets: evenly spaced, ends included)
    0.5-1 (+0.25) 0.5, 0.75, 1.0              (floats: the end is included when a step lands on it)
    0.5-1.0 [3]  0.5, 0.75, 1.0

Kept apart from the script so the table test needs no model, no UI and no runtime.
"""
from __future__ import annotations

import csv
import io
import re

import numpy as np

_INT = r"([+-]?\s*\d+)"
_FLOAT = r"([+-]?\s*\d+(?:\.\d*)?)"
RANGE_INT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_INT_COUNT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}\s*\[(\d+)\s*\]\s*")
RANGE_FLOAT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RANGE_FLOAT_COUNT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}\s*\[(\d+(?:\.\d*)?)\s*\]\s*")


def split_csv(text: str) -> list[str]:
    """The comma-separated values of one axis (CSV quoting honoured), each stripped; empty items dropped."""
    if not text or not text.strip():
        return []
    rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    return [item.strip() for row in rows for item in row if item.strip()]


def join_csv(values: list) -> str:
    """Values as one CSV line (quoted where needed): the text an axis's value box shows for them."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([str(v) for v in values])
    return buf.getvalue()


def _number(text: str) -> str:
    return text.replace(" ", "")


def expand_ints(items: list[str]) -> list:
    """Integer ranges expanded; other items kept as written (the axis type converts or rejects them)."""
    out: list = []
    for item in items:
        m = RANGE_INT.fullmatch(item)
        mc = RANGE_INT_COUNT.fullmatch(item)
        if m is not None:
            start, end = int(_number(m.group(1))), int(_number(m.group(2)))
            step = int(m.group(3)) if m.group(3) is not None else 1
            if step == 0:
                raise ValueError(f"{item!r}: the step must not be 0")
            out += list(range(start, end + (1 if step > 0 else -1), step))
        elif mc is not None:
            start, end, count = int(_number(mc.group(1))), int(_number(mc.group(2))), int(mc.group(3))
            out += [int(x) for x in np.linspace(start, end, count).tolist()]
        else:
            out.append(item)
    return out


def expand_floats(items: list[str]) -> list:
    """Float ranges expanded (values rounded to 8 digits, so 0.1 steps do not print as 0.30000000000000004)."""
    out: list = []
    for item in items:
        m = RANGE_FLOAT.fullmatch(item)
        mc = RANGE_FLOAT_COUNT.fullmatch(item)
        if m is not None:
            start, end = float(_number(m.group(1))), float(_number(m.group(2)))
            step = float(m.group(3)) if m.group(3) is not None else 1.0
            if step == 0:
                raise ValueError(f"{item!r}: the step must not be 0")
            count = int(np.floor((end - start) / step + 1e-9)) + 1
            out += [round(start + i * step, 8) for i in range(max(count, 0))]
        elif mc is not None:
            start, end, count = float(_number(mc.group(1))), float(_number(mc.group(2))), int(float(mc.group(3)))
            out += [round(x, 8) for x in np.linspace(start, end, count).tolist()]
        else:
            out.append(item)
    return out
