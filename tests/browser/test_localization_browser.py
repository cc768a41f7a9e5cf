"""Localization in a real browser against the real server: switching language live (no reload), generating in
Chinese with English values and infotext, coverage of every UI string by zh_CN.json, a large third-party-style pack
applied in under 300 ms, a broken file reported, and the choice surviving a restart."""
from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import requests

from tests.support import ROOT
from tests.support.browser import browser_page, screenshot, set_number
from tests.support.localization_helpers import REVEAL_JS, collect_missing, open_ui, switch_language
from tests.support.server import make_data_dir, start_server

pytestmark = pytest.mark.browser

ZH = json.loads((ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))
GENERATE_TIMEOUT = 240_000  # ms; CPU generation shares two cores with whatever else runs on the machine
BROKEN = '{\n  "Prompt": "提示词",\n    "Seed" "种子"\n}\n'  # line 3: the colon is missing before column 12


def big_pack_text() -> str:
    """A third-party pack as A1111 users have them: 1,000+ entries, most for strings this UI does not have, bilingual
    values, icons mapping to themselves, and a duplicate key written twice (the last one must win)."""
    lines = [f'    {json.dumps(f"Unused option number {i} of some extension")}: {json.dumps(f"扩展选项 {i}")}'
             for i in range(1100)]
    lines += [f"    {json.dumps(k)}: {json.dumps(v if '{' in k else v + '/' + k, ensure_ascii=False)}"
              for k, v in ZH.items() if k != "Generate"]
    lines += ['    "⤡": "⤡"', '    "🔄": "🔄"', '    "Generate": "WRONG (first of two)"', '    "Generate": "开始生成/Generate"']
    return "{\n" + ",\n".join(lines) + "\n}\n"


@pytest.fixture(scope="module")
def l10n_server(tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("l10n_server"), tiny_sd1)
    locs = data / "my-localizations"
    locs.mkdir()
    for name in ("zh_CN.json", "zh_CN-en.json"):
        shutil.copy(ROOT / "localizations" / name, locs / name)
    (locs / "big_pack.json").write_text(big_pack_text(), encoding="utf-8")
    (locs / "broken.json").write_text(BROKEN, encoding="utf-8")
    args = ("--localizations-dir", str(locs))
    srv = start_server(data, *args)
    srv.locs, srv.args = locs, args
    yield srv
    srv.stop()


def texts(page) -> dict:
    return page.evaluate("""() => ({
      tab: document.getElementById('tab_txt2img-button').innerText.trim(),
      settings: document.getElementById('tab_settings-button').innerText.trim(),
      prompt: document.querySelector('#txt2img_prompt [data-testid=block-info]').innerText.trim(),
      placeholder: document.querySelector('#txt2img_prompt textarea').getAttribute('placeholder'),
      generate: document.getElementById('txt2img_generate').innerText.trim(),
      hires: document.querySelector('#txt2img_hires_fix').innerText.trim().split('\\n')[0],
    })""")


def shown_value(page, elem_id: str) -> str:
    """What a dropdown box displays (the native value, below the English one that .value reports)."""
    return page.evaluate("""(id) => Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value')
                              .get.call(document.querySelector(`#${id} input[role=combobox]`))""", elem_id)




def config(server) -> dict:
    return json.loads((server.data_dir / "config.json").read_text(encoding="utf-8"))


