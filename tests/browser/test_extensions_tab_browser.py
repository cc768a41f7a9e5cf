"""The Extensions tab in Chromium against real servers: the Installed table with its Errors column, untick + Apply
and restart (the same process comes back on the same port with the extension off), Install from URL and from the
Available index (local git repositories, an index on a loopback HTTP server), and the --listen gate."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from tests.support.browser import browser_page, choose, open_tab, poll, screenshot
from tests.support.git_repos import MARKER, make_repo, serve_folder
from tests.support.server import make_data_dir, start_server

pytestmark = pytest.mark.browser

SAMPLES = Path(__file__).resolve().parent.parent / "support" / "sample_extensions"
SLOW = 240_000  # ms: a restart loads the app again, on two shared cores


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("ext-tab"), tiny_sd1)
    shutil.copytree(SAMPLES / "sample-broken", data / "extensions" / "sample-broken")
    srv = start_server(data, wait_model=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def listen_server(tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("ext-listen"), tiny_sd1)
    shutil.copytree(SAMPLES / "sample-broken", data / "extensions" / "sample-broken")
    srv = start_server(data, "--listen", wait_model=False)
    yield srv
    srv.stop()


def api_extensions(server) -> dict:
    return {e["name"]: e for e in requests.get(server.api("extensions"), timeout=30).json()}


def open_extensions(page, server) -> None:
    page.set_default_timeout(SLOW)   # the page builds slowly while other servers and browsers share the two cores
    page.goto(server.url + "/")
    open_tab(page, "tab_extensions")
    page.locator("#extensions_installed_table table").wait_for(state="visible")


def row(page, name: str):
    return page.locator(f'#extensions_installed_table tr[data-extension="{name}"]')


def fill(page, elem_id: str, text: str) -> None:
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    box.fill(text)


def click_and_wait_message(page, button_id: str, needle: str) -> str:
    """Click, then wait for this click's message (``needle`` must not be in the message shown before)."""
    message = page.locator("#extensions_message")
    assert needle not in message.inner_text(), f"{needle!r} is already shown; the test cannot tell the clicks apart"
    page.locator(f"#{button_id}").click()
    page.wait_for_function("(needle) => document.getElementById('extensions_message').innerText.includes(needle)",
                           arg=needle, timeout=SLOW)
    return message.inner_text()


def apply_and_wait_restart(page, server, enabled_check) -> None:
    """Apply and restart UI; the server process restarts in place and the page reloads itself once it is back."""
    pid = server.proc.pid
    with page.expect_navigation(timeout=SLOW):
        click_and_wait_message(page, "extensions_apply", "Restarting the server")
    poll(lambda: _try(lambda: enabled_check(api_extensions(server))), SLOW / 1000, "the server did not come back")
    assert server.proc.poll() is None and server.proc.pid == pid     # the same process, not a replacement
    open_tab(page, "tab_extensions")
    page.locator("#extensions_installed_table table").wait_for(state="visible")


def _try(fn):
    try:
        return fn()
    except requests.RequestException:
        return None


def test_installed_table_then_untick_apply_and_restart(ext_server):
    with browser_page() as page:
        open_extensions(page, ext_server)
        broken = row(page, "sample-broken")
        assert broken.get_attribute("data-enabled") == "true"
        assert "fails on purpose at import" in broken.locator("td.ext-errors").inner_text()
        assert broken.locator("td").nth(1).inner_text() == "local"        # copied in by hand, no git
        box = page.locator("#extensions_enabled label", has_text="sample-broken").locator("input")
        assert box.is_checked()
        box.uncheck()
        apply_and_wait_restart(page, ext_server, lambda exts: exts["sample-broken"]["enabled"] is False)
        broken = row(page, "sample-broken")
        assert broken.get_attribute("data-enabled") == "false"
        assert "disabled in settings" in broken.inner_text()
        assert not page.locator("#extensions_enabled label", has_text="sample-broken").locator("input").is_checked()
        screenshot(page, "extensions_tab_after_restart")
    saved = json.loads((ext_server.data_dir / "config.json").read_text())
    # config.json keeps non-default values only: "none" is the default of disable_all_extensions
    assert saved["disabled_extensions"] == ["sample-broken"] and saved.get("disable_all_extensions", "none") == "none"


