"""The page side of A1111 extensions in a real browser: a sample extension written the A1111 way (javascript/*.js
and *.mjs, style.css) is injected in A1111's order, its onUiLoaded callback sees gradioApp(), opts and the prompt box
by A1111's selector, its style sheet applies after Gradio's and before user.css, and typing in the prompt box it
found still generates with that prompt."""
from __future__ import annotations

import json

import pytest

from tests.support.browser import browser_page, open_ui, screenshot, set_number, wait_info
from tests.support.server import start_server

pytestmark = pytest.mark.browser

SAMPLE_JS = """
(window.sdTestRun = window.sdTestRun || []).push("sample-ext/sample.js");
window.sampleExt = {loadedCalls: 0, afterUpdates: 0, optionsChanged: 0, tabChanges: 0, domContentLoaded: false};
document.addEventListener("DOMContentLoaded", () => { window.sampleExt.domContentLoaded = true; });
onUiLoaded(() => {
  const app = gradioApp();
  const prompt = app.querySelector("#txt2img_prompt > label > textarea");
  const negative = app.querySelector("#txt2img_neg_prompt > label > textarea");
  window.sampleExt.loadedCalls += 1;
  window.sampleExt.seen = {
    prompt: prompt && prompt.placeholder, negative: negative && negative.placeholder,
    samplesSave: opts.samples_save, checkpoint: opts.sd_model_checkpoint, optionCount: Object.keys(opts).length,
    tab: get_uiCurrentTab() && get_uiCurrentTab().textContent.trim(),
    tabContent: get_uiCurrentTabContent() && get_uiCurrentTabContent().id,
    ranBefore: window.sdTestRun.slice(),
  };
  prompt.addEventListener("input", () => { window.sampleExt.typed = prompt.value; });
  const out = document.createElement("div");
  out.id = "sample_ext_output";
  out.textContent = "prompt box found: " + !!prompt;
  document.body.appendChild(out);
});
onOptionsAvailable(() => { window.sampleExt.optionsAvailable = Object.keys(opts).length; });
onAfterUiUpdate(() => { window.sampleExt.afterUpdates += 1; });
onUiTabChange(() => { window.sampleExt.tabChanges += 1; });
onOptionsChanged(() => {
  window.sampleExt.optionsChanged += 1;
  window.sampleExt.clipSkip = opts.CLIP_stop_at_last_layers;
});
"""
SAMPLE_CSS = "#txt2img_generate { outline: 3px solid rgb(1, 2, 3); }\n"
USER_CSS = "#txt2img_generate { outline-color: rgb(4, 5, 6); }\n"  # same selector, later: user.css wins


def push(name: str) -> str:
    return f'(window.sdTestRun = window.sdTestRun || []).push("{name}");\n'


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ext_page")  # no model: the bundled demo model (64x64, fast)
    files = {
        "extensions/sample-ext/javascript/sample.js": SAMPLE_JS,
        "extensions/sample-ext/javascript/zz_after.js": push("sample-ext/zz_after.js"),
        "extensions/sample-ext/javascript/mod.mjs": push("sample-ext/mod.mjs"),
        "extensions/sample-ext/style.css": SAMPLE_CSS,
        "extensions/another-ext/javascript/first.js": push("another-ext/first.js"),
        "extensions/off-ext/javascript/off.js": push("off-ext/off.js"),
        "extensions/off-ext/style.css": "#txt2img_generate { outline-style: dotted; }",
        "user.css": USER_CSS,
        "config.json": json.dumps({"disabled_extensions": ["off-ext"]}),
    }
    for name, text in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(text, encoding="utf-8")
    srv = start_server(data)
    yield srv
    srv.stop()


def open_page(page, server) -> None:
    open_ui(page, server)
    page.wait_for_function("() => window.sampleExt && window.sampleExt.loadedCalls === 1")


def test_scripts_and_styles_in_a1111_order(ext_server):
    with browser_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_page(page, ext_server)
        head = page.evaluate("""() => Array.from(document.head.querySelectorAll('script')).map(s =>
            s.dataset.sd ? [s.dataset.sd, s.getAttribute('src') || '', s.type || ''] :
            [s.textContent.includes('SD_LOCALIZATION_CONFIG') ? 'localization' : 'other', '', ''])""")
        ours = [h for h in head if h[0] != "other"]
        kinds = [h[0] for h in ours]
        first = kinds.index("a1111-globals")  # window.localization's scripts come first
        assert first > 0 and set(kinds[:first]) == {"localization"}, kinds
        ours = ours[first:]
        assert [h[0] for h in ours] == ["a1111-globals", "a1111-prompt-dom", "extra-networks", "extension-script",
                                        "extension-script", "extension-script", "extension-module", "scripts-done"]
        srcs = [h[1] for h in ours if h[1]]
        expected = ["modules/ui/js/extra_networks.js", "another-ext/javascript/first.js", "sample-ext/javascript/sample.js",
                    "sample-ext/javascript/zz_after.js", "sample-ext/javascript/mod.mjs",
                    "modules/ui/js/a1111_scripts_done.js"]
        assert len(srcs) == len(expected)
        for src, tail in zip(srcs, expected):
            assert src.startswith("file=") and src.split("?")[0].endswith(tail) and src.split("?")[1].isdigit(), src
        assert ours[6][2] == "module"
        # the order they ran in; onUiLoaded fired once, after all of them, modules included
        run = ["another-ext/first.js", "sample-ext/sample.js", "sample-ext/zz_after.js", "sample-ext/mod.mjs"]
        assert page.evaluate("window.sdTestRun") == run
        seen = page.evaluate("window.sampleExt.seen")
        assert seen["ranBefore"] == run
        assert seen["prompt"] == "Prompt (press Ctrl+Enter to generate)" and seen["negative"] == "Negative prompt"
        assert seen["tab"] == "txt2img" and seen["tabContent"] == "tab_txt2img"
        assert page.locator("#sample_ext_output").inner_text() == "prompt box found: true"
        assert page.evaluate("window.sampleExt.domContentLoaded") is True
        page.wait_for_function("() => window.sampleExt.afterUpdates >= 1")  # debounced after the UI settled

        # opts: the server's settings, read from #settings_json before onUiLoaded
        assert seen["samplesSave"] is True and seen["optionCount"] >= 15
        assert seen["checkpoint"] == "" or "demo-shapes" in seen["checkpoint"]
        assert page.evaluate("opts.disabled_extensions") == ["off-ext"]
        assert page.evaluate("window.sampleExt.optionsAvailable") == seen["optionCount"]

        # style sheets: the extension's, then user.css, after every style sheet Gradio has loaded
        sheets = page.evaluate("() => Array.from(document.styleSheets).map(s => s.href || '')")
        assert sheets[-2].split("?")[0].endswith("sample-ext/style.css"), sheets
        assert sheets[-1].split("?")[0].endswith("/user.css"), sheets
        style = page.evaluate("""() => { const s = getComputedStyle(document.getElementById('txt2img_generate'));
                                         return [s.outlineStyle, s.outlineWidth, s.outlineColor]; }""")
        assert style == ["solid", "3px", "rgb(4, 5, 6)"]  # off-ext's dotted rule is not there
        assert errors == []


