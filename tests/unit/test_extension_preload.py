"""cmd_args.parse(preload=True): extensions' preload.py add flags before parsing; a raising preload is recorded;
flags of disabled or removed extensions do not stop start-up, a typo of our own flags still does."""
from __future__ import annotations

import json

import pytest

from modules import cmd_args, extensions

SAMPLE = """
import os
_marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "executed")
open(_marker, "a").write("x")

def preload(parser):
    parser.add_argument("--sample-flag", type=str, default="unset", help="from the sample extension")
"""

RAISING = """
def preload(parser):
    parser.add_argument("--half-done-flag", action="store_true")
    raise RuntimeError("preload broke on purpose")
"""

DISABLED = """
def preload(parser):
    parser.add_argument("--wildcards-dir", type=str, default=None)
    parser.add_argument(
        "--wildcards-other", action="store_true")
"""

BUILTIN = """
def preload(parser):
    parser.add_argument("--builtin-flag", action="store_true")
"""


@pytest.fixture
def data(tmp_path):
    ext = tmp_path / "data" / "extensions"
    builtin = tmp_path / "builtin"
    for root, name, code in ((ext, "sample", SAMPLE), (ext, "raising", RAISING), (ext, "wildcards", DISABLED),
                             (builtin, "core-ext", BUILTIN)):
        (root / name).mkdir(parents=True)
        (root / name / "preload.py").write_text(code)
    (tmp_path / "data" / "config.json").write_text(json.dumps({"disabled_extensions": ["wildcards"]}))
    return tmp_path


def parse(data, *argv):
    return cmd_args.parse(["--data-dir", str(data / "data"), *argv], env={}, preload=True,
                          builtin_dir=data / "builtin")


def test_preload_adds_flags_and_runs_once_per_process(data):
    args = parse(data, "--sample-flag", "v", "--builtin-flag")
    assert args.sample_flag == "v" and args.builtin_flag is True
    assert parse(data).sample_flag == "unset"                       # a new parser gets the flag again
    assert (data / "data" / "extensions" / "sample" / "executed").read_text() == "x"   # preload.py executed once


def test_raising_preload_is_recorded_and_parsing_continues(data):
    args = parse(data, "--sample-flag", "w")
    assert args.sample_flag == "w"
    raising = next(e for e in extensions.extensions if e.name == "raising")
    assert "preload broke on purpose" in raising.errors["preload"]
    assert "Traceback" in raising.errors["preload"]


def test_flags_of_a_disabled_extension_are_ignored_with_a_warning(data, capsys):
    args = parse(data, "--wildcards-dir", "/some/where", "--wildcards-other", "--sample-flag", "z")
    assert args.sample_flag == "z" and not hasattr(args, "wildcards_dir")
    err = capsys.readouterr().err
    assert "ignoring --wildcards-dir: it belongs to the extension 'wildcards'" in err
    assert "ignoring --wildcards-other" in err


def test_unknown_flag_far_from_ours_is_ignored_but_a_typo_is_an_error(data, capsys):
    args = parse(data, "--image-browser-tmp-db", "x.db")
    assert args.port == 7860
    assert "ignoring unknown flag --image-browser-tmp-db" in capsys.readouterr().err
    with pytest.raises(cmd_args.FlagError, match="did you mean --listen"):
        parse(data, "--lisen")
    with pytest.raises(cmd_args.FlagError, match="unknown argument 'stray'"):
        parse(data, "stray")


def test_safe_mode_and_disable_all_run_no_user_preload(data, capsys):
    with pytest.raises(cmd_args.FlagError, match="did you mean --listen"):   # our own flags stay strict
        parse(data, "--safe-mode", "--sample-flag", "v", "--listn")
    args = parse(data, "--disable-all-extensions", "--sample-flag", "v")
    assert not hasattr(args, "sample_flag")         # ignored: the extension is off
    assert args.builtin_flag is False               # builtins' preload runs unless --safe-mode (A1111)
    args = parse(data, "--safe-mode", "--sample-flag", "v")
    assert not hasattr(args, "sample_flag") and not hasattr(args, "builtin_flag")
    assert "ignoring --sample-flag: it belongs to the extension 'sample', which is not loaded" in capsys.readouterr().err
