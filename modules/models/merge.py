"""Checkpoint Merger: A/B/C single-file checkpoints (LDM key layout) → one new checkpoint, the way A1111 merges.

Modes (A1111's names): "No interpolation" copies A; "Weighted sum" is A·(1−M) + B·M; "Add difference" is A + (B−C)·M.
Keys missing from B (or C) are copied from A. The UNet input convolution may have more channels in A than in B
(an inpainting or instruct-pix2pix A with a normal B): the shared channels are merged and A's extra ones kept.

Inputs are read one tensor at a time (safetensors through safe_open; pickles through safe_load's restricted,
memory-mapped torch.load), so peak memory is about the size of the result plus one tensor per input. No Gradio or
FastAPI here: modules.merging wraps this in a job on the queue. (Over 400 lines: the three modes, the recipe
metadata A1111 writes and the streaming writer share one tensor loop; they are kept together.)
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from modules import atomic_file
from modules.models.hashing import file_sha256, legacy_hash
from modules.models.safe_load import ModelFileError, load_state_dict

log = logging.getLogger("sd.merge")

INTERP_METHODS = ("No interpolation", "Weighted sum", "Add difference")
CHECKPOINT_FORMATS = ("safetensors", "ckpt")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")
# The UNet's first convolution: the one key whose channel count legitimately differs between model kinds.
INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"
# Copied from A unmerged, as A1111 does (an index table, not a weight).
SKIP_ON_MERGE = ("cond_stage_model.transformer.text_model.embeddings.position_ids",)
VAE_PREFIX = "first_stage_model."


# What the Checkpoint Merger tab calls each field (A1111's labels), for error messages.
FIELD_LABELS = {
    "primary_model_name": "Primary model (A)", "secondary_model_name": "Secondary model (B)",
    "tertiary_model_name": "Tertiary model (C)", "interp_method": "Interpolation Method",
    "multiplier": "Multiplier (M)", "custom_name": "Custom Name", "checkpoint_format": "Checkpoint format",
    "config_source": "Copy config from", "bake_in_vae": "Bake in VAE",
    "discard_weights": "Discard weights with matching name",
}


class MergeError(ValueError):
    """Bad merge input; `field` names the field at fault (ValueError: the job queue logs no traceback)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{FIELD_LABELS.get(field, field)}: {message}")
        self.field = field


@dataclass
class ModelRef:
    """One input checkpoint. `name` defaults to the file stem; hashes are computed when not given."""
    path: Path
    name: str | None = None
    sha256: str | None = None

    def __post_init__(self):
        self.path = Path(self.path)
        if self.name is None:
            self.name = self.path.stem


@dataclass
class MergeRequest:
    primary: ModelRef | Path | str
    secondary: ModelRef | Path | str | None = None
    tertiary: ModelRef | Path | str | None = None
    interp_method: str = "Weighted sum"
    multiplier: float = 0.3
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    save_as_half: bool = False
    config_source: str = "A, B or C"
    bake_in_vae: Path | str | None = None
    discard_weights: str = ""
    save_metadata: bool = True


@dataclass
class MergeResult:
    path: Path
    config: Path | None
    tensors: int
    merged: int          # tensors computed from more than one model
    copied_from_a: int   # tensors only A has (or non-float / skipped ones)
    kind: str            # "" / "inpainting" / "instruct-pix2pix" (A's extra input channels kept)


# --- reading ------------------------------------------------------------------------------------------------------
class _Source:
    """Key-by-key access to a checkpoint without materialising all of it."""

    def __init__(self, path: Path, stack: ExitStack):
        self.path = path
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            try:
                self._file = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
            except Exception as exc:  # a truncated or foreign file: one readable line
                raise ModelFileError(f"{path}: cannot be read as a safetensors file: {exc}") from None
            self._dict = None
            self.metadata = self._file.metadata() or {}
            self._keys = list(self._file.keys())
        else:
            self._dict = load_state_dict(path)  # restricted unpickler, memory-mapped when the file is a zip
            self.metadata = {}
            self._keys = list(self._dict)
        self._key_set = set(self._keys)

    def keys(self) -> list[str]:
        return self._keys

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def get(self, key: str) -> torch.Tensor:
        if self._dict is not None:
            return self._dict[key]
        return self._file.get_tensor(key)