def test_typing_in_the_moved_prompt_box_generates_with_it(ext_server):
    with browser_page() as page:
        open_page(page, ext_server)
        prompt = page.locator("#txt2img_prompt > label > textarea")  # A1111's selector, as tag autocomplete uses
        negative = page.locator("#txt2img_neg_prompt > label > textarea")
        prompt.fill("a red circle in the center")
        negative.fill("blurry")
        assert page.evaluate("window.sampleExt.typed") == "a red circle in the center"
        set_number(page, "txt2img_width", 64)
        set_number(page, "txt2img_height", 64)
        set_number(page, "txt2img_steps", 2)
        page.locator("#txt2img_seed input").fill("11")
        prompt.press("Control+Enter")  # our Ctrl+Enter still generates from the moved box
        info = wait_info(page, "txt2img", "Seed: 11")
        assert info.startswith("a red circle in the center\nNegative prompt: blurry\n"), info
        assert page.evaluate("selected_gallery_index()") == -1  # grid view: nothing selected

        # a value set from Python reaches the moved box: ↙ with an empty prompt pastes the last generation
        prompt.fill("")
        negative.fill("")
        page.locator("#txt2img_paste").click()
        page.wait_for_function(
            "() => document.querySelector('#txt2img_prompt > label > textarea').value === 'a red circle in the center'")
        assert negative.input_value() == "blurry"

        # typing again and the Generate button
        prompt.fill("a blue square at the top")
        page.locator("#txt2img_seed input").fill("12")
        page.locator("#txt2img_generate").click()
        assert wait_info(page, "txt2img", "Seed: 12").startswith("a blue square at the top\n")
        screenshot(page, "extension_page_txt2img")


def test_globals_follow_tabs_and_settings(ext_server):
    with browser_page() as page:
        open_page(page, ext_server)
        # switch_to_img2img() opens the tab; Gradio renders it now, and its prompt boxes get A1111's markup too
        page.evaluate("switch_to_img2img()")
        page.locator("#img2img_prompt > label > textarea").wait_for(state="visible")
        assert page.locator("#img2img_neg_prompt > label > textarea").count() == 1
        page.wait_for_function("() => window.sampleExt.tabChanges >= 2")  # the first tab, then img2img
        assert page.evaluate("get_uiCurrentTabContent().id") == "tab_img2img"
        assert page.evaluate("get_tab_index('mode_img2img')") == 0
        page.evaluate("switch_to_inpaint()")
        page.wait_for_function("() => get_tab_index('mode_img2img') === 2")
        page.evaluate("switch_to_txt2img()")
        page.wait_for_function("() => get_uiCurrentTabContent().id === 'tab_txt2img'")
        assert page.evaluate("""() => [uiElementIsVisible(document.getElementById('txt2img_generate')),
                                       uiElementIsVisible(document.getElementById('img2img_generate'))]""") == \
            [True, False]

        # updateInput(): a value set by script reaches Gradio (the token counter follows the prompt)
        page.evaluate("""() => { const box = gradioApp().querySelector('#txt2img_prompt > label > textarea');
                                 box.value = 'one two three'; updateInput(box); }""")
        page.wait_for_function("() => document.getElementById('txt2img_token_counter').innerText.trim() === '3/75'")
        page.locator("#txt2img_seed input").fill("5")
        page.evaluate("setRandomSeed('txt2img_seed')")
        assert page.locator("#txt2img_seed input").input_value() == "-1"

        # a top-bar setting changed: opts follows and onOptionsChanged fires
        before = page.evaluate("window.sampleExt.optionsChanged")
        set_number(page, "setting_CLIP_stop_at_last_layers", 2)
        page.wait_for_function("() => opts.CLIP_stop_at_last_layers === 2 && window.sampleExt.clipSkip === 2")
        assert page.evaluate("window.sampleExt.optionsChanged") > before
        assert page.evaluate("window.sampleExt.loadedCalls") == 1  # once, whatever happened since

        # set_theme(): the page comes back dark (what --theme does at start)
        page.evaluate("set_theme('dark')")
        page.wait_for_url("**/?__theme=dark")
        page.wait_for_function(  # Gradio marks the page dark before our scripts are in it
            "() => document.body.classList.contains('dark') && window.sdA1111 && window.sdA1111.uiLoaded")
