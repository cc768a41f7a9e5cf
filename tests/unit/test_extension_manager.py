"""modules.extension_manager / extension_index: install from a URL, Apply, Check for updates, the index and the
access gate, on real git repositories, a real config.json and a loopback HTTP server."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from modules import extension_host, extension_index, extension_manager as em, extensions
from modules.cmd_args import parse
from modules.options import Options
from tests.support import ROOT
from tests.support.git_repos import MARKER, commit_file, git, hanging_git_server, make_bare, make_repo, serve_folder


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "extensions").mkdir(parents=True)
    (tmp_path / "builtin").mkdir()
    return d


def args_for(data, *flags):
    return parse(["--data-dir", str(data), *flags], env={})


def listing(data):
    return extensions.list_extensions(data / "extensions", data.parent / "builtin")


# ---- install from URL -----------------------------------------------------------------------------------------
def test_install_from_a_local_repo_clones_moves_and_runs_install_py(data, tmp_path):
    repo = make_repo(tmp_path / "src" / "sample-ext")
    exts = listing(data)
    result = em.install_from_url(args_for(data), data, exts, str(repo))
    target = data / "extensions" / "sample-ext"
    assert result.name == "sample-ext" and result.path == target and result.install_error is None
    assert (target / ".git").is_dir() and (target / "install.py").is_file()
    assert (target / MARKER).read_text() == str(ROOT)          # install.py ran, from the program root
    assert list((data / "tmp").iterdir()) == []                 # the temporary clone is gone
    assert "active after a restart" in result.message
    (ext,) = exts                                               # listed at once, switched on for the next start
    assert ext.name == "sample-ext" and ext.enabled_in_settings and not ext.enabled
    assert ext.disabled_reason == em.INSTALLED_NOTE and ext.remote == str(repo)
    # a fresh listing (what the next start sees) finds it enabled
    (fresh,) = listing(data)
    assert fresh.enabled and fresh.commit_hash == git("rev-parse", "HEAD", cwd=repo)


def test_install_refuses_an_existing_folder_and_an_installed_remote(data, tmp_path):
    repo = make_repo(tmp_path / "src" / "sample-ext")
    exts = listing(data)
    args = args_for(data)
    em.install_from_url(args, data, exts, str(repo))
    with pytest.raises(ValueError, match="folder name: an extension folder named 'sample-ext' already exists"):
        em.install_from_url(args, data, exts, str(make_repo(tmp_path / "other" / "sample-ext")))
    # the same repository, spelled as file:// with a slash, under another folder name
    with pytest.raises(ValueError, match="is already installed as 'sample-ext'"):
        em.install_from_url(args, data, exts, f"file://{repo}/", folder_name="again")
    assert sorted(p.name for p in (data / "extensions").iterdir()) == ["sample-ext"]


def test_install_bad_input_and_failed_clone_leave_nothing(data, tmp_path):
    args, exts = args_for(data), listing(data)
    with pytest.raises(ValueError, match="URL: enter a git URL"):
        em.install_from_url(args, data, exts, "  ")
    with pytest.raises(ValueError, match="URL must start with http://, https://, ssh://, git://, file://"):
        em.install_from_url(args, data, exts, "ftp://example.invalid/x.git")
    with pytest.raises(ValueError, match="is not a folder"):
        em.install_from_url(args, data, exts, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="URL must not start with '-'"):
        em.install_from_url(args, data, exts, "--upload-pack=touch /tmp/x")
    repo = make_repo(tmp_path / "src" / "ok")
    with pytest.raises(ValueError, match="folder name '../escape' is not usable"):
        em.install_from_url(args, data, exts, str(repo), folder_name="../escape")
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    with pytest.raises(RuntimeError, match="git clone .* failed"):
        em.install_from_url(args, data, exts, str(plain))
    with pytest.raises(RuntimeError, match="git clone .* failed"):
        em.install_from_url(args, data, exts, str(repo), branch="no-such-branch")
    assert list((data / "extensions").iterdir()) == [] and list((data / "tmp").iterdir()) == [] and exts == []


def test_install_branch_default_name_from_bare_url_and_failing_install_py(data, tmp_path):
    work = make_repo(tmp_path / "work", {"install.py": "import sys\nprint('no luck')\nsys.exit(3)\n"})
    git("checkout", "-q", "-b", "dev", cwd=work)
    commit_file(work, "dev.txt", "dev\n", "dev only")
    bare = make_bare(work, tmp_path / "fancy.git")
    exts = listing(data)
    result = em.install_from_url(args_for(data), data, exts, f"file://{bare}", branch="dev")
    target = data / "extensions" / "fancy"                     # last URL segment without .git
    assert result.name == "fancy" and (target / "dev.txt").is_file()
    assert exts[0].branch == "dev"
    assert result.install_error.startswith("install.py exited with code 3") and "no luck" in result.install_error
    assert exts[0].errors["install"] == result.install_error and "install.py failed" in result.message


# ---- Apply ------------------------------------------------------------------------------------------------------
def options_for(data):
    opts = Options(data / "config.json")
    extension_host._register_settings(SimpleNamespace(options=opts))   # the settings the server registers
    return opts


def test_apply_saves_the_disabled_list_and_mode_into_config_json(data):
    for name in ("alpha", "beta", "gamma"):
        (data / "extensions" / name).mkdir()
    exts, opts = listing(data), options_for(data)
    result = em.apply(args_for(data), opts, exts, ["alpha", "gamma"], "extra")
    saved = json.loads((data / "config.json").read_text())
    assert saved["disabled_extensions"] == ["beta"] and saved["disable_all_extensions"] == "extra"
    assert result.disabled == ["beta"] and "disabled extensions beta" in result.message()
    assert extensions.read_disabled(data / "config.json") == (["beta"], "extra")   # what the next start reads
    # a page opened before "gamma" existed cannot tick it: it keeps its setting (on) instead of being switched off
    em.apply(args_for(data), opts, exts, ["alpha"], "none", shown_names=["alpha", "beta"])
    assert extensions.read_disabled(data / "config.json") == (["beta"], "none")
    with pytest.raises(ValueError, match="disable all extensions must be one of none, extra, all"):
        em.apply(args_for(data), opts, exts, [], "some")
    with pytest.raises(ValueError, match="unknown extension\\(s\\) nope; installed: alpha, beta, gamma"):
        em.apply(args_for(data), opts, exts, ["nope"])


def test_check_then_apply_updates_the_ticked_extension(data, tmp_path):
    work = make_repo(tmp_path / "work")
    bare = make_bare(work, tmp_path / "remote.git")
    git("clone", "-q", str(bare), str(data / "extensions" / "upd"), cwd=tmp_path)
    exts, args = listing(data), args_for(data)
    assert em.check_updates(args, exts, timeout=20) == {"upd": "latest"}
    commit_file(work, "new.py", "x = 1\n", "second")
    git("push", "-q", str(bare), "main", cwd=work)
    assert em.check_updates(args, exts, timeout=20) == {"upd": "new commits"}
    assert em.installed_rows(exts)[0].can_update
    result = em.apply(args, options_for(data), exts, ["upd"], "none", update_names=["upd"])
    assert result.updated == ["upd"] and result.errors == []
    assert (data / "extensions" / "upd" / "new.py").is_file()
    assert exts[0].commit_hash == git("rev-parse", "HEAD", cwd=work)


# ---- Check for updates ------------------------------------------------------------------------------------------
def test_check_updates_in_parallel_with_one_status_per_row(data, tmp_path):
    work = make_repo(tmp_path / "work")
    bare = make_bare(work, tmp_path / "remote.git")
    for name in ("behind", "hang1", "hang2", "dead"):
        git("clone", "-q", str(bare), str(data / "extensions" / name), cwd=tmp_path)
    (data / "extensions" / "handmade").mkdir()
    (data.parent / "builtin" / "core-ext").mkdir()
    commit_file(work, "new.py", "x = 1\n", "second")
    git("push", "-q", str(bare), "main", cwd=work)
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=data / "extensions" / "dead")
    with hanging_git_server() as url:
        for name in ("hang1", "hang2"):
            git("remote", "set-url", "origin", f"{url}/{name}.git", cwd=data / "extensions" / name)
        exts = listing(data)
        for ext in exts:
            ext.read_info_from_repo()
        start = time.monotonic()
        statuses = em.check_updates(args_for(data), exts, timeout=3)
        took = time.monotonic() - start
    assert statuses["behind"] == "new commits"
    assert statuses["hang1"] == statuses["hang2"] == "unknown (timed out after 3 s)"
    assert statuses["dead"].startswith("unknown (") and "timed out" not in statuses["dead"]
    assert statuses["handmade"] == "local" and statuses["core-ext"] == "built-in"
    assert took < 5.5, f"two hanging remotes at 3 s each took {took:.1f} s: not checked in parallel"
    rows = {r.name: r for r in em.installed_rows(exts)}
    assert rows["handmade"].remote == "local" and rows["core-ext"].remote == "built-in"
    assert rows["behind"].status == "new commits" and rows["behind"].version == rows["behind"].version[:8]


# ---- the index --------------------------------------------------------------------------------------------------
INDEX = {"tags": {"script": "Script", "ads": "Ads"},
         "extensions": [
             {"name": "Zeta tool", "url": "https://github.com/x/zeta", "description": "Z things", "tags": ["script"],
              "added": "2023-01-05"},
             {"name": "alpha wildcards", "url": "https://github.com/x/Alpha.git", "description": "Wildcards",
              "tags": ["script"], "added": "2022-03-01"},
             {"name": "Ad thing", "url": "https://github.com/x/ad", "description": "buy", "tags": ["ads"],
              "added": "2024-01-01"},
             {"name": "no url"},
             {"name": "Undated", "url": "https://github.com/x/undated", "description": "", "tags": []}]}


def test_index_from_a_local_http_server_marks_installed_filters_and_sorts(data, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.json").write_text(json.dumps(INDEX))
    installed = make_repo(tmp_path / "src" / "alpha")
    git("remote", "add", "origin", "git@github.com:X/alpha", cwd=installed)   # same repo, other spelling
    git("clone", "-q", str(installed), str(data / "extensions" / "alpha-local"), cwd=tmp_path)
    git("remote", "set-url", "origin", "git@github.com:X/alpha", cwd=data / "extensions" / "alpha-local")
    with serve_folder(tmp_path / "site") as base:
        index = extension_index.load(args_for(data), f"{base}/index.json")
    assert [e.name for e in index.entries] == ["Zeta tool", "alpha wildcards", "Ad thing", "Undated"]
    extension_index.mark_installed(index, listing(data))
    assert [e.name for e in index.entries if e.installed] == ["alpha wildcards"]
    names = [e.name for e in extension_index.select(index)]          # ads and installed hidden by default
    assert names == ["Zeta tool", "Undated"]
    assert [e.name for e in extension_index.select(index, hidden_tags=[], sort="oldest first")] == \
        ["alpha wildcards", "Zeta tool", "Ad thing", "Undated"]
    assert [e.name for e in extension_index.select(index, hidden_tags=[], sort="a-z")] == \
        ["Ad thing", "alpha wildcards", "Undated", "Zeta tool"]
    assert [e.name for e in extension_index.select(index, "z THINGS", hidden_tags=[], sort="z-a")] == ["Zeta tool"]
    assert "ads" in extension_index.tag_choices(index) and "installed" in extension_index.tag_choices(index)
    with pytest.raises(ValueError, match="sort must be one of newest first, oldest first, a-z, z-a"):
        extension_index.select(index, sort="stars")


def test_index_offline_message_and_environment_override(data, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]           # nothing listens there once the socket is closed
    url = f"http://127.0.0.1:{port}/index.json"
    with pytest.raises(extension_index.IndexLoadError) as info:
        extension_index.load(args_for(data), url, timeout=5)
    text = str(info.value)
    assert text.startswith(f"could not load the extension index from {url}: ")
    assert text.endswith("; you can still install from a URL") and "refused" in text.lower()
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(extension_index.IndexLoadError, match="is not an extension index"):
        extension_index.load(args_for(data), str(tmp_path / "bad.json"))
    monkeypatch.setenv("WEBUI_EXTENSIONS_INDEX", "http://mirror.invalid/index.json")
    assert extension_index.default_url() == "http://mirror.invalid/index.json"
    monkeypatch.delenv("WEBUI_EXTENSIONS_INDEX")
    assert extension_index.default_url() == extension_index.DEFAULT_INDEX_URL


# ---- the access gate --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, blocked", [
    ([], False), (["--listen"], True), (["--server-name", "0.0.0.0"], True), (["--server-name", "myhost"], True),
    (["--server-name", "127.0.0.1"], False), (["--server-name", "localhost"], False), (["--share"], True),
    (["--listen", "--enable-insecure-extension-access"], False)])
def test_access_gate_decision_and_a1111_flag(data, flags, blocked):
    args = args_for(data, *flags)
    reason = em.access_blocked(args)
    assert args.disable_extension_access is blocked and (reason is not None) is blocked
    if blocked:
        assert "--enable-insecure-extension-access" in reason and "runs its code on this machine" in reason


def test_every_action_is_refused_behind_listen(data, tmp_path):
    repo = make_repo(tmp_path / "src" / "sample-ext")
    (data / "extensions" / "present").mkdir()
    args, exts, opts = args_for(data, "--listen"), listing(data), options_for(data)
    for action in (lambda: em.install_from_url(args, data, exts, str(repo)),
                   lambda: em.apply(args, opts, exts, [], "all"),
                   lambda: em.check_updates(args, exts),
                   lambda: extension_index.load(args, str(tmp_path / "index.json"))):
        with pytest.raises(em.AccessDenied, match="started with --listen"):
            action()
    assert [p.name for p in (data / "extensions").iterdir()] == ["present"]
    assert not (data / "config.json").exists() and len(exts) == 1
    allowed = args_for(data, "--listen", "--enable-insecure-extension-access")
    assert em.install_from_url(allowed, data, exts, str(repo)).name == "sample-ext"


# ---- the tab's table and the restart ----------------------------------------------------------------------------
def test_installed_table_shows_errors_and_why_an_extension_is_off(data):
    for name in ("broken", "off"):
        (data / "extensions" / name).mkdir()
    exts = extensions.list_extensions(data / "extensions", data.parent / "builtin", disabled=["off"])
    exts[0].report_error("import", "Traceback (most recent call last):\n  ...\nRuntimeError: <boom> & more")
    from modules.ui.extensions_tab import installed_html
    page = installed_html(exts)
    assert "<th>Errors</th>" in page
    assert "<b>import</b>: RuntimeError: &lt;boom&gt; &amp; more" in page     # the last line, escaped
    assert 'data-extension="off" data-enabled="false"' in page and "disabled in settings" in page


def test_schedule_restart_execs_the_same_command_in_the_same_process(tmp_path):
    marker = tmp_path / "first-run"
    script = tmp_path / "restarting.py"
    script.write_text(f"""import os, sys, threading
sys.path.insert(0, {str(ROOT)!r})
from modules import extension_manager
marker = {str(marker)!r}
if not os.path.exists(marker):
    open(marker, "w").write(str(os.getpid()))
    print("first", os.getpid(), sys.argv[1:], flush=True)
    extension_manager.schedule_restart(0.05)
    threading.Event().wait(30)
    print("not restarted", flush=True)
else:
    print("second", os.getpid(), sys.argv[1:], flush=True)
""")
    out = subprocess.run([sys.executable, "-u", str(script), "--flag", "value"], capture_output=True, text=True,
                         timeout=60).stdout.split("\n")
    first, second = out[0].split(" ", 2), out[1].split(" ", 2)
    assert first[0] == "first" and second[0] == "second", out
    assert first[1] == second[1] == marker.read_text()          # the same process id: execv, not a child
    assert first[2] == second[2] == "['--flag', 'value']"
    assert em.restart_command() == [sys.executable, *sys.orig_argv[1:]]
