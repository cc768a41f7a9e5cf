"""Extensions' settings on the Settings page (modules/ui/settings_tab.py), built in real Gradio Blocks: added from an
on_ui_settings callback the A1111 way, they get a tab under their section label, `setting_<key>` ids, the control
their OptionInfo names, and Apply saves them like ours."""
from __future__ import annotations

import json

import gradio as gr
import pytest

from modules import cmd_args, script_callbacks, shared
from modules.runtime import Runtime
from modules.ui import settings_tab


@pytest.fixture
def rt(tmp_path, monkeypatch):
    for name in ("_runtime", "_model_view", "_upscalers", "config_filename", "device", "data_path", "models_path"):
        monkeypatch.setattr(shared, name, getattr(shared, name))
    runtime = Runtime(cmd_args.parse(["--data-dir", str(tmp_path), "--no-half", "--no-demo-model"], env={}))
    shared.bind(runtime)
    return runtime


def on_ui_settings():
    """What an extension's script does (tag autocomplete, system-info, …)."""
    section = ("tac", "Tag Autocomplete")
    shared.opts.add_option("tac_active", shared.OptionInfo(True, "Enable Tag Autocompletion", section=section))
    shared.options_templates.update(shared.options_section(section, {
        "tac_maxResults": shared.OptionInfo(5, "Maximum results", gr.Slider,
                                            {"minimum": 1, "maximum": 20, "step": 1}).info("per query"),
        "tac_mode": shared.OptionInfo("fast", "Mode", gr.Radio, lambda: {"choices": ["fast", "thorough"]}),
        "tac_words": shared.OptionInfo("", "Extra words", refresh=lambda: None),
        "tac_note": shared.OptionHTML("Read the <b>wiki</b>."),
    }))
    shared.opts.add_option("tac_internal", shared.OptionInfo(1, "Internal", section=(None, "Hidden")))


def test_extension_settings_show_with_a1111_ids_and_apply(rt, tmp_path):
    script_callbacks.on_ui_settings(on_ui_settings)
    try:
        script_callbacks.ui_settings_callback()
    finally:
        script_callbacks.remove_callbacks_for_function(on_ui_settings)
    with gr.Blocks() as demo:
        page = settings_tab.build(rt)
    shown = page["shown"]
    assert isinstance(shown["tac_active"], gr.Checkbox) and shown["tac_active"].elem_id == "setting_tac_active"
    assert isinstance(shown["tac_maxResults"], gr.Slider) and shown["tac_maxResults"].maximum == 20
    assert shown["tac_maxResults"].info == "(per query)"
    assert isinstance(shown["tac_mode"], gr.Radio) and [c[1] for c in shown["tac_mode"].choices] == ["fast", "thorough"]
    assert isinstance(shown["tac_note"], gr.HTML) and "tac_note" not in page["components"]
    assert "tac_internal" not in shown and shared.opts.tac_internal == 1   # section id None: not on the page
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"settings_tac", "setting_tac_words", "refresh_tac_words"} <= ids
    tab = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "settings_tac")
    assert tab.label == "Tag Autocomplete"

    values = {key: rt.options.get(key) for key in page["components"]}
    values.update(tac_maxResults=12.0, tac_mode="thorough", tac_active=False)
    message = page["save"](*values.values())
    assert "3 settings changed" in message
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["tac_maxResults"], saved["tac_mode"], saved["tac_active"]) == (12, "thorough", False)
    assert shared.opts.tac_maxResults == 12 and isinstance(shared.opts.tac_maxResults, int)

    values.update(tac_mode="nonsense")
    message = page["save"](*values.values())
    assert "0 settings changed" in message and "tac_mode" in message and "thorough" in message
