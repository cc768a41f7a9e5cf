"""The launcher and extensions: A1111's `launch` module surface as install.py sees it (in a subprocess, as
install.py runs), and launch.py running install.py once per change, never for disabled extensions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT


def launch_py(code: str, env_extra: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` the way an install.py runs: another process, PYTHONPATH = program root."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMMANDLINE_ARGS", "SD_WEBUI_LAUNCH_ARGS")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=120)


def test_import_launch_starts_nothing(tmp_path):
    out = launch_py("""
        import sys, threading
        before = set(sys.modules)
        import launch
        heavy = [m for m in ("torch", "gradio", "diffusers", "webui", "fastapi") if m in sys.modules]
        print("heavy", heavy, "threads", threading.active_count())
    """, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "heavy [] threads 1" and out.stderr == ""
    assert list(tmp_path.iterdir()) == []          # nothing written either


def test_run_accepts_a1111_and_launcher_forms():
    out = launch_py("""
        import sys, launch
        print(repr(launch.run("echo hello", desc="saying hello")))
        try:
            launch.run("echo oops >&2; exit 3", errdesc="Couldn't do it")
        except RuntimeError as e:
            print("raised:", " | ".join(str(e).splitlines()))
        launch.run([sys.executable, "-c", "print('list form ran')"], "list form")
        launch.run([sys.executable, "-c", "raise SystemExit(4)"], "failing step")
        print("not reached")
    """)
    lines = out.stdout.splitlines()
    assert lines[0] == "saying hello" and lines[1] == "'hello\\n'"
    assert lines[2] == "raised: Couldn't do it. | Command: echo oops >&2; exit 3 | Error code: 3 | stderr: oops"
    assert "[launch] list form:" in lines[3] and lines[4] == "list form ran"
    assert "not reached" not in out.stdout and out.returncode == 4
    assert "[launch] failed: failing step (exit code 4)" in out.stderr


def test_is_installed_git_tag_args_and_run_pip_skip_install():
    out = launch_py("""
        import launch, time
        from modules import launch_utils
        print(launch.is_installed("pip"), launch.is_installed("json"), launch.is_installed("no_such_pkg_zz"))
        tag = launch.git_tag()
        print(tag, int(tag.replace("v", "").replace(".", "")), launch_utils.git_tag() == tag)
        print(launch.args.skip_install, launch.args.data_dir)
        start = time.monotonic()
        print(launch.run_pip("install no-such-package-zz-123", "nothing"), time.monotonic() - start < 1)
        print(launch.python == launch_utils.python, launch.dir_repos, launch.repo_dir("x").endswith("repositories/x"))
        print(len(launch.commit_hash()) in (40, 6))
    """, {"SD_WEBUI_LAUNCH_ARGS": "--skip-install --wildcards-dir /w --data-dir /d"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["True True False", "v1.10.1 1101 True", "True /d", "None True",
                                       "True repositories True", "True"]


def test_run_pip_runs_pip_and_reports_failure():
    out = launch_py("""
        import launch
        try:
            launch.run_pip("install no-such-package-zz-123", "nothing")
        except RuntimeError as e:
            print("raised:", str(e).splitlines()[0])
    """, {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(ROOT / "no-such-folder")})
    assert out.stdout.splitlines() == ["Installing nothing", "raised: Couldn't install nothing."]


def write_ext(data, name, install_code):
    folder = data / "extensions" / name
    folder.mkdir(parents=True)
    (folder / "install.py").write_text(install_code)
    return folder


MARK = "import os\nopen(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ran'), 'a').write('x')\n"


def launch(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("COMMANDLINE_ARGS", "SD_WEBUI_LAUNCH_ARGS")}
    return subprocess.run(["python3", str(ROOT / "launch.py"), "--exit", "--no-download-sd-model", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "venv" / ".requirements-hash").is_file(),
                    reason="needs the venv made by `python3 launch.py` (the README's commands)")
def test_launcher_runs_install_py_once_and_never_for_disabled(tmp_path):
    on = write_ext(tmp_path, "ext-on", MARK)
    off = write_ext(tmp_path, "ext-off", MARK)
    failing = write_ext(tmp_path, "ext-fails", "raise SystemExit('broken on purpose')\n")
    (tmp_path / "config.json").write_text(json.dumps({"disabled_extensions": ["ext-off"]}))
    out = launch("--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (on / "ran").read_text() == "x" and not (off / "ran").exists()
    assert "ext-fails: failed" in out.stderr and "environment ready" in out.stdout
    results = json.loads((tmp_path / "cache" / "extension-installs.json").read_text())
    assert results["ext-on"]["status"] == "ok" and "broken on purpose" in results["ext-fails"]["error"]
    assert "ext-off" not in results
    assert (tmp_path / "cache" / "extension-constraints.txt").read_text().count("torch==") == 1
    out = launch("--data-dir", str(tmp_path))                          # cached: not again
    assert out.returncode == 0 and (on / "ran").read_text() == "x"
    out = launch("--data-dir", str(tmp_path), "--reinstall-extensions", "--safe-mode")
    assert (on / "ran").read_text() == "x"                             # safe mode: nothing runs
    out = launch("--data-dir", str(tmp_path), "--reinstall-extensions")
    assert out.returncode == 0 and (on / "ran").read_text() == "xx"
    out = launch("--data-dir", str(tmp_path), "--reinstall-extensions", "--skip-install")
    assert (on / "ran").read_text() == "xx"