def wait_saved(server, name: str, timeout: float = 30) -> None:
    """The switch saves the choice on the server in its own request; poll config.json with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # a setting back at its default ("None") is left out of config.json (modules/options.py saves what differs)
        if (server.data_dir / "config.json").is_file() and config(server).get("localization", "None") == name:
            return
        time.sleep(0.1)  # polling interval, not synchronisation: the loop ends on the condition or the deadline
    assert config(server).get("localization", "None") == name


# --- tests --------------------------------------------------------------------------------------------------------
def test_switch_to_chinese_and_back_without_reload(l10n_server):
    with browser_page() as page:
        open_ui(page, l10n_server)
        english = texts(page)
        assert english == {"tab": "txt2img", "settings": "Settings", "prompt": "Prompt", "generate": "Generate",
                           "placeholder": "Prompt (press Ctrl+Enter to generate)", "hires": "Hires. fix"}
        page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads
        page.locator("#txt2img_prompt textarea").fill("Prompt")  # what the user types is never translated

        switch_language(page, "zh_CN")
        page.wait_for_function("() => document.getElementById('tab_txt2img-button').innerText.trim() === '文生图'")
        assert texts(page) == {"tab": "文生图", "settings": "设置", "prompt": "提示词", "generate": "生成",
                               "placeholder": "提示词（按 Ctrl+Enter 生成）", "hires": "高分辨率修复"}
        assert page.locator("#txt2img_prompt textarea").input_value() == "Prompt"
        # a dropdown shows the translated choice; its value (what Gradio sends) stays English
        assert shown_value(page, "txt2img_scheduler") == "自动"
        # (read in the page's own world: Playwright's input_value() reads the box natively, i.e. what is shown)
        assert page.evaluate("() => document.querySelector('#txt2img_scheduler input').value") == "Automatic"
        # model names and sampler names are never translated
        assert shown_value(page, "txt2img_sampling") == "DPM++ 2M"
        # content added later (MutationObserver), a tooltip (title attribute) among it
        page.evaluate("""() => { const b = document.createElement('button'); b.id = 'late'; b.title = 'Interrupt';
                                 b.textContent = 'Skip'; document.body.appendChild(b); }""")
        page.wait_for_function("() => document.getElementById('late').title === '中止'")
        assert page.locator("#late").inner_text() == "跳过"
        # tabs rendered on first visit are translated as they appear
        page.locator("#tab_img2img-button").click()
        page.wait_for_function("() => document.querySelector('#img2img_denoising_strength [data-testid=block-info]')"
                               "?.innerText.trim() === '重绘幅度'")
        wait_saved(l10n_server, "zh_CN")
        screenshot(page, "localization_zh_CN")

        switch_language(page, "None")
        page.wait_for_function("() => document.getElementById('tab_txt2img-button').innerText.trim() === 'txt2img'")
        page.locator("#tab_txt2img-button").click()
        assert texts(page) == english
        assert shown_value(page, "txt2img_scheduler") == "Automatic"
        assert page.locator("#late").get_attribute("title") == "Interrupt"
        assert page.evaluate("() => window.__sameDocument") is True
        wait_saved(l10n_server, "None")

        # and straight to a second language, from another one
        switch_language(page, "zh_CN-en")
        page.wait_for_function("() => document.getElementById('txt2img_generate').innerText.trim() === '生成/Generate'")
        switch_language(page, "zh_CN")
        page.wait_for_function("() => document.getElementById('txt2img_generate').innerText.trim() === '生成'")
        switch_language(page, "None")


def test_generate_in_chinese_keeps_values_and_infotext_english(l10n_server):
    with browser_page() as page:
        open_ui(page, l10n_server)
        page.evaluate("() => window.sdLocalization.use('zh_CN')")
        page.evaluate("() => window.sdLocalization.startCollecting()")  # progress, results, errors as they show
        page.locator("#txt2img_prompt textarea").fill("a red square")
        for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
            set_number(page, elem_id, value)
        page.locator("#txt2img_seed input").fill("4242")
        # pick a schedule by the Chinese text the user sees
        box = page.locator("#txt2img_scheduler input[role=combobox]")
        box.click()
        page.locator(f"#{box.get_attribute('aria-controls')} [role=option]",
                     has_text=re.compile(r"^[^多]*指数\s*$")).click()  # 指数 (Exponential), not 多项指数
        page.wait_for_function("() => document.querySelector('#txt2img_scheduler input[role=combobox]').value"
                               " === 'Exponential'")
        page.locator("#tab_txt2img-button").click()  # away from the box: it shows the translation again
        page.wait_for_function("""() => Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value')
                                  .get.call(document.querySelector('#txt2img_scheduler input')) === '指数'""")
        page.locator("#txt2img_generate").click()
        page.wait_for_function("""() => {
            const info = document.querySelector('#generation_info_txt2img textarea');
            return (info && info.value.includes('Seed: 4242')) || document.querySelector('#html_info_txt2img .sd-error');
          }""", timeout=GENERATE_TIMEOUT)
        info = page.locator("#generation_info_txt2img textarea").input_value()
        assert info.startswith("a red square\n"), info
        for part in ("Steps: 2", "Sampler: DPM++ 2M", "Schedule type: Exponential", "Seed: 4242",
                     "Size: 64x64"):
            assert part in info, (part, info)
        assert not any("\u4e00" <= ch <= "\u9fff" for ch in info), info  # no Chinese leaked into the infotext
        # Save: the message is translated, the file name in it is not
        page.locator("#txt2img_save").click()
        page.wait_for_function("() => /^已保存：.+-4242-a red square\\.png$/.test("
                               "document.querySelector('#html_info_txt2img').innerText.trim())")

        # an error message shown in the page is translated; the field name it names stays English
        set_number(page, "txt2img_width", 100)
        page.locator("#txt2img_generate").click()
        error = page.locator("#html_info_txt2img .sd-error")
        error.wait_for(state="visible", timeout=GENERATE_TIMEOUT)
        page.wait_for_function("() => document.querySelector('#html_info_txt2img .sd-error').innerText"
                               ".includes('必须是 8 的倍数')")
        assert "width" in error.inner_text()
        # nothing shown during and after the generation (progress bar, results, the error) lacked a translation
        missing = page.evaluate("() => window.sdLocalization.missing()")
        assert missing == [], missing


def test_every_ui_string_has_a_chinese_translation(l10n_server):
    with browser_page(1920, 1000) as page:
        open_ui(page, l10n_server)
        missing = collect_missing(page, "zh_CN")
        assert missing == [], f"{len(missing)} UI strings missing from localizations/zh_CN.json: {missing}"
        page.goto(l10n_server.url + "/")  # the bilingual pack, from a fresh page
        open_ui(page, l10n_server)
        assert collect_missing(page, "zh_CN-en") == []


def test_a_new_untranslated_string_is_caught(l10n_server):
    pack = dict(ZH)
    del pack["Sampling steps"]
    (l10n_server.locs / "zh_CN_minus.json").write_text(json.dumps(pack, ensure_ascii=False), encoding="utf-8")
    try:
        with browser_page(1920, 1000) as page:
            open_ui(page, l10n_server)
            assert collect_missing(page, "zh_CN_minus") == ["Sampling steps"]
    finally:
        (l10n_server.locs / "zh_CN_minus.json").unlink()


def test_large_third_party_pack_applies_fast(l10n_server):
    names = requests.get(l10n_server.url + "/localizations", timeout=30).json()["names"]
    assert "big_pack" in names
    with browser_page(1920, 1000) as page:
        open_ui(page, l10n_server)
        for _ in range(200):  # render every tab, so the whole UI is in the page
            if not page.evaluate(REVEAL_JS):
                break
            page.wait_for_function("() => new Promise(r => requestAnimationFrame(() => r(true)))")
        page.locator("#tab_txt2img-button").click()
        entries = page.evaluate("() => fetch('/localizations/big_pack.json').then(r => r.json())"
                                ".then(m => Object.keys(m).length)")
        assert entries > 1000
        # first use fetches the map; the timing is of translating the whole page with it
        page.evaluate("() => window.sdLocalization.use('big_pack')")
        page.evaluate("() => window.sdLocalization.use('None')")
        ms = page.evaluate("""async () => { const t0 = performance.now();
                                            await window.sdLocalization.use('big_pack');
                                            return performance.now() - t0; }""")
        nodes = page.evaluate("() => document.querySelectorAll('*').length")
        print(f"\nbig pack ({entries} entries): whole page ({nodes} elements) translated in {ms:.1f} ms")
        assert ms < 300, ms
        assert page.locator("#txt2img_generate").inner_text().strip() == "开始生成/Generate"  # last duplicate won
        assert page.locator("#tab_txt2img-button").inner_text().strip() == "文生图/txt2img"
        # the page stays responsive: a click switches tabs and the next frame comes promptly
        page.locator("#tab_extras-button").click()
        page.wait_for_function("() => document.getElementById('tab_extras-button').getAttribute('aria-selected')"
                               " === 'true'", timeout=5_000)
        frame_ms = page.evaluate("""() => new Promise(r => { const t0 = performance.now();
                                      requestAnimationFrame(() => r(performance.now() - t0)); })""")
        assert frame_ms < 300, frame_ms


def test_broken_file_is_reported_and_the_ui_still_works(l10n_server):
    state = requests.get(l10n_server.url + "/localizations", timeout=30).json()
    assert [e for e in state["errors"] if "broken.json:3:12:" in e], state["errors"]
    assert "broken" not in state["names"] and "zh_CN" in state["names"]
    assert "broken.json:3:12" in l10n_server.log.read_text()  # the console log names file, line and column
    with browser_page() as page:
        open_ui(page, l10n_server)
        report = page.locator("#localization_errors .sd-error")
        report.wait_for(state="visible")
        assert "broken.json line 3 column 12" in report.inner_text()
        switch_language(page, "zh_CN")
        page.wait_for_function("() => document.getElementById('txt2img_generate').innerText.trim() === '生成'")
        # the report itself is translated, file name and position kept
        page.wait_for_function("() => document.querySelector('#localization_errors').innerText.includes('已跳过本地化文件')")
        assert "broken.json" in report.inner_text() and "第 3 行第 12 列" in report.inner_text()
        switch_language(page, "None")


def test_messages_numbers_names_and_rtl(l10n_server):
    (l10n_server.locs / "he_IL.json").write_text('{"rtl": true, "Generate": "צור"}', encoding="utf-8")
    try:
        with browser_page() as page:
            open_ui(page, l10n_server)
            page.evaluate("() => window.sdLocalization.use('zh_CN')")
            cases = {
                # progress lines are translated part by part; numbers stay
                "Batch 1/2 · Step 3/20 · 15% · ETA: 2s": "批次 1/2 · 步数 3/20 · 15% · 预计剩余时间：2s",
                "Waiting...": "等待中...",
                "Saved to /data/outputs/txt2img-images": "已保存到 /data/outputs/txt2img-images",
                "steps: must be a whole number from 1 to 150, got 0": "steps：必须是 1 到 150 之间的整数，当前为 0",
                "3 settings changed: sd_vae, localization, CLIP_stop_at_last_layers.":
                    "3 项设置已更改：sd_vae, localization, CLIP_stop_at_last_layers。",
                # not translated: numbers, sizes, counters, file names, emoji, unknown text
                "512": None, "0.75": None, "64x64": None, "0/75": None, "1.5s": None, "tiny_sd1.safetensors": None,
                "🎲": None, "a red square": None,
            }
            got = page.evaluate("(texts) => texts.map(t => window.sdLocalization.lookup(t))", list(cases))
            assert dict(zip(cases, got)) == cases
            page.evaluate("() => window.sdLocalization.use('he_IL')")
            assert page.evaluate("() => document.documentElement.dir") == "rtl"
            assert page.locator("#txt2img_generate").inner_text().strip() == "צור"
            page.evaluate("() => window.sdLocalization.use('None')")
            assert page.evaluate("() => document.documentElement.dir") == "ltr"
            assert page.locator("#txt2img_generate").inner_text().strip() == "Generate"
    finally:
        (l10n_server.locs / "he_IL.json").unlink()


# last: it restarts the module's server
def test_settings_choice_applies_live_and_persists_across_restart(l10n_server):
    with browser_page() as page:
        open_ui(page, l10n_server)
        page.locator("#tab_settings-button").click()
        page.locator("#settings_user_interface-button").click()
        box = page.locator("#setting_localization input[role=combobox]")
        box.click()
        page.locator(f"#{box.get_attribute('aria-controls')} [role=option][aria-label='zh_CN']").click()
        page.locator("#settings_submit").click()
        page.wait_for_function("() => window.sdLocalization.name === 'zh_CN'")
        page.wait_for_function("() => document.getElementById('tab_txt2img-button').innerText.trim() === '文生图'")
        assert page.locator("#localization_switch input[role=combobox]").input_value() == "zh_CN"
    wait_saved(l10n_server, "zh_CN")

    l10n_server.stop()
    restarted = start_server(l10n_server.data_dir, *l10n_server.args)
    try:
        assert requests.get(restarted.api("options"), timeout=30).json()["localization"] == "zh_CN"
        with browser_page() as page:
            open_ui(page, restarted)  # no action: the page opens in Chinese
            page.wait_for_function("() => document.getElementById('tab_txt2img-button').innerText.trim() === '文生图'")
            assert page.locator("#txt2img_generate").inner_text().strip() == "生成"
            assert page.locator("#localization_switch input[role=combobox]").input_value() == "zh_CN"
            switch_language(page, "None")
            page.wait_for_function("() => document.getElementById('txt2img_generate').innerText.trim() === 'Generate'")
        wait_saved(restarted, "None")
    finally:
        restarted.stop()
