"""A1111's `modules.shared_cmd_options`: `parser` and `cmd_opts`, the command-line flags as extensions read them.

`cmd_opts` is one namespace object for the life of the process: it starts with the defaults of our flags (the same
names as A1111's) and `adopt` fills it in place from the runtime's parsed flags when shared.bind runs, so a module
that imported it early sees the real values. A1111 flags that we do not have get A1111's defaults, and the folder
flags that A1111 fills in (`data_dir`, `lora_dir`, `embeddings_dir`, `hypernetwork_dir`) get our folders.
"""
from __future__ import annotations

import argparse

from modules import cmd_args

parser = cmd_args.build_parser(add_help=False)

# A1111 flags that extensions read and we do not define, with A1111's defaults.
A1111_ONLY = {
    "ngrok": None, "ngrok_region": "", "ngrok_options": {}, "hide_ui_dir_config": False, "gradio_debug": False,
    "no_gradio_queue": False, "administrator": False, "ui_debug_mode": False, "freeze_settings_in_sections": None,
    "freeze_specific_settings": None, "loglevel": None, "log_startup": False, "textual_inversion_templates_dir": None,
    "codeformer_models_path": None, "gfpgan_models_path": None, "esrgan_models_path": None,
    "realesrgan_models_path": None, "clip_models_path": None, "unload_gfpgan": False, "no_progressbar_hiding": False,
    "do_not_download_clip": False, "disable_safe_unpickle": False, "disable_console_progressbars": True,
    "enable_console_prompts": False, "api_server_stop": False, "timeout_keep_alive": 30, "skip_version_check": False,
    "gradio_allowed_path": [], "add_stop_route": False, "no_hashing": False, "dump_sysinfo": False,
}

cmd_opts = parser.parse_args([])


def _defaults(ns: argparse.Namespace) -> None:
    for name, value in A1111_ONLY.items():
        if not hasattr(ns, name):
            setattr(ns, name, value)
    if not hasattr(ns, "disable_extension_access"):
        exposed = ns.share or ns.listen or bool(getattr(ns, "server_name", None))
        ns.disable_extension_access = bool(exposed and not ns.enable_insecure_extension_access)


_defaults(cmd_opts)


def adopt(args: argparse.Namespace, paths=None) -> argparse.Namespace:
    """Copy the runtime's flags (extensions' flags included) into `cmd_opts`, keeping the object."""
    vars(cmd_opts).update(vars(args))
    _defaults(cmd_opts)
    if paths is not None:
        cmd_opts.data_dir = str(paths.data)
        for name, folder in (("lora_dir", paths.lora), ("embeddings_dir", paths.embeddings),
                             ("hypernetwork_dir", paths.models / "hypernetworks")):
            if not getattr(cmd_opts, name, None):
                setattr(cmd_opts, name, str(folder))
    return cmd_opts