# --- naming -------------------------------------------------------------------------------------------------------
def default_name(method: str, multiplier: float, a: str, b: str | None, c: str | None) -> str:
    """A1111's default file stem for a merge."""
    if method == "Weighted sum":
        return f"{round(1 - multiplier, 2)}({a}) + {round(multiplier, 2)}({b})"
    if method == "Add difference":
        return f"{a} + {round(multiplier, 2)}({b} - {c})"
    return a


def output_path(request: MergeRequest, output_dir: Path, kind: str = "") -> Path:
    a, b, c = (_ref(request.primary), _ref(request.secondary), _ref(request.tertiary))
    fmt = request.checkpoint_format
    name = (request.custom_name or "").strip()
    if name:
        for ext in (".safetensors", ".ckpt"):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
        if "/" in name or "\\" in name or name in (".", ".."):
            raise MergeError("custom_name", f"{request.custom_name!r} must be a file name without folders")
    else:
        name = default_name(request.interp_method, request.multiplier, a.name, b.name if b else None,
                            c.name if c else None)
        if kind:
            name += f".{kind}"
    return Path(output_dir) / f"{name}.{fmt}"


def _ref(value) -> ModelRef | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, ModelRef) else ModelRef(Path(value))


# --- validation ---------------------------------------------------------------------------------------------------
def validate(request: MergeRequest) -> tuple[ModelRef, ModelRef | None, ModelRef | None]:
    if request.interp_method not in INTERP_METHODS:
        raise MergeError("interp_method", f"{request.interp_method!r} is not one of {list(INTERP_METHODS)}")
    if request.checkpoint_format not in CHECKPOINT_FORMATS:
        raise MergeError("checkpoint_format",
                         f"{request.checkpoint_format!r} is not one of {list(CHECKPOINT_FORMATS)}")
    if request.config_source not in CONFIG_SOURCES:
        raise MergeError("config_source", f"{request.config_source!r} is not one of {list(CONFIG_SOURCES)}")
    try:
        m = float(request.multiplier)
    except (TypeError, ValueError):
        raise MergeError("multiplier", f"{request.multiplier!r} is not a number") from None
    if not math.isfinite(m) or not 0 <= m <= 1:
        raise MergeError("multiplier", f"{request.multiplier!r} must be between 0 and 1")
    request.multiplier = m
    if request.discard_weights:
        try:
            re.compile(request.discard_weights)
        except re.error as exc:
            raise MergeError("discard_weights", f"{request.discard_weights!r} is not a valid regular expression "
                                                f"({exc})") from None
    a, b, c = _ref(request.primary), _ref(request.secondary), _ref(request.tertiary)
    needs = {"No interpolation": ("primary",), "Weighted sum": ("primary", "secondary"),
             "Add difference": ("primary", "secondary", "tertiary")}[request.interp_method]
    for field, ref in (("primary", a), ("secondary", b), ("tertiary", c)):
        if field not in needs:
            continue
        if ref is None:
            letter = {"primary": "A", "secondary": "B", "tertiary": "C"}[field]
            raise MergeError(f"{field}_model_name", f"{request.interp_method} needs model {letter}")
        if not ref.path.is_file():
            raise MergeError(f"{field}_model_name", f"{ref.path}: file not found")
        if ref.path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
            raise MergeError(f"{field}_model_name", f"{ref.path}: not a single-file checkpoint "
                                                    "(diffusers folders cannot be merged)")
    if request.bake_in_vae and not Path(request.bake_in_vae).is_file():
        raise MergeError("bake_in_vae", f"{request.bake_in_vae}: file not found")
    b = b if "secondary" in needs else None
    c = c if "tertiary" in needs else None
    return a, b, c


