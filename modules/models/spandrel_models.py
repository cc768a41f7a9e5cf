"""spandrel, imported without torchvision, and model files loaded through it without running pickle code.

spandrel (upscalers, face restorers) imports every architecture it knows when it is imported; two of them (LaMa, an
inpainting model, and RestoreFormer, a face restorer) import torchvision at module level. torchvision is not
installed here on purpose (its wheels pin a torch build other than ours; requirements-nodeps.txt installs spandrel
without it). So while spandrel is imported, and only then, a small stand-in for the three torchvision names those two
modules take is placed in sys.modules and removed again afterwards, so that nothing else (transformers, diffusers)
ever sees a torchvision that is not there. The stand-in's `normalize` is the real arithmetic; `rotate` (LaMa only)
raises a clear error.

Files are read by modules/models/safe_load (torch.load with weights_only=True, or safetensors) and handed to
spandrel as a state dict: spandrel's own file loader would unpickle with its own rules.
"""
from __future__ import annotations

import enum
import importlib.util
import os
import sys
import threading
import types

from modules.models import safe_load

_lock = threading.Lock()
_STAND_IN_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _normalize(tensor, mean, std, inplace: bool = False):
    import torch
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t) if inplace else (tensor - mean_t) / std_t


def _rotate(*_args, **_kwargs):
    raise RuntimeError("this model needs torchvision (rotate), which this web UI does not install")


def _stand_in_modules() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = _InterpolationMode
    functional.normalize = _normalize
    functional.rotate = _rotate
    transforms.functional = functional
    root.transforms = transforms
    return dict(zip(_STAND_IN_NAMES, (root, transforms, functional)))


def import_spandrel(extra_arches: bool = False):
    """The spandrel module (its MAIN_REGISTRY with spandrel_extra_arches' architectures added when `extra_arches`)."""
    with _lock:
        if "spandrel" not in sys.modules:
            stand_in = {} if importlib.util.find_spec("torchvision") else _stand_in_modules()
            sys.modules.update(stand_in)
            try:
                import spandrel  # noqa: F401
            finally:
                for name in stand_in:
                    sys.modules.pop(name, None)
        import spandrel
        if extra_arches:
            import spandrel_extra_arches
            spandrel.MAIN_REGISTRY.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
        return spandrel


def read_state_dict(path: str | os.PathLike) -> dict:
    """The file's state dict, unwrapped as spandrel expects (params_ema, state_dict, "module." prefixes ...).
    Raises safe_load.ModelFileError naming the file when it cannot be read."""
    spandrel = import_spandrel()
    name = os.fspath(path).lower()
    raw = safe_load.load_state_dict(path) if name.endswith(".safetensors") else safe_load.load_pickle(path)
    if not isinstance(raw, dict):
        raise safe_load.ModelFileError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    return spandrel.canonicalize_state_dict(raw)


def load_model(path: str | os.PathLike, extra_arches: bool = False):
    """A spandrel ModelDescriptor for the file, the architecture detected from its weights (on the CPU, eval mode).
    Raises safe_load.ModelFileError naming the file when it cannot be read or its architecture is unknown."""
    spandrel = import_spandrel(extra_arches)
    state_dict = read_state_dict(path)
    try:
        descriptor = spandrel.MAIN_REGISTRY.load(state_dict)
    except spandrel.UnsupportedModelError:
        raise safe_load.ModelFileError(f"{path}: the weights match no architecture spandrel knows") from None
    except (KeyError, RuntimeError, ValueError, AssertionError) as exc:
        raise safe_load.ModelFileError(f"{path}: spandrel could not build the model: {exc}") from None
    descriptor.model.eval()
    return descriptor
