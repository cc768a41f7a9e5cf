"""modules.extensions: the listing (order, enable/disable, duplicates), metadata.ini, git information and update
checks, on real folders and real git repositories in tmp_path."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from modules import extensions
from modules.cmd_args import parse
from tests.support.git_repos import hanging_git_server


def make_ext(root, name, files=None):
    folder = root / name
    folder.mkdir(parents=True)
    for rel, text in (files or {}).items():
        f = folder / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return folder


@pytest.fixture
def dirs(tmp_path):
    user, builtin = tmp_path / "extensions", tmp_path / "extensions-builtin"
    user.mkdir()
    builtin.mkdir()
    return user, builtin


def names(exts):
    return [e.name for e in exts]


def test_builtins_first_then_user_sorted_folders_only(dirs):
    user, builtin = dirs
    for n in ("b-ext", "A-ext", "a2"):
        make_ext(user, n)
    make_ext(builtin, "Lora")
    make_ext(builtin, "canvas")
    (user / "README.txt").write_text("not an extension")
    make_ext(user, ".hidden")
    exts = extensions.list_extensions(user, builtin)
    assert names(exts) == ["Lora", "canvas", "A-ext", "a2", "b-ext"]   # case-sensitive sort, like os.listdir
    assert [e.is_builtin for e in exts] == [True, True, False, False, False]
    assert exts[2].canonical_name == "a-ext" and exts[2].path == str((user / "A-ext").resolve())
    assert extensions.extensions == exts
    assert extensions.extensions_dir == user and extensions.extensions_builtin_dir == builtin
    assert names(extensions.active()) == names(exts)


def test_disabled_and_disable_all_modes(dirs):
    user, builtin = dirs
    make_ext(builtin, "builtin-one")
    make_ext(user, "one")
    make_ext(user, "two")
    exts = extensions.list_extensions(user, builtin, disabled=["two"])
    assert names(extensions.active()) == ["builtin-one", "one"]
    two = exts[2]
    assert not two.enabled and not two.enabled_in_settings and two.disabled_reason == "disabled in settings"

    extensions.list_extensions(user, builtin, disable_all="extra")
    assert names(extensions.active()) == ["builtin-one"]

    exts = extensions.list_extensions(user, builtin, disable_all="all")
    assert extensions.active() == [] and len(exts) == 3   # still listed, for the Extensions tab

    exts = extensions.list_extensions(user, builtin, disabled=["two"], safe_mode=True)
    assert extensions.active() == []
    # safe mode leaves the user's choices alone: the tab shows them
    assert [e.enabled_in_settings for e in exts] == [True, True, False]
    assert exts[1].disabled_reason.startswith("safe mode")

    with pytest.raises(ValueError, match="disable_all must be one of none, extra, all"):
        extensions.list_extensions(user, builtin, disable_all="some")


def test_flags_and_settings_combine(dirs, tmp_path):
    user, builtin = dirs
    make_ext(builtin, "b")
    make_ext(user, "u1")
    make_ext(user, "u2")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"disabled_extensions": ["u2"], "disable_all_extensions": "none"}))
    assert extensions.read_disabled(config) == (["u2"], "none")
    extensions.list_from_args(parse([], env={}), user, builtin, config)
    assert names(extensions.active()) == ["b", "u1"]
    extensions.list_from_args(parse(["--disable-extra-extensions"], env={}), user, builtin, config)
    assert names(extensions.active()) == ["b"]
    extensions.list_from_args(parse(["--disable-all-extensions"], env={}), user, builtin, config)
    assert extensions.active() == []
    extensions.list_from_args(parse(["--safe-mode"], env={}), user, builtin, config)
    assert extensions.active() == []
    config.write_text(json.dumps({"disable_all_extensions": "extra"}))
    extensions.list_from_args(parse([], env={}), user, builtin, config)
    assert names(extensions.active()) == ["b"]


def test_read_disabled_bad_files(tmp_path, capsys):
    assert extensions.read_disabled(tmp_path / "missing.json") == ([], "none")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert extensions.read_disabled(bad) == ([], "none")
    bad.write_text(json.dumps({"disabled_extensions": "x", "disable_all_extensions": "everything"}))
    assert extensions.read_disabled(bad) == ([], "none")
    err = capsys.readouterr().err
    assert "disabled_extensions must be a list" in err and "disable_all_extensions must be one of" in err


def test_duplicate_canonical_name_is_reported_and_later_skipped(dirs):
    user, builtin = dirs
    make_ext(builtin, "Same")
    make_ext(user, "same")
    exts = extensions.list_extensions(user, builtin)
    assert names(exts) == ["Same"] and exts[0].is_builtin
    assert len(extensions.skipped) == 1 and "duplicate extension name 'same'" in extensions.skipped[0]


METADATA = """
[Extension]
Name = ignored
Requires = dep-one, alt-a|alt-b  missing-x

