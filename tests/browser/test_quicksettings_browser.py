"""Settings → User interface → Quicksettings list: the top bar shows the listed settings, each applies at once, and
Apply settings + Reload UI changes the top bar without a restart. Plus the rule that upgrades an old config.json."""
from __future__ import annotations

import json
import time

import pytest
import requests

from modules.options import QUICKSETTINGS_DEFAULT, Options
from tests.support.browser import browser_page, screenshot


# --- the list in config.json -------------------------------------------------------------------------------------
def test_old_default_list_migrates_and_checkpoint_is_always_shown(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"quicksettings_list": ["sd_model_checkpoint"]}))
    opts = Options(config)
    assert opts.quicksettings_list == list(QUICKSETTINGS_DEFAULT)  # the old fixed default gives way to the new one
    assert opts.quicksettings() == list(QUICKSETTINGS_DEFAULT)

    config.write_text(json.dumps({"quicksettings_list": ["randn_source", "no_such_setting", "randn_source"]}))
    opts = Options(config)
    assert opts.quicksettings_list == ["randn_source", "no_such_setting", "randn_source"]  # kept as saved
    assert opts.quicksettings() == ["sd_model_checkpoint", "randn_source"]  # checkpoint always; unknowns dropped

    opts.set("quicksettings_list", ["sd_vae"])
    assert json.loads(config.read_text())["quicksettings_list"] == ["sd_vae"]
    with pytest.raises(ValueError, match="no_such_setting"):
        opts.set("quicksettings_list", ["no_such_setting"])
    assert "localization" not in opts.quicksettings_candidates()  # the top bar has its own Language switch


# --- in the browser ----------------------------------------------------------------------------------------------
def _open(page, server) -> None:
    page.goto(server.url + "/")
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")
    page.locator("#setting_sd_model_checkpoint [data-testid=status-tracker].hide").wait_for(state="attached")


def _open_tab(page, tab_id: str) -> None:
    page.locator(f"#{tab_id}-button").click()
    page.wait_for_function("(id) => document.getElementById(id + '-button').getAttribute('aria-selected') === 'true'",
                           arg=tab_id)


def _pick(page, elem_id: str, option: str) -> None:
    box = page.locator(f"#{elem_id} input[role=combobox]")
    box.click()
    page.locator(f"#{box.get_attribute('aria-controls')} [role=option][aria-label=\"{option}\"]").click()


def _duplicate_ids(page) -> list[str]:
    return page.evaluate("""() => {
        const seen = new Map();
        for (const el of document.querySelectorAll('[id]:not([id=""])')) seen.set(el.id, (seen.get(el.id) || 0) + 1);
        return [...seen].filter(([id, n]) => n > 1).map(([id]) => id);
    }""")


def _wait_option(server, key: str, value, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (current := requests.get(server.api("options"), timeout=10).json()[key]) != value:
        assert time.monotonic() < deadline, f"{key} is {current!r}, expected {value!r}"
        time.sleep(0.1)  # polling interval; the loop ends on the condition


@pytest.mark.browser
def test_quicksettings_list_changes_the_top_bar(tmp_path, tiny_sd1):
    from tests.support.server import make_data_dir, start_server
    srv = start_server(make_data_dir(tmp_path, tiny_sd1))
    top = "#quicksettings"
    try:
        with browser_page() as page:
            _open(page, srv)
            # the default top bar: checkpoint (+ refresh), VAE, clip skip; the other candidates are hidden
            for elem_id in ("setting_sd_model_checkpoint", "refresh_sd_model_checkpoint", "setting_sd_vae",
                            "setting_CLIP_stop_at_last_layers"):
                page.locator(f"{top} #{elem_id}").wait_for(state="visible")
            page.locator(f"{top} #quicksettings_randn_source").wait_for(state="hidden")
            assert _duplicate_ids(page) == []

            # Settings → User interface: add the random number generator source, drop clip skip
            _open_tab(page, "tab_settings")
            _open_tab(page, "settings_user_interface")
            _pick(page, "setting_quicksettings_list", "randn_source")
            page.locator("#setting_quicksettings_list .token", has_text="CLIP_stop_at_last_layers")\
                .locator(".token-remove").click()
            page.locator("#setting_quicksettings_list .token", has_text="CLIP_stop_at_last_layers")\
                .wait_for(state="detached")
            page.locator("#settings_submit").click()
            page.wait_for_function(
                "() => document.querySelector('#settings_result').innerText.includes('settings changed')")
            assert "1 settings changed: quicksettings_list." in page.locator("#settings_result").inner_text()
            assert requests.get(srv.api("options"), timeout=10).json()["quicksettings_list"] == \
                ["sd_model_checkpoint", "sd_vae", "randn_source"]
            with page.expect_navigation():
                page.locator("#settings_restart_gradio").click()  # Reload UI
            _open(page, srv)
            page.locator(f"{top} #quicksettings_randn_source").wait_for(state="visible")
            page.locator(f"{top} #setting_CLIP_stop_at_last_layers").wait_for(state="hidden")
            page.locator(f"{top} #setting_sd_vae").wait_for(state="visible")
            screenshot(page, "quicksettings_top_bar")

            # a change in the top bar applies at once
            _pick(page, "quicksettings_randn_source", "GPU")
            _wait_option(srv, "randn_source", "GPU")
            assert page.locator("#checkpoint_status .sd-error").count() == 0

            # after a reload the top bar and the Settings page show the value in force
            page.reload()
            _open(page, srv)
            page.wait_for_function(
                "() => document.querySelector('#quicksettings_randn_source input[role=combobox]').value === 'GPU'")
            _open_tab(page, "tab_settings")
            _open_tab(page, "settings_sampler_parameters")
            assert page.locator("#setting_randn_source input[role=combobox]").input_value() == "GPU"
            assert _duplicate_ids(page) == []
    finally:
        srv.stop()
