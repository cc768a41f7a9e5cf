"""The Lora extension's state under A1111's names (extensions such as block-weight tools and model browsers read
`networks.available_networks`, `available_network_aliases`, `loaded_networks`, `list_available_networks()`).

The work is in modules/networks/ (catalog, key mapping, LyCORIS math, patching); this module holds the one
LoraNetworks object of the running program and the folders it scans."""
from __future__ import annotations

from pathlib import Path

from modules import paths, shared
from modules.networks.lora import LoraNetworks
from modules.networks.network_files import NetworkCatalog


def folders() -> list[Path]:
    """models/Lora (--lora-dir), the LyCORIS folder (--lyco-dir-backcompat), and the bundled demo LoRA."""
    out = []
    if shared.bound():
        out.append(shared.runtime().paths.lora)
    else:
        out.append(Path(shared.models_path) / "Lora")
    lyco = getattr(shared.cmd_opts, "lyco_dir_backcompat", None) if shared.bound() else None
    out.append(Path(lyco) if lyco else Path(shared.models_path) / "LyCORIS")
    out.append(paths.DEMO_LORA_DIR)   # listed once even when it lies inside models/Lora (the catalog dedups)
    return out


def _memory_limit() -> int:
    try:
        return int(shared.opts.data.get("lora_in_memory_limit", 0) or 0)
    except Exception:   # before the runtime is bound
        return 0


catalog = NetworkCatalog(folders, kind="lora")
lora_networks = LoraNetworks(catalog, _memory_limit)

available_networks = catalog.available                 # name → NetworkOnDisk
available_network_aliases = catalog.aliases            # alias or name → NetworkOnDisk
forbidden_network_aliases = catalog.forbidden_aliases  # lower-case aliases that only file names may use


class LoadedNetwork:
    """What A1111's loaded_networks entries offer extensions: the name and the multipliers of the last job."""

    def __init__(self, entry, request):
        self.name = entry.name
        self.network_on_disk = entry
        self.mentioned_name = request.name
        self.te_multiplier = request.te
        self.unet_multiplier = request.unet
        self.dyn_dim = request.dyn


loaded_networks: list[LoadedNetwork] = []


def list_available_networks() -> None:
    catalog.refresh()


def available_network_hash_lookup(shorthash: str):
    return catalog.by_shorthash(shorthash)