# --- merging ------------------------------------------------------------------------------------------------------
def merge_checkpoints(request: MergeRequest, output_dir: Path,
                      progress: Callable[[int, int], None] | None = None) -> MergeResult:
    """Merges per `request` into `output_dir` and returns where the result went. `progress(done, total)` is called
    after every tensor (it may raise to stop the merge; nothing is written then)."""
    from tqdm import tqdm

    a_ref, b_ref, c_ref = validate(request)
    method, m = request.interp_method, request.multiplier
    output_dir = Path(output_dir)
    discard = re.compile(request.discard_weights) if request.discard_weights else None
    half = request.save_as_half

    with ExitStack() as stack:
        a = _Source(a_ref.path, stack)
        b = _Source(b_ref.path, stack) if b_ref else None
        c = _Source(c_ref.path, stack) if c_ref else None
        vae = _vae_tensors(Path(request.bake_in_vae), a) if request.bake_in_vae else {}

        # the result's kind decides the default name; know it before any work so a name clash fails fast
        kind = _kind(a, b)
        target = output_path(request, output_dir, kind)
        _refuse_overwriting_inputs(target, [r for r in (a_ref, b_ref, c_ref) if r] +
                                   ([ModelRef(Path(request.bake_in_vae))] if request.bake_in_vae else []))

        keys = [k for k in a.keys() if not (discard and discard.search(k))]
        out: dict[str, torch.Tensor] = {}
        merged = copied = 0
        bar = tqdm(total=len(keys), desc=f"Merging ({method})", unit="tensor", leave=False)
        try:
            for i, key in enumerate(keys):
                if key in vae:
                    value = vae[key]
                    copied += 1
                else:
                    value, did_merge = _merge_key(key, a, b, c, method, m)
                    merged += did_merge
                    copied += not did_merge
                if half and value.is_floating_point():
                    value = value.half()
                out[key] = value.contiguous()
                bar.update(1)
                if progress is not None:
                    progress(i + 1, len(keys))
        finally:
            bar.close()
        metadata = _metadata(request, a_ref, b_ref, c_ref, a, b, c, kind) if request.save_metadata else {}
        if a.metadata and not request.bake_in_vae:  # A's fitted latent preview map still fits the merged VAE
            from modules.models.loader import LATENT_RGB_KEY
            if LATENT_RGB_KEY in a.metadata:
                metadata[LATENT_RGB_KEY] = a.metadata[LATENT_RGB_KEY]

    output_dir.mkdir(parents=True, exist_ok=True)
    _write(out, target, metadata)
    config = _copy_config(request.config_source, target, a_ref, b_ref, c_ref)
    log.info("merged checkpoint saved to %s", target)
    return MergeResult(target, config, len(out), merged, copied, kind)


