"""A1111's prompt syntax as pure functions: emphasis, prompt editing/alternation, AND, extra networks and styles.

Everything here is plain string work (no torch) and never raises on a malformed prompt: syntax that does not parse
is kept as literal text, as A1111 does.

A1111 parses prompt editing with a `lark` grammar. `lark` is not installed in this project's venv and the grammar is
small and unambiguous enough that a hand-written recursive-descent parser (below) reproduces it exactly without
adding a dependency, so that is what is used here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

__all__ = ["parse_attention", "prompt_schedules", "split_and", "strip_extra_networks", "apply_style",
           "BREAK_ITEM"]

BREAK_ITEM: tuple[str, float] = ("BREAK", -1.0)

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# ---------------------------------------------------------------------------------------------------------------------
# Emphasis
# ---------------------------------------------------------------------------------------------------------------------

_WEIGHT_CLOSER = re.compile(r":\s*([+-]?[.\d]+)\s*\)")   # ":1.3)" closes the latest "(" with that weight
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_SPECIAL = "\\()[]:"
_ESCAPABLE = "()[]\\"


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Splits a prompt (already free of prompt-editing syntax) into (text, weight) runs.

    `(a)` multiplies by 1.1, `[a]` divides by 1.1, `(a:1.3)` multiplies by 1.3; nesting multiplies. `\\(` `\\)` `\\[`
    `\\]` `\\\\` are literal characters, a lone backslash before any other character is dropped (as in A1111).
    Groups still open at the end apply to the rest of the text; a stray `)` or `]` is literal. `BREAK` as a word
    becomes the marker item ("BREAK", -1.0), which emphasis never changes. Adjacent runs of equal weight are merged.
    """
    # items are [text, weight, is_break]
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for item in res[start:]:
            if not item[2]:
                item[1] *= multiplier

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK.split(chunk)):
            if i > 0:
                res.append([BREAK_ITEM[0], BREAK_ITEM[1], True])
            res.append([part, 1.0, False])

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 < n and text[i + 1] in _ESCAPABLE:
                res.append([text[i + 1], 1.0, False])
                i += 2
            else:
                i += 1  # A1111 drops a backslash that escapes nothing
        elif c == "(":
            round_open.append(len(res))
            i += 1
        elif c == "[":
            square_open.append(len(res))
            i += 1
        elif c == ")":
            if round_open:
                multiply_from(round_open.pop(), ROUND_MULTIPLIER)
            else:
                res.append([")", 1.0, False])
            i += 1
        elif c == "]":
            if square_open:
                multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
            else:
                res.append(["]", 1.0, False])
            i += 1
        elif c == ":":
            m = _WEIGHT_CLOSER.match(text, i)
            if m is None:
                res.append([":", 1.0, False])
                i += 1
                continue
            weight = _to_float(m.group(1))
            if weight is not None and round_open:
                multiply_from(round_open.pop(), weight)
            else:  # no "(" to close, or a "weight" such as "." or "1.2.3": the whole match is literal text
                add_text(m.group(0))
            i = m.end()
        else:
            j = i + 1
            while j < n and text[j] not in _SPECIAL:
                j += 1
            add_text(text[i:j])
            i = j

    for pos in round_open:
        multiply_from(pos, ROUND_MULTIPLIER)
    for pos in square_open:
        multiply_from(pos, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for item in res:
        if not item[2] and item[0] == "":
            continue  # empty runs carry no tokens
        if merged and not item[2] and not merged[-1][2] and merged[-1][1] == item[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    if not merged:
        return [("", 1.0)]
    return [(t, float(w)) for t, w, _ in merged]


def _to_float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Prompt editing [from:to:when] and alternation [a|b]
# ---------------------------------------------------------------------------------------------------------------------
# A1111's grammar (lark, Earley):
#   start:     (prompt | /[][():]/+)*                 stray brackets and colons are literal only at the top level
#   prompt:    (emphasized | scheduled | alternate | plain | WHITESPACE)*
#   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"   (kept as text for parse_attention)
#   scheduled: "[" [prompt ":"] prompt ":" [WS] SIGNED_NUMBER [WS] "]"
#   alternate: "[" prompt ("|" [prompt])+ "]"
#   plain:     /([^\\\[\]():|]|\\.)+/
# A prompt the grammar rejects as a whole (a "|" outside brackets, a backslash at the very end) is not scheduled at
# all: A1111 then uses it unchanged for every step.

_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)\s*\]")


