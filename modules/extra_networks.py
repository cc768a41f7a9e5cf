"""A1111's `modules.extra_networks` for extensions: the ExtraNetwork base class and params, prompt parsing, and
register_extra_network / register_extra_network_alias, which add a kind to the running program's registry
(modules/engine/extra_networks.py holds the real thing)."""
from __future__ import annotations

from modules.engine.extra_networks import (ExtraNetwork, ExtraNetworkParams, parse_prompt,  # noqa: F401
                                           parse_prompts)

_pending: list = []


def _registry():
    from modules import shared
    if not shared.bound():
        return None
    registry = shared.runtime().extra_networks
    while _pending:   # kinds registered before the runtime existed
        registry.register(_pending.pop(0))
    return registry


def register_extra_network(extra_network) -> None:
    registry = _registry()
    if registry is None:
        _pending.append(extra_network)
    else:
        registry.register(extra_network)


def register_extra_network_alias(extra_network, alias: str) -> None:
    registry = _registry()
    if registry is not None:
        registry.aliases[alias] = extra_network.name


def lookup_extra_networks(extra_network_data: dict) -> dict:
    """kind → (handler, entries), aliases resolved (A1111's helper)."""
    registry = _registry()
    out = {}
    for kind, entries in extra_network_data.items():
        handler = registry.handler(kind) if registry is not None else None
        if handler is not None:
            out.setdefault(handler, []).extend(entries)
    return out
