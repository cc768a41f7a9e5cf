"""Loading details of A1111's contract: metadata.ini orders scripts and callbacks, `scripts.basedir()` and the
extension's folder on sys.path while its file loads, helper-module name collisions are reported, a Script whose
__init__ raises is skipped, and an on_ui_settings registered after the settings were collected still runs."""
from __future__ import annotations

import sys
import textwrap

import pytest

from modules import extensions, script_callbacks, scripts


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


SCRIPT = """
from modules import scripts, script_callbacks
import sys
LOADED_FROM = scripts.basedir()
ON_PATH = sys.path[0]

class S_{name}(scripts.Script):
    def title(self):
        return "{name}"
    def show(self, is_img2img):
        return scripts.AlwaysVisible

script_callbacks.on_app_started(lambda demo, app: ORDER.append("{name}"), name="mark")
ORDER = __import__("builtins").__dict__.setdefault("_ext_test_order", [])
"""


@pytest.fixture
def exts_root(tmp_path):
    yield tmp_path
    extensions.list_extensions(tmp_path / "none", tmp_path / "none")
    scripts.load_scripts()
    import builtins
    builtins.__dict__.pop("_ext_test_order", None)


ROOT_SCRIPTS = str(scripts.SCRIPT_DIR / "scripts")


def load(root):
    """The extensions' script classes, in load order (the program's own scripts/ folder, loaded first, left out)."""
    extensions.list_extensions(root / "extensions", root / "builtin")
    scripts.load_scripts()
    return [d.script_class.__name__ for d in scripts.scripts_data if not str(d.path).startswith(ROOT_SCRIPTS)]


def test_metadata_orders_scripts_and_callbacks(exts_root):
    write(exts_root / "extensions/aaa/scripts/a.py", SCRIPT.format(name="a"))
    write(exts_root / "extensions/bbb/scripts/b.py", SCRIPT.format(name="b"))
    write(exts_root / "extensions/ccc/scripts/c.py", SCRIPT.format(name="c"))
    assert load(exts_root) == ["S_a", "S_b", "S_c"]
    # aaa's script after bbb (by extension name), ccc's before aaa's (by script name); callbacks: c's after a's
    write(exts_root / "extensions/aaa/metadata.ini", "[scripts/a.py]\nAfter = bbb\n")
    write(exts_root / "extensions/ccc/metadata.ini",
          "[scripts]\nBefore = aaa/a.py\n[callbacks/ccc/c.py/app_started/mark]\nAfter = bbb/b.py/app_started/mark\n")
    assert load(exts_root) == ["S_b", "S_c", "S_a"]
    order = [c.name for c in script_callbacks.ordered("app_started")]
    assert order.index("ccc/c.py/app_started/mark") > order.index("bbb/b.py/app_started/mark")


def test_basedir_and_sys_path_while_loading(exts_root):
    write(exts_root / "extensions/aaa/scripts/a.py", SCRIPT.format(name="a"))
    load(exts_root)
    module = sys.modules["a.py"]
    folder = str((exts_root / "extensions/aaa").resolve())
    assert module.LOADED_FROM == folder and module.ON_PATH == folder
    assert scripts.basedir() != folder and folder not in sys.path   # both restored afterwards


def test_helper_module_collisions_are_reported(exts_root):
    for name in ("one", "two"):
        write(exts_root / f"extensions/{name}/scripts/{name}.py", SCRIPT.format(name=name))
        write(exts_root / f"extensions/{name}/lib_helpers/__init__.py", "VALUE = 1\n")
    load(exts_root)
    assert any("one and two" in m and "lib_helpers" in m for m in scripts.module_collisions)
    two = next(e for e in extensions.extensions if e.name == "two")
    assert "lib_helpers" in two.errors["import"]


def test_a_script_whose_init_raises_is_skipped(exts_root):
    write(exts_root / "extensions/aaa/scripts/a.py", SCRIPT.format(name="a") + """
class Bad(scripts.Script):
    def __init__(self):
        raise RuntimeError("init fails on purpose")
    def title(self):
        return "bad"
""")
    load(exts_root)
    runner = scripts.ScriptRunner()
    runner.initialize_scripts(False)
    assert [s.title() for s in runner.scripts if not s.filename.startswith(ROOT_SCRIPTS)] == ["a"]
    assert "init fails on purpose" in next(e for e in extensions.extensions if e.name == "aaa").errors["init"]


def test_ui_settings_registered_late_still_runs(exts_root):
    write(exts_root / "extensions/aaa/scripts/a.py", """
from modules import scripts, script_callbacks
SEEN = []

class Late(scripts.Script):
    def __init__(self):
        script_callbacks.on_ui_settings(lambda: SEEN.append("settings"))
    def title(self):
        return "late"
    def show(self, is_img2img):
        return scripts.AlwaysVisible
""")
    load(exts_root)
    script_callbacks.ui_settings_callback()
    scripts.ScriptRunner().initialize_scripts(False)   # registers in __init__, after the settings were collected
    assert sys.modules["a.py"].SEEN == ["settings"]


def test_processing_attributes_scripts_write():
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a {b|c}")
    assert p.prompt_for_display == "a {b|c}"
    p.prompt_for_display = "template"          # sd-dynamic-prompts sets it
    assert p.prompt_for_display == "template"
    p.my_extension_flag = True                  # no __slots__
    assert p.outpath_samples is None and p.script_args is None and p.scripts is None
