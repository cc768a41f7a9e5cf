"""The `lora` extra-network kind under A1111's module and class name (ExtraNetworkLora); the work is
modules.networks.lora.LoraExtraNetwork. Keeps `networks.loaded_networks` current for extensions that read it."""
from __future__ import annotations

import networks
from modules import shared
from modules.networks.lora import LoraExtraNetwork


def _opt(key: str, default=None):
    try:
        return shared.opts.data.get(key, default)
    except Exception:   # before the runtime is bound
        return default


class ExtraNetworkLora(LoraExtraNetwork):
    def __init__(self):
        super().__init__(networks.lora_networks, _opt)

    def activate(self, p, entries) -> None:
        super().activate(p, entries)
        networks.loaded_networks[:] = [networks.LoadedNetwork(e, r) for e, r, _ in self.applied]