def _merge_key(key: str, a: _Source, b: _Source | None, c: _Source | None, method: str,
               m: float) -> tuple[torch.Tensor, bool]:
    ta = a.get(key)
    if b is None or key not in b or key in SKIP_ON_MERGE or not ta.is_floating_point():
        return _own(ta, a), False
    tb = b.get(key)
    if method == "Add difference":
        if key in c:
            tc = c.get(key)
            if tb.shape != tc.shape:
                raise MergeError("tertiary_model_name", f"tensor {key} has shape {tuple(tc.shape)} in C but "
                                                        f"{tuple(tb.shape)} in B; B and C must be the same kind of "
                                                        "model")
            diff = tb.float() - tc.float()
        else:
            return _own(ta, a), False  # A1111: no difference where C lacks the key
    else:
        diff = None
    out_dtype = torch.promote_types(ta.dtype, tb.dtype)

    def combine(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if method == "Weighted sum":
            return xf * (1 - m) + tb.float() * m
        return xf + diff * m

    if ta.shape == tb.shape:
        return combine(ta).to(out_dtype), True
    if key == INPUT_CONV and ta.dim() == 4 and ta.shape[0] == tb.shape[0] and ta.shape[2:] == tb.shape[2:]:
        if ta.shape[1] < tb.shape[1]:
            raise MergeError("primary_model_name", f"{key}: B has {tb.shape[1]} input channels and A only "
                                                   f"{ta.shape[1]}; when merging an inpainting or instruct-pix2pix "
                                                   "model with a normal one, A must be the inpainting model")
        result = ta.to(out_dtype, copy=True)
        n = tb.shape[1]
        result[:, :n] = combine(ta[:, :n]).to(out_dtype)  # the latent channels; A's mask/image channels stay
        return result, True
    raise MergeError("secondary_model_name", f"tensor {key} has shape {tuple(tb.shape)} in B but "
                                             f"{tuple(ta.shape)} in A; models of different architectures (for "
                                             "example SD1 and SDXL) cannot be merged")


def _own(t: torch.Tensor, source: _Source) -> torch.Tensor:
    # tensors from a pickle may be views into a shared or memory-mapped storage; the output needs its own
    return t.clone() if source._dict is not None else t


def _kind(a: _Source, b: _Source | None) -> str:
    if b is None or INPUT_CONV not in a or INPUT_CONV not in b:
        return ""
    ca, cb = a.get(INPUT_CONV).shape, b.get(INPUT_CONV).shape
    if len(ca) != 4 or len(cb) != 4 or ca[1] == cb[1] or cb[1] != 4:
        return ""
    return {9: "inpainting", 8: "instruct-pix2pix"}.get(ca[1], "")


def _vae_tensors(path: Path, a: _Source) -> dict[str, torch.Tensor]:
    """A VAE file's weights under A's key names (first_stage_model.*); every one must fit a tensor of A."""
    sd = load_state_dict(path)
    out = {}
    for key, value in sd.items():
        if key.startswith(("loss.", "model_ema.")):
            continue  # training leftovers A1111 skips too
        name = key if key.startswith(VAE_PREFIX) else VAE_PREFIX + key
        if name not in a:
            raise MergeError("bake_in_vae", f"{path}: tensor {key} has no counterpart in model A; not an LDM-layout "
                                            "VAE for this model")
        if tuple(a.get(name).shape) != tuple(value.shape):
            raise MergeError("bake_in_vae", f"{path}: tensor {key} has shape {tuple(value.shape)}, model A's "
                                            f"{tuple(a.get(name).shape)}; not a VAE for this model")
        out[name] = value.clone()
    if not out:
        raise MergeError("bake_in_vae", f"{path}: holds no VAE weights")
    return out


def _refuse_overwriting_inputs(target: Path, inputs: list[ModelRef]) -> None:
    for ref in inputs:
        same = ref.path.resolve() == target.resolve()
        if not same and target.exists():
            try:
                same = os.path.samefile(ref.path, target)
            except OSError:
                pass
        if same:
            raise MergeError("custom_name", f"the result {target.name} would overwrite the input {ref.path}; "
                                            "choose another name")


# --- writing ------------------------------------------------------------------------------------------------------
def _metadata(request, a_ref, b_ref, c_ref, a, b, c, kind) -> dict[str, str]:
    def sha(ref: ModelRef | None) -> str | None:
        if ref is None:
            return None
        if ref.sha256 is None:
            ref.sha256 = file_sha256(ref.path)
        return ref.sha256

    recipe = {
        "type": "webui",
        "primary_model_hash": sha(a_ref),
        "secondary_model_hash": sha(b_ref),
        "tertiary_model_hash": sha(c_ref),
        "interp_method": request.interp_method,
        "multiplier": request.multiplier,
        "save_as_half": bool(request.save_as_half),
        "custom_name": request.custom_name or "",
        "config_source": request.config_source,
        "bake_in_vae": Path(request.bake_in_vae).name if request.bake_in_vae else "None",
        "discard_weights": request.discard_weights or "",
        "is_inpainting": kind == "inpainting",
        "is_instruct_pix2pix": kind == "instruct-pix2pix",
    }
    models: dict[str, dict] = {}
    for ref, src in ((a_ref, a), (b_ref, b), (c_ref, c)):
        if ref is None:
            continue
        parent_recipe = _json_or_none(src.metadata.get("sd_merge_recipe"))
        models[sha(ref)] = {"name": ref.path.name, "legacy_hash": legacy_hash(ref.path),
                            "sd_merge_recipe": parent_recipe}
        models.update(_json_or_none(src.metadata.get("sd_merge_models")) or {})  # the inputs' own ancestry
    return {"format": "pt", "sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(models)}


def _json_or_none(text: str | None):
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _write(tensors: dict[str, torch.Tensor], target: Path, metadata: dict[str, str]) -> None:
    """A failed or interrupted write never leaves a partial model (atomic_file)."""
    with atomic_file.replacing(target) as tmp:
        if target.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, str(tmp), metadata=metadata or None)
        else:
            torch.save(tensors, str(tmp))  # a plain state dict, as A1111 writes .ckpt merges


def _copy_config(source: str, target: Path, a: ModelRef, b: ModelRef | None, c: ModelRef | None) -> Path | None:
    """Copies `<input>.yaml` beside the result (A1111's "Copy config from")."""
    def yaml(ref: ModelRef | None) -> Path | None:
        if ref is None:
            return None
        path = ref.path.with_suffix(".yaml")
        return path if path.is_file() else None

    chosen = {"A, B or C": lambda: yaml(a) or yaml(b) or yaml(c), "B": lambda: yaml(b), "C": lambda: yaml(c),
              "Don't": lambda: None}[source]()
    if chosen is None:
        return None
    dest = target.with_suffix(".yaml")
    with atomic_file.replacing(dest) as tmp:
        shutil.copyfile(chosen, tmp)
    return dest
