"""The web UI's own network loaders, set up for a folder, for the demo LoRA's and embedding's evaluations and tests:
`<lora:name:w>` in a prompt is handled by the built-in Lora extension's handler (modules/networks/lora.py) reading
the given folder, and embedding names by the textual-inversion database (modules/networks/textual_inversion.py) of
the given folder, exactly as a job of the web UI runs them."""
from __future__ import annotations

from pathlib import Path

from tools.demo_model import finetune


def lora_setup(folder: Path):
    """setup(p) registering a LoRA handler whose catalog is `folder` (default options)."""
    from modules.networks.lora import LoraExtraNetwork, LoraNetworks
    from modules.networks.network_files import NetworkCatalog

    handler = LoraExtraNetwork(LoraNetworks(NetworkCatalog(lambda: [str(folder)])))

    def setup(p):
        p.extra_networks.register(handler)
    return setup


def embedding_database(folder: Path):
    from modules.networks.textual_inversion import EmbeddingDatabase

    return EmbeddingDatabase([str(folder)])


def runner(lora_dir: Path | None = None, embeddings_dir: Path | None = None):
    """generate(model, prompt, seed, cfg) -> uint8 image through the engine with the web UI's loaders."""
    setup = lora_setup(lora_dir) if lora_dir is not None else None
    db = embedding_database(embeddings_dir) if embeddings_dir is not None else None

    def run(model, prompt: str, seed: int, cfg: float):
        return finetune.generate(model, prompt, seed, cfg, setup=setup,
                                 embeddings=db.for_job(model) if db is not None else None)
    return run