[scripts]
After = other-ext

[scripts/main.py]
Requires = dep-one/scripts/x.py
Before = builtin/lora/scripts/lora_script.py

[callbacks/meta-ext/scripts/main.py/ui_settings]
Before = other-ext/scripts/o.py/ui_settings

[callbacks/someone-else/scripts/y.py/app_started]
After = x
"""


def test_metadata_parsing_alternatives_and_missing_requirements(dirs):
    user, builtin = dirs
    make_ext(user, "meta-ext", {"metadata.ini": METADATA})
    make_ext(user, "dep-one")
    make_ext(user, "alt-b")
    exts = extensions.list_extensions(user, builtin)
    meta = next(e for e in exts if e.name == "meta-ext")
    md = meta.metadata
    assert md.requires == ["dep-one", "alt-a|alt-b", "missing-x"]
    assert md.scripts[""]["after"] == ["other-ext"]
    assert md.scripts["main.py"] == {"requires": ["dep-one/scripts/x.py"],
                                     "before": ["builtin/lora/scripts/lora_script.py"], "after": []}
    assert list(md.list_callback_order_instructions()) == [
        ("meta-ext/scripts/main.py/ui_settings", ["other-ext/scripts/o.py/ui_settings"], [])]
    assert "someone-else" in meta.errors["metadata"]
    assert extensions.missing_requirements(meta, exts) == ["missing-x"]
    # a|b resolves to the loaded alternative, A1111's get_script_requirements
    assert md.get_script_requirements("Requires", "Extension") == ["dep-one", "alt-b", "missing-x"]
    assert md.get_script_requirements("After", "scripts/main.py", "scripts") == ["other-ext"]
    # disabling alt-b leaves the alternative unsatisfied
    exts = extensions.list_extensions(user, builtin, disabled=["alt-b"])
    meta = next(e for e in exts if e.name == "meta-ext")
    assert extensions.missing_requirements(meta, exts) == ["alt-a|alt-b", "missing-x"]


def test_broken_metadata_is_reported_not_fatal(dirs):
    user, builtin = dirs
    make_ext(user, "broken", {"metadata.ini": "no section header here\n"})
    (ext,) = extensions.list_extensions(user, builtin)
    assert ext.metadata.requires == [] and "cannot read" in ext.errors["metadata"]


def test_find_extension_and_list_files(dirs):
    user, builtin = dirs
    make_ext(user, "finder", {"scripts/b.py": "", "scripts/A.PY": "", "scripts/c.txt": "", "scripts/sub/d.py": "",
                              "javascript/x.js": ""})
    make_ext(builtin, "inner")
    extensions.list_extensions(user, builtin)
    found = extensions.find_extension(user / "finder" / "scripts" / "b.py")
    assert found is not None and found.name == "finder"
    assert extensions.find_extension(user / "finder") is found
    assert extensions.find_extension(user / "finder-2" / "x.py") is None   # a prefix is not a parent
    assert extensions.find_extension(user.parent / "elsewhere.py") is None
    files = found.list_files("scripts", ".py")
    assert [f.filename for f in files] == ["A.PY", "b.py"]
    assert files[1] == extensions.ScriptFile(found.path, "b.py", os.path.join(found.path, "scripts", "b.py"))
    assert found.list_files("missing", ".py") == []


# ---- git ----

def git(*args, cwd):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def commit_file(repo, name, text, message):
    (repo / name).write_text(text)
    git("add", name, cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)


@pytest.fixture
def remote_and_clone(tmp_path, dirs):
    """A bare 'remote' with one commit, and an extension cloned from it."""
    user, _ = dirs
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    commit_file(work, "install.py", "print('hi')\n", "first")
    bare = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(user / "gitext"), cwd=tmp_path)
    return work, bare, user / "gitext"


def test_git_info_from_a_real_repo(dirs, remote_and_clone):
    user, builtin = dirs
    work, bare, clone = remote_and_clone
    make_ext(user, "handmade")
    exts = {e.name: e for e in extensions.list_extensions(user, builtin)}
    ext = exts["gitext"]
    assert not ext.have_info_from_repo          # lazy: nothing read at listing time
    head = git("rev-parse", "HEAD", cwd=clone)
    assert ext.commit_hash == head and ext.version == head[:8]
    assert ext.remote == str(bare) and ext.branch == "main"
    assert abs(ext.commit_date - int(git("log", "-1", "--format=%ct", cwd=clone))) == 0
    hand = exts["handmade"]
    assert hand.remote is None and hand.commit_hash is None and hand.status == "local"
    assert hand.check_updates(timeout=5) == "local"


def test_check_updates_latest_new_commits_behind_head(dirs, remote_and_clone):
    user, builtin = dirs
    work, bare, clone = remote_and_clone
    (ext,) = extensions.list_extensions(user, builtin)
    assert ext.check_updates(timeout=20) == "latest" and not ext.can_update
    commit_file(work, "new.py", "x = 1\n", "second")
    git("push", "-q", str(bare), "main", cwd=work)
    (ext,) = extensions.list_extensions(user, builtin)
    assert ext.check_updates(timeout=20) == "new commits" and ext.can_update
    git("fetch", "-q", cwd=clone)              # fetched, not checked out
    (ext,) = extensions.list_extensions(user, builtin)
    assert ext.check_updates(timeout=20) == "behind HEAD" and ext.can_update
    ext.fetch_and_reset_hard()
    assert (clone / "new.py").is_file() and ext.commit_hash == git("rev-parse", "HEAD", cwd=work)
    assert ext.check_updates(timeout=20) == "latest"


def test_check_updates_unreachable_remote_is_unknown(dirs, remote_and_clone):
    user, builtin = dirs
    _, _, clone = remote_and_clone
    git("remote", "set-url", "origin", str(clone.parent / "no-such-remote.git"), cwd=clone)
    (ext,) = extensions.list_extensions(user, builtin)
    status = ext.check_updates(timeout=20)
    assert status.startswith("unknown (") and not ext.can_update


def test_check_updates_all_gives_one_status_per_extension(dirs, remote_and_clone):
    user, builtin = dirs
    _, _, clone = remote_and_clone
    git("clone", "-q", str(clone), str(user / "broken-remote"), cwd=user)
    git("remote", "set-url", "origin", str(user / "nowhere.git"), cwd=user / "broken-remote")
    make_ext(user, "handmade")
    make_ext(builtin, "inside")
    extensions.list_extensions(user, builtin)
    statuses = extensions.check_updates_all(timeout=20)
    assert set(statuses) == {"broken-remote", "gitext", "handmade"}   # builtins are not checked
    assert statuses["gitext"] == "latest" and statuses["handmade"] == "local"
    assert statuses["broken-remote"].startswith("unknown (")


def test_check_updates_hanging_remote_stops_at_the_timeout(dirs, remote_and_clone):
    """A server that accepts the connection and never answers: the check gives up after the timeout."""
    user, builtin = dirs
    _, _, clone = remote_and_clone
    with hanging_git_server() as url:
        git("remote", "set-url", "origin", f"{url}/repo.git", cwd=clone)
        (ext,) = extensions.list_extensions(user, builtin)
        ext.read_info_from_repo()
        start = time.monotonic()
        status = ext.check_updates(timeout=2)
        took = time.monotonic() - start
    assert status == "unknown (timed out after 2 s)"
    assert took < 10


def test_a_copied_extension_the_builtin_provides_is_listed_not_run(dirs):
    """sd-webui-controlnet (or its zip download's -main folder) in extensions/ is shown, disabled, as provided by the
    built-in controlnet extension; with the built-in disabled, the copy is treated like any extension."""
    user, builtin = dirs
    make_ext(builtin, "controlnet")
    make_ext(user, "sd-webui-controlnet-main")
    make_ext(user, "other")
    exts = {e.name: e for e in extensions.list_extensions(user, builtin)}
    copy = exts["sd-webui-controlnet-main"]
    assert not copy.enabled and "provided by the built-in controlnet" in copy.disabled_reason
    assert exts["other"].enabled and exts["controlnet"].enabled
    assert names(extensions.active()) == ["controlnet", "other"]
    exts = {e.name: e for e in extensions.list_extensions(user, builtin, disabled=["controlnet"])}
    assert exts["sd-webui-controlnet-main"].enabled and not exts["controlnet"].enabled