@dataclass
class _Scheduled:
    before: list | None
    after: list
    when_text: str
    when: int = 0          # resolved step, set once the number of steps is known


@dataclass
class _Alternate:
    options: list[list] = field(default_factory=list)


_Node = Union[str, _Scheduled, _Alternate]


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.n = len(text)
        self.memo: dict[int, tuple[list[_Node], int] | None] = {}  # a construct at i parses the same everywhere

    def prompt(self, i: int) -> tuple[list[_Node], int]:
        """The longest `prompt` from i: plain text and well-formed bracket constructs. Stops at anything else."""
        s, n = self.s, self.n
        nodes: list[_Node] = []
        buf: list[str] = []
        while i < n:
            c = s[i]
            if c == "\\":
                if i + 1 < n and s[i + 1] != "\n":
                    buf.append(s[i:i + 2])
                    i += 2
                    continue
                break
            if c in "([":
                parsed = self.construct(i)
                if parsed is None:
                    break
                got, i = parsed
                if buf:
                    nodes.append("".join(buf))
                    buf = []
                nodes.extend(got)
                continue
            if c in ")]:|":
                break
            buf.append(c)
            i += 1
        if buf:
            nodes.append("".join(buf))
        return nodes, i

    def construct(self, i: int) -> tuple[list[_Node], int] | None:
        if i not in self.memo:
            self.memo[i] = self._construct(i)
        return self.memo[i]

    def _construct(self, i: int) -> tuple[list[_Node], int] | None:
        s, n = self.s, self.n
        if s[i] == "(":
            first, j = self.prompt(i + 1)
            if j < n and s[j] == ")":
                return ["(", *first, ")"], j + 1
            if j < n and s[j] == ":":
                second, k = self.prompt(j + 1)
                if k < n and s[k] == ")":
                    return ["(", *first, ":", *second, ")"], k + 1
            return None

        first, j = self.prompt(i + 1)
        if j >= n:
            return None
        if s[j] == "]":
            return ["[", *first, "]"], j + 1
        if s[j] == "|":
            options = [first]
            while j < n and s[j] == "|":
                opt, j = self.prompt(j + 1)
                options.append(opt)
            if j < n and s[j] == "]":
                return [_Alternate(options)], j + 1
            return None
        if s[j] == ":":
            m = _NUMBER.match(s, j + 1)
            if m:                                   # [to:when]
                return [_Scheduled(None, first, m.group(1))], m.end()
            second, k = self.prompt(j + 1)          # [from:to:when]
            if k < n and s[k] == ":":
                m = _NUMBER.match(s, k + 1)
                if m:
                    return [_Scheduled(first, second, m.group(1))], m.end()
        return None

    def start(self) -> list[_Node] | None:
        nodes: list[_Node] = []
        i = 0
        while i < self.n:
            got, i = self.prompt(i)
            nodes.extend(got)
            if i < self.n:
                if self.s[i] in "[]():":
                    nodes.append(self.s[i])
                    i += 1
                else:
                    return None
        return nodes


def _walk(nodes: list[_Node]):
    for node in nodes:
        yield node
        if isinstance(node, _Scheduled):
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            for opt in node.options:
                yield from _walk(opt)


def _resolve_when(when_text: str, steps: int, old_scheduling: bool, int_offset: int, flt_offset: float) -> int:
    v = float(when_text)
    if old_scheduling:
        v = v * steps if v < 1 else v
    elif "." in when_text:
        v = (v - flt_offset) * steps
    else:
        v = v - int_offset
    return min(steps, int(v))


