"""Loading one `scripts/*.py` file A1111's way (EXTENSIONS-REFERENCE §1.5).

The file runs as a fresh module named after its base name ("xyz_grid.py"), so `cls.__module__ == "xyz_grid.py"`
finds it as extensions expect. Unlike A1111 the module is also registered in sys.modules under that name (a name
with ".py" cannot collide with a real import): Gradio 6 looks a component subclass's module up there, and
`inspect.getfile` needs it.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def load_module(path: str) -> ModuleType:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(name) is module:
            del sys.modules[name]
        raise
    return module


def preload_extensions_git_metadata(extensions) -> None:
    """A1111 name kept for extensions that call it; git details are read lazily by modules.extensions."""
