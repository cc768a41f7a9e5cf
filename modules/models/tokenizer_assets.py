"""Builds the CLIP tokenizer files (vocab.json, merges.txt) offline.

Every SD text encoder uses OpenAI's CLIP BPE. Instead of fetching tokenizer files from a model hub, we derive them from
the BPE merge list that the open_clip_torch package ships (bpe_simple_vocab_16e6.txt.gz). Standard library only, so the
launcher can run it during set-up.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from modules import atomic_file

VOCAB_SIZE = 49408
# 49408 = 256 byte symbols + 256 end-of-word byte symbols + merges + 2 special tokens
N_MERGES = VOCAB_SIZE - 512 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def find_bpe_file() -> Path:
    """The vocabulary shipped inside the open_clip package (located without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "open_clip_torch is not installed, so its bpe_simple_vocab_16e6.txt.gz is missing; "
            "run `python3 launch.py --exit` (it installs it) or `pip install --no-deps open-clip-torch`")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the open_clip_torch package")
    return path


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable unicode character table, in id order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    mapped = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapped:
            mapped[b] = chr(256 + extra)
            extra += 1
    # id order: the printable bytes first in byte order, then the remapped ones
    return [mapped[b] for b in printable] + [mapped[b] for b in range(256) if b not in set(printable)]


def build_files(bpe_path: Path, out_dir: Path) -> None:
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + N_MERGES]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{bpe_path} gave {len(vocab)} tokens, expected {VOCAB_SIZE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _write_atomic(out_dir / "merges.txt", "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file.replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def ensure_tokenizer_files(out_dir: Path) -> Path:
    """Builds the files once; later calls only check they are there."""
    if not ((out_dir / "vocab.json").is_file() and (out_dir / "merges.txt").is_file()):
        build_files(find_bpe_file(), out_dir)
    return out_dir
