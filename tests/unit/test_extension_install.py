"""modules.extension_install + modules.pip_front: install.py runs, is cached, is reported, and cannot change the
pinned core packages. Everything runs for real in a throw-away venv with tiny local wheels (no network):
a fake `transformers` 5.23.0 is the pinned core package, 4.0.0 is there to be (not) downgraded to."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from modules import extension_install as ei
from modules import extensions
from tests.support import ROOT
from tests.support.wheels import build_wheel, make_venv, pip_offline_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    build_wheel(folder, "transformers", "5.23.0")
    build_wheel(folder, "transformers", "4.0.0")
    # dynamic-prompts' shape: extras, one of which needs transformers<5
    build_wheel(folder, "fakepkg", "0.31.0", requires=["helperpkg>=1"],
                extras={"magic": ["transformers<5"], "attn": ["attnpkg"]})
    build_wheel(folder, "helperpkg", "1.0")
    build_wheel(folder, "attnpkg", "1.0")
    build_wheel(folder, "oldonly", "1.0", requires=["transformers<5"])
    return folder


@pytest.fixture(scope="module")
def template_venv(tmp_path_factory, wheels) -> Path:
    folder = tmp_path_factory.mktemp("venv-template") / "venv"
    python = make_venv(folder)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "transformers==5.23.0"], check=True,
                   env={**pip_offline_env(wheels), "PATH": "/usr/bin:/bin"})
    return folder


@pytest.fixture
def venv_python(tmp_path, template_venv, wheels, monkeypatch) -> str:
    """A fresh copy of the template venv; pip in this test installs from `wheels` only."""
    copy = tmp_path / "venv"
    shutil.copytree(template_venv, copy, symlinks=True)
    for key, value in pip_offline_env(wheels).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SD_WEBUI_LAUNCH_ARGS", raising=False)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    return str(copy / "bin" / "python")


def versions(python) -> dict:
    return ei.installed_versions(python, ["transformers", "fakepkg", "helperpkg", "attnpkg", "oldonly"])


def make_ext(root: Path, name: str, install: str, enabled=True) -> extensions.Extension:
    folder = root / "extensions" / name
    folder.mkdir(parents=True)
    (folder / "install.py").write_text(textwrap.dedent(install))
    ext = extensions.Extension(name, folder)
    ext.enabled = enabled
    return ext


COUNTING = """
    import os, sys
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "runs.txt"), "a") as f:
        f.write(os.getcwd() + "|" + os.environ["PYTHONPATH"] + "\\n")
