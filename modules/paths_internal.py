"""A1111's `modules.paths_internal`: the program's folders as module-level strings, for extensions.

Standard library only (the launcher imports modules.paths, which imports this, before the venv has packages). At
import the data and models folders come from --data-dir / --models-dir on the command line (and COMMANDLINE_ARGS),
as in A1111; when the runtime starts, `modules.paths.adopt` replaces them with the runtime's own folders.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

script_path = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
modules_path = os.path.join(script_path, "modules")
sd_path = script_path          # A1111: the stable-diffusion repository; ours needs none
cwd = os.getcwd()


def _dirs_from_argv() -> tuple[str | None, str | None]:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models-dir", default=None)
    try:
        argv = sys.argv[1:] + shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
        args, _ = parser.parse_known_args(argv)
    except (SystemExit, ValueError):   # a malformed line is the real parser's to report
        return None, None
    return args.data_dir, args.models_dir


_data_dir, _models_dir = _dirs_from_argv()
data_path = os.path.abspath(_data_dir) if _data_dir else script_path
models_path = os.path.abspath(_models_dir) if _models_dir else os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "outputs")
sd_configs_path = os.path.join(script_path, "configs")