def test_install_from_url_and_from_the_index_then_restart(ext_server, tmp_path):
    by_url = make_repo(tmp_path / "repos" / "url-ext")
    by_index = make_repo(tmp_path / "repos" / "index-ext")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.json").write_text(json.dumps({"tags": {"script": "Script"}, "extensions": [
        {"name": "Index ext", "url": f"file://{by_index}", "description": "from the index", "tags": ["script"],
         "added": "2024-01-01"},
        {"name": "Ad ext", "url": "https://example.invalid/ad", "description": "hidden", "tags": ["ads"]}]}))
    with browser_page() as page, serve_folder(site) as base:
        open_extensions(page, ext_server)
        open_tab(page, "tab_extensions_from_url")
        fill(page, "extensions_install_url", str(by_url))
        text = click_and_wait_message(page, "extensions_install_button", "active after a restart")
        assert "Installed url-ext" in text
        new = row(page, "url-ext")
        new.wait_for(state="attached")
        assert "active after Apply and restart" in new.inner_text()
        assert (ext_server.data_dir / "extensions" / "url-ext" / MARKER).is_file()   # install.py ran at once
        # the same URL again is refused, in the tab
        fill(page, "extensions_install_url", str(by_url))
        click_and_wait_message(page, "extensions_install_button", "folder named 'url-ext' already exists")

        open_tab(page, "tab_extensions_available")
        fill(page, "extensions_index_url", f"{base}/index.json")
        click_and_wait_message(page, "extensions_load", "Loaded 2 extension(s)")
        table = page.locator("#extensions_available_table")
        table.locator('tr[data-extension="Index ext"]').wait_for(state="visible")
        assert table.locator('tr[data-extension="Ad ext"]').count() == 0            # "ads" hidden by default
        choose(page, "extensions_available_pick", "Index ext")
        click_and_wait_message(page, "extensions_available_install", "Installed index-ext")
        open_tab(page, "tab_extensions_installed")
        apply_and_wait_restart(page, ext_server,
                               lambda exts: exts.get("url-ext", {}).get("enabled") and exts["index-ext"]["enabled"])
        for name in ("url-ext", "index-ext"):
            assert row(page, name).get_attribute("data-enabled") == "true"
            assert row(page, name).locator("td").nth(1).inner_text() != "local"       # cloned: a git remote


def test_index_offline_message(ext_server, tmp_path):
    with browser_page() as page:
        open_extensions(page, ext_server)
        open_tab(page, "tab_extensions_available")
        url = "http://127.0.0.1:9/index.json"          # the discard port: nothing answers
        fill(page, "extensions_index_url", url)
        text = click_and_wait_message(page, "extensions_load", "you can still install from a URL")
        assert f"could not load the extension index from {url}" in text


def test_listen_shows_why_and_refuses_every_action(listen_server, tmp_path):
    repo = make_repo(tmp_path / "repos" / "refused-ext")
    with browser_page() as page:
        open_extensions(page, listen_server)
        gate = page.locator("#extensions_access")
        assert "--listen" in gate.inner_text() and "--enable-insecure-extension-access" in gate.inner_text()
        open_tab(page, "tab_extensions_from_url")
        fill(page, "extensions_install_url", str(repo))
        text = click_and_wait_message(page, "extensions_install_button", "Install from URL: Extension access is "
                                                                         "disabled")
        assert "--enable-insecure-extension-access" in text
        open_tab(page, "tab_extensions_installed")
        page.locator("#extensions_enabled label", has_text="sample-broken").locator("input").uncheck()
        click_and_wait_message(page, "extensions_apply", "Apply and restart UI: Extension access is disabled")
        click_and_wait_message(page, "extensions_check", "Check for updates: Extension access is disabled")
        open_tab(page, "tab_extensions_available")
        click_and_wait_message(page, "extensions_load", "Load the index: Extension access is disabled")
        screenshot(page, "extensions_tab_listen")
    assert not (listen_server.data_dir / "extensions" / "refused-ext").exists()
    config = listen_server.data_dir / "config.json"     # the server writes the loaded checkpoint there, nothing else
    assert "disabled_extensions" not in (json.loads(config.read_text()) if config.exists() else {})
    assert api_extensions(listen_server)["sample-broken"]["enabled"] is True
