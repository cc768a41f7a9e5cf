"""A1111's old name for modules.infotext_utils: importing this gives that very module (same object, same
registries), as A1111 arranges through sys.modules."""
import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