"""


def runs(ext) -> list[str]:
    f = Path(ext.path) / "runs.txt"
    return f.read_text().splitlines() if f.is_file() else []


def test_install_runs_once_then_is_cached_until_something_changes(tmp_path, venv_python):
    ext = make_ext(tmp_path, "counter", COUNTING)
    cache = tmp_path / "cache"
    ran = ei.install_all([ext], cache, venv_python)
    assert ran["counter"]["status"] == "ok"
    cwd, pythonpath = runs(ext)[0].split("|")
    assert cwd == str(ROOT) and str(ROOT) in pythonpath.split(":")   # A1111's working directory and PYTHONPATH
    assert ei.install_all([ext], cache, venv_python) == {} and len(runs(ext)) == 1     # cached
    (Path(ext.path) / "install.py").write_text(textwrap.dedent(COUNTING) + "# changed\n")
    assert "counter" in ei.install_all([ext], cache, venv_python) and len(runs(ext)) == 2
    (Path(ext.path) / "requirements.txt").write_text("helperpkg\n")
    assert "counter" in ei.install_all([ext], cache, venv_python) and len(runs(ext)) == 3
    assert ei.install_all([ext], cache, venv_python) == {}
    assert "counter" in ei.install_all([ext], cache, venv_python, reinstall=True) and len(runs(ext)) == 4
    stored = json.loads((cache / "extension-installs.json").read_text())
    assert stored["counter"]["status"] == "ok" and stored["counter"]["returncode"] == 0


def test_failing_install_is_reported_next_one_still_installs_and_failure_is_retried(tmp_path, venv_python):
    bad = make_ext(tmp_path, "a-bad", "import sys\nprint('cannot build the thing')\nsys.exit(3)\n")
    good = make_ext(tmp_path, "b-good", COUNTING)
    off = make_ext(tmp_path, "c-off", COUNTING, enabled=False)
    cache = tmp_path / "cache"
    ran = ei.install_all([bad, good, off], cache, venv_python)
    assert set(ran) == {"a-bad", "b-good"} and runs(off) == []        # a disabled extension's install.py never runs
    assert ran["a-bad"]["status"] == "failed" and ran["a-bad"]["returncode"] == 3
    assert "exited with code 3" in bad.errors["install"] and "cannot build the thing" in bad.errors["install"]
    assert ran["b-good"]["status"] == "ok" and len(runs(good)) == 1
    again = ei.install_all([bad, good, off], cache, venv_python)
    assert set(again) == {"a-bad"}                                    # the failure is retried, the success cached
    # the server side: errors from the results file
    fresh = [extensions.Extension("a-bad", bad.path), extensions.Extension("b-good", good.path)]
    fresh[0].errors.clear()
    ei.apply_results(fresh, cache)
    assert "exited with code 3" in fresh[0].errors["install"] and "install" not in fresh[1].errors


def test_downgrading_a_pinned_package_is_refused_while_the_rest_installs(tmp_path, venv_python):
    ext = make_ext(tmp_path, "downgrader", """
        import launch
        launch.run_pip("install transformers==4.0.0 helperpkg", "deps")
        print("run_pip returned")
    """)
    result = ei.run_installer(ext, tmp_path / "cache", venv_python)
    v = versions(venv_python)
    assert v["transformers"] == "5.23.0" and v["helperpkg"] == "1.0"
    assert result["status"] == "partial" and "run_pip returned" in result["output_tail"]
    (item,) = result["left_out"]
    assert item["requirement"] == "transformers==4.0.0" and item["pins"] == ["transformers==5.23.0"]
    assert "transformers==4.0.0 (blocked by the pin transformers==5.23.0)" in ext.errors["install"]


def test_extra_that_conflicts_is_left_out_the_package_and_other_extras_install(tmp_path, venv_python):
    # the way sd-dynamic-prompts installs: its own `sys.executable -m pip`, check_call, version check
    ext = make_ext(tmp_path, "dynprompts-like", """
        import importlib.metadata, subprocess, sys
        def ok():
            try:
                return importlib.metadata.version("fakepkg") == "0.31.0"
            except importlib.metadata.PackageNotFoundError:
                return False
        if not ok():
            subprocess.check_call([sys.executable, "-m", "pip", "install", "fakepkg[attn,magic]~=0.31.0"])
        print("installed:", ok())
    """)
    result = ei.run_installer(ext, tmp_path / "cache", venv_python)
    v = versions(venv_python)
    assert v == {"transformers": "5.23.0", "fakepkg": "0.31.0", "helperpkg": "1.0", "attnpkg": "1.0"}
    assert result["status"] == "partial" and result["returncode"] == 0 and "installed: True" in result["output_tail"]
    (item,) = result["left_out"]
    assert item["extra"] == "magic" and item["pins"] == ["transformers==5.23.0"]
    assert "transformers<5" in item["reason"]
    assert "extra [magic] of fakepkg[attn,magic]~=0.31.0" in ext.errors["install"]


def test_nothing_installable_blocks_the_extension(tmp_path, venv_python):
    ext = make_ext(tmp_path, "needs-old", """
        import subprocess, sys
        subprocess.check_call([sys.executable, "-m", "pip", "install", "oldonly"])
    """)
    cache = tmp_path / "cache"
    result = ei.run_installer(ext, cache, venv_python)
    assert result["status"] == "blocked" and "oldonly" not in versions(venv_python)
    fresh = extensions.Extension("needs-old", ext.path)
    ei.apply_results([fresh], cache)
    assert not fresh.enabled and "install.py" in fresh.disabled_reason


def test_changed_core_package_is_put_back_and_uninstall_refused(tmp_path, venv_python, wheels):
    # --isolated makes pip ignore PIP_CONSTRAINT: the before/after check still catches it
    ext = make_ext(tmp_path, "force", f"""
        import subprocess, sys
        subprocess.call([sys.executable, "-m", "pip", "uninstall", "-y", "transformers"])
        subprocess.check_call([sys.executable, "-m", "pip", "--isolated", "install", "--no-index",
                               "--find-links", {str(wheels)!r}, "transformers==4.0.0"])
    """)
    result = ei.run_installer(ext, tmp_path / "cache", venv_python)
    assert versions(venv_python)["transformers"] == "5.23.0"
    assert result["refused"] == ["transformers"]
    assert result["restored"] == ["transformers 5.23.0 → 4.0.0"]
    assert result["status"] == "partial" and "put back" in ext.errors["install"]


def test_hung_install_is_stopped_at_the_timeout(tmp_path, venv_python):
    ext = make_ext(tmp_path, "hangs", """
        import subprocess, sys, time
        print("starting", flush=True)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])   # a child that hangs too
        time.sleep(600)
    """)
    start = time.monotonic()
    result = ei.run_installer(ext, tmp_path / "cache", venv_python, timeout=3)
    assert time.monotonic() - start < 60
    assert result["status"] == "timed out" and result["returncode"] is None
    assert "within 3 s" in ext.errors["install"] and "starting" in result["output_tail"]


def test_timeout_setting():
    from modules.cmd_args import parse
    assert ei.timeout_from(parse([], env={})) == ei.DEFAULT_TIMEOUT
    assert ei.timeout_from(parse(["--extension-install-timeout", "30"], env={})) == 30
    with pytest.raises(ValueError, match="more than 0 seconds"):
        ei.timeout_from(parse(["--extension-install-timeout", "0"], env={}))


def test_a_pin_refused_as_no_matching_distribution_is_a_conflict(tmp_path, monkeypatch):
    """With the constraints in force pip may report a pinned package as "No matching distribution" (seen with the
    real sd-dynamic-prompts install: its magicprompt extra wants transformers<5) instead of ResolutionImpossible."""
    from modules import pip_front
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("transformers==5.23.0\n")
    monkeypatch.setenv("PIP_CONSTRAINT", str(constraints))
    output = ("ERROR: Could not find a version that satisfies the requirement transformers[torch]<5; "
              "extra == \"magicprompt\" (from dynamicprompts[attentiongrabber,magicprompt]) (from versions: 5.23.0)\n"
              "ERROR: No matching distribution found for transformers[torch]<5; extra == \"magicprompt\"\n")
    assert pip_front.is_conflict(output)
    reason, pins = pip_front.conflict_reason(output)
    assert pins == ["transformers==5.23.0"] and 'transformers[torch]<5; extra == "magicprompt"' in reason
    assert not pip_front.is_conflict("ERROR: No matching distribution found for leftpad-nonexistent>=9\n")
