"""The built-in Lora extension's flags (A1111's): --lora-dir is a core flag here (paths need it before extensions
load), so only the LyCORIS folder is added."""
import os

from modules import paths_internal


def preload(parser):
    parser.add_argument("--lyco-dir-backcompat", type=str, default=os.path.join(paths_internal.models_path, "LyCORIS"),
                        help="Path to the folder with LyCORIS networks (read as LoRAs, for backwards compatibility)")
