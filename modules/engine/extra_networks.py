"""Extra networks in prompts: `<lora:name:w>`, `<lora:name:te_w:unet_w>`, `<lyco:…>`, `<hypernet:name:w>`, several per
prompt. Each batch's prompts are parsed into the job's network list (p.extra_network_data, A1111's shape: kind →
[ExtraNetworkParams]); the handler registered for a kind turns its entries into patches on the job's PatchSet.

Until a kind has a real handler (the extra-networks issue brings LoRA, textual inversion and hypernetworks), the
built-in `Unavailable` handler finds no file for any name, so every name is reported as A1111 reports a missing
network: "Networks not found: a, b" in the job's comments (the UI's status line, the API's info["comments"]).
Nothing is dropped in silence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modules.engine.prompt_parser import strip_extra_networks


@dataclass
class ExtraNetworkParams:
    """One `<kind:a:b:key=value>` occurrence: items as written; positional and named split as A1111 splits them."""
    items: list[str] = field(default_factory=list)

    @property
    def positional(self) -> list[str]:
        return [i for i in self.items if "=" not in i]

    @property
    def named(self) -> dict[str, str]:
        return dict(i.split("=", 1) for i in self.items if "=" in i)


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    text, found = strip_extra_networks(prompt)
    data: dict[str, list[ExtraNetworkParams]] = {}
    for kind, args in found:
        data.setdefault(kind, []).append(ExtraNetworkParams(args))
    return text, data


def parse_prompts(prompts: list[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """A1111's parse_prompts: the prompts without their tokens, and the networks of all of them (A1111 applies one
    set of networks to the whole batch)."""
    stripped, merged = [], {}
    for prompt in prompts:
        text, data = parse_prompt(prompt)
        stripped.append(text)
        for kind, entries in data.items():
            known = merged.setdefault(kind, [])
            known.extend(e for e in entries if e not in known)
    return stripped, merged


class ExtraNetwork:
    """A kind of extra network. `activate` adds patches to p.patches (and p.extra_generation_params entries) for one
    batch; `deactivate` runs after that batch, whatever happened."""
    name = ""

    def activate(self, p, entries: list[ExtraNetworkParams]) -> None:
        """Called for every batch, with [] when the prompts name none of this kind."""
        raise NotImplementedError

    def deactivate(self, p) -> None:
        pass


class Unavailable(ExtraNetwork):
    """A kind whose files cannot be loaded yet: every name is 'not found'."""

    def __init__(self, name: str):
        self.name = name

    def activate(self, p, entries: list[ExtraNetworkParams]) -> None:
        names = [e.positional[0] for e in entries if e.positional]
        if names:
            not_found(p, names)


def not_found(p, names: list[str]) -> None:
    """A1111's report of networks it could not load, once per name per job."""
    missing = getattr(p, "networks_not_found", None)
    if missing is None:
        missing = p.networks_not_found = []
    new = [n for n in names if n not in missing]
    missing.extend(new)
    if new:
        for old in [c for c in p.comments if c.startswith("Networks not found: ")]:
            del p.comments[old]
        p.comment(f"Networks not found: {', '.join(missing)}")


class ExtraNetworkRegistry:
    """Kind → handler, owned by the runtime. A1111's kinds are there from the start; `lyco` is an alias of `lora`
    (A1111's built-in Lora extension handles both)."""

    def __init__(self):
        self.handlers: dict[str, ExtraNetwork] = {}
        self.aliases = {"lyco": "lora"}
        for kind in ("lora", "hypernet"):
            self.register(Unavailable(kind))

    def register(self, handler: ExtraNetwork) -> None:
        self.handlers[handler.name] = handler

    def handler(self, kind: str) -> ExtraNetwork | None:
        return self.handlers.get(self.aliases.get(kind, kind))

    def activate(self, p, data: dict[str, list[ExtraNetworkParams]]) -> list[ExtraNetwork]:
        """Activates every kind in `data`; returns the handlers to deactivate. An unknown kind (`<foo:x>`) is
        reported in the comments, as A1111 logs it, and skipped."""
        merged: dict[str, list[ExtraNetworkParams]] = {}
        for kind, entries in data.items():
            handler = self.handler(kind)
            if handler is None:
                p.comment(f"Unknown extra network kind: <{kind}:…>")
                continue
            merged.setdefault(handler.name, []).extend(entries)
        active = []
        for name, handler in self.handlers.items():   # A1111 activates every kind, those not in the prompt with []
            handler.activate(p, merged.get(name, []))  # (so a setting such as "Add network to prompt" can act)
            active.append(handler)
        return active