def _text_at(nodes: list[_Node], step: int) -> str:
    out: list[str] = []

    def emit(ns: list[_Node]) -> None:
        for node in ns:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Scheduled):
                emit((node.before or []) if step <= node.when else node.after)
            else:
                emit(node.options[(step - 1) % len(node.options)])

    emit(nodes)
    return "".join(out)


def _schedule(prompt: str, steps: int, old_scheduling: bool, int_offset: int, flt_offset: float
              ) -> list[tuple[int, str]]:
    try:
        tree = _Parser(prompt).start()
        if tree is None:
            return [(steps, prompt)]
        boundaries = {steps}
        for node in _walk(tree):
            if isinstance(node, _Scheduled):
                node.when = _resolve_when(node.when_text, steps, old_scheduling, int_offset, flt_offset)
                if node.when >= 1:
                    boundaries.add(node.when)
            elif isinstance(node, _Alternate):
                boundaries.update(range(1, steps + 1))
        res: list[tuple[int, str]] = []
        for step in sorted(boundaries):
            text = _text_at(tree, step)
            if res and res[-1][1] == text:
                res[-1] = (step, text)   # same text as before: extend the previous entry
            else:
                res.append((step, text))
        return res
    except (RecursionError, OverflowError, ValueError):
        # absurdly deep nesting or a number like 1e999: used unchanged, like any prompt the grammar rejects
        return [(steps, prompt)]


def prompt_schedules(prompts: list[str], steps: int, *, hires_steps: int | None = None,
                     use_old_scheduling: bool = True) -> list[list[tuple[int, str]]]:
    """For each prompt, [(end_step, text), ...]: `text` is the prompt for steps up to end_step (inclusive), the
    entries covering steps 1..steps (the last end_step is always `steps`).

    `[from:to:when]` switches at `when`, `[to:when]` adds, `[from::when]` removes; `[a|b|c]` alternates every step.
    With the default rule a `when` below 1 is a fraction of the steps (int(when*steps)), otherwise a step number.
    use_old_scheduling=False is A1111's newer rule: a number with a "." is a fraction (1.0 = all steps) and, for the
    hires pass (hires_steps given), integers count from the start of the base pass and fractions from 1.0.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, total = 0, 0.0, steps
    else:
        int_offset, flt_offset, total = steps, 1.0, hires_steps
    total = max(1, int(total))
    cache: dict[str, list[tuple[int, str]]] = {}
    out = []
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = _schedule(prompt, total, use_old_scheduling, int_offset, flt_offset)
        out.append(list(cache[prompt]))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Composable diffusion (AND), extra networks, styles
# ---------------------------------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


def split_and(prompt: str) -> list[tuple[str, float]]:
    """"a cat AND a dog:0.5" -> [("a cat", 1.0), ("a dog", 0.5)]. Splits on the word AND (uppercase, as A1111's
    \\bAND\\b); a trailing ":number" is the sub-prompt's weight, anything else (e.g. "(a dog:0.5)") stays text."""
    res: list[tuple[str, float]] = []
    for sub in _AND.split(prompt):
        m = _SUBPROMPT_WEIGHT.match(sub)
        text, weight = (m.group(1), m.group(2)) if m else (sub, None)
        w = _to_float(weight) if weight is not None else None
        res.append((text.strip(), 1.0 if w is None else w))
    return res


_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def strip_extra_networks(prompt: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Removes every `<kind:arg1:arg2...>` (lora, lyco, hypernet, ...) from the prompt, as A1111 does, returning the
    remaining text (whitespace untouched) and [(kind, [args...]), ...] in order of appearance."""
    found: list[tuple[str, list[str]]] = []

    def take(m: re.Match) -> str:
        found.append((m.group(1), m.group(2).split(":")))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


def apply_style(prompt: str, style_prompt: str) -> str:
    """A1111's merge_prompts: `{prompt}` in the style is replaced by the prompt, otherwise "prompt, style"."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(p for p in (prompt.strip(), style_prompt.strip()) if p)
