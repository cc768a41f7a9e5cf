"""A1111's settings surface on our Options (modules/options.py): one OptionInfo for both forms, options_section,
data with defaults, add_option through data_labels, onchange, set/save/cast_value/dumpjson, loose validation of
extensions' settings. No runtime needed."""
from __future__ import annotations

import json

import gradio as gr
import pytest

from modules.options import OptionError, OptionHTML, OptionInfo, Options, categories, options_section


def test_option_info_takes_our_form_and_a1111s():
    ours = OptionInfo(1, "Clip skip", "Stable Diffusion", minimum=1, maximum=12)
    assert ours.component is None and ours.section == ("stable_diffusion", "Stable Diffusion")
    assert (ours.minimum, ours.maximum, ours.section_label) == (1, 12, "Stable Diffusion")
    a1111 = OptionInfo(0.5, "Strength", gr.Slider, {"minimum": 0, "maximum": 2, "step": 0.1},
                       section=("my-ext", "My extension"))
    assert a1111.component is gr.Slider and (a1111.minimum, a1111.maximum) == (0, 2)
    assert (a1111.section_id, a1111.section_label) == ("my-ext", "My extension")
    radio = OptionInfo("b", "Pick", gr.Radio, {"choices": [("Label A", "a"), "b"]})
    assert radio.choices == ["a", "b"]
    later = OptionInfo("x", "Late list", gr.Dropdown, lambda: {"choices": ["x", "y"]})
    assert callable(later.choices) and later.choices() == ["x", "y"]
    assert OptionInfo(section=None).section_label == "Other"


def test_option_info_chains_like_a1111():
    info = OptionInfo(True, "Flag")
    same = info.info("explained").link("Wiki", "https://example.org").js("Run", "doIt").html("<i>x</i>") \
        .needs_restart().needs_reload_ui()
    assert same is info
    assert "(explained)" in info.comment_after and "<i>x</i>" in info.comment_after
    assert "requires restart" in info.comment_after and "requires Reload UI" in info.comment_after
    assert "https://example.org" in info.comment_before and "doIt()" in info.comment_before


def test_options_section_sets_section_and_category():
    opts = options_section(("ext", "Ext", "postprocessing"), {"a": OptionInfo(1, "A"), "b": OptionInfo("", "B")})
    assert [o.section for o in opts.values()] == [("ext", "Ext")] * 2
    assert {o.category_id for o in opts.values()} == {"postprocessing"}
    assert categories.register_category("mine", "Mine") == "mine" and categories.mapping["mine"].label == "Mine"


def test_data_has_every_default_and_templates_added_through_data_labels(tmp_path):
    opts = Options(tmp_path / "config.json")
    assert opts.data_labels is opts.info
    assert opts.data["outdir_samples"] == "" and opts.data["samples_save"] is True
    opts.data_labels.update(options_section(("ext", "Ext"), {"ext_level": OptionInfo(3, "Level")}))
    opts.add_option("ext_name", OptionInfo("n", "Name", section=("ext", "Ext")))
    assert opts.data["ext_level"] == 3 and opts.data.get("ext_name") == "n" and opts.ext_level == 3
    opts.ext_level = 4  # A1111: attribute assignment sets data, without validation or onchange
    assert opts.data["ext_level"] == 4
    with pytest.raises(AttributeError, match="no_such"):
        _ = opts.no_such


def test_saved_file_keeps_loaded_and_changed_keys_only(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"samples_save": True, "unknown_ext_key": 7}))
    opts = Options(path)
    opts.set("CLIP_stop_at_last_layers", 2)
    saved = json.loads(path.read_text())
    assert saved == {"samples_save": True, "unknown_ext_key": 7, "CLIP_stop_at_last_layers": 2}
    opts.save(tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == saved
    assert Options(path).CLIP_stop_at_last_layers == 2


def test_onchange_fires_on_set_in_both_styles(tmp_path):
    opts = Options(tmp_path / "config.json")
    calls = []
    opts.add_option("ext_a", OptionInfo(1, "A", onchange=lambda: calls.append("a1111")))
    opts.add_option("ext_b", OptionInfo("x", "B"))
    opts.onchange("ext_b", lambda value: calls.append(("ours", value)), call=True)
    assert calls == [("ours", "x")]
    assert opts.set("ext_a", 2) is True and opts.set("ext_a", 2) is False
    opts.set("ext_b", "y")
    assert calls == [("ours", "x"), "a1111", ("ours", "y")]
    opts.set("ext_a", 5, run_callbacks=False)
    assert calls[-1] == ("ours", "y")


def test_set_keeps_a1111s_refusals(tmp_path):
    opts = Options(tmp_path / "config.json")
    opts.add_option("ext_secret", OptionInfo("a", "Secret", restrict_api=True))
    assert opts.set("ext_secret", "b", is_api=True) is False and opts.ext_secret == "a"
    opts.add_option("ext_text", OptionHTML("Some <b>words</b>"))
    assert opts.set("ext_text", "other") is False
    assert "ext_text" not in opts.data and "ext_text" not in opts.quicksettings_candidates()
    opts.add_option("ext_bad", OptionInfo(1, "Bad", onchange=lambda: 1 / 0))
    with pytest.raises(OptionError, match="ext_bad.*division by zero"):
        opts.set("ext_bad", 2)
    assert opts.ext_bad == 1


def test_extension_settings_validate_loosely_ours_strictly(tmp_path):
    opts = Options(tmp_path / "config.json")
    opts.add_option("ext_steps", OptionInfo(4, "Steps", gr.Slider, {"minimum": 0, "maximum": 10, "step": 0.5}))
    opts.add_option("ext_mode", OptionInfo("a", "Mode", gr.Radio, lambda: {"choices": ["a", "b"]}))
    opts.add_option("ext_any", OptionInfo(None, "Anything"))
    opts.add_option("ext_tags", OptionInfo(["x"], "Tags", gr.CheckboxGroup, {"choices": ["x", "y"]}))
    assert opts.set("ext_steps", 2.5) and opts.ext_steps == 2.5        # A1111: int and float are one type
    with pytest.raises(OptionError, match="'CLIP_stop_at_last_layers' must be a whole number"):
        opts.set("CLIP_stop_at_last_layers", 2.5)
    with pytest.raises(OptionError, match="'ext_steps' must be between 0 and 10"):
        opts.set("ext_steps", 11)
    with pytest.raises(OptionError, match=r"'ext_mode' must be one of \['a', 'b'\]"):
        opts.set("ext_mode", "c")
    with pytest.raises(OptionError, match="'ext_mode' must be a string"):
        opts.set("ext_mode", 3)
    assert opts.set("ext_any", {"k": 1}) and opts.ext_any == {"k": 1}
    assert opts.set("ext_tags", ("x", "y")) and opts.ext_tags == ["x", "y"]
    with pytest.raises(OptionError, match="unknown \\['z'\\]"):
        opts.set("ext_tags", ["z"])


def test_cast_value_get_default_and_dumpjson(tmp_path):
    opts = Options(tmp_path / "config.json")
    assert opts.cast_value("eta_noise_seed_delta", "12") == 12
    assert opts.cast_value("samples_save", "False") is False and opts.cast_value("samples_save", None) is None
    assert opts.get_default("randn_source") == "CPU" and opts.get_default("nope") is None
    opts.add_option("ext_x", OptionInfo(1, "X", section=("e", "E")).info("hint"))
    dumped = json.loads(opts.dumpjson())
    assert dumped["ext_x"] == 1 and "hint" in dumped["_comments_after"]["ext_x"]
    assert ["Defaults", "Other"] in dumped["_categories"]


def test_hidden_settings_are_no_quicksettings_candidates(tmp_path):
    """The top bar builds a control (with a page-load event) per candidate: A1111's ~230 hidden compatibility keys
    made Gradio's first render of the page take minutes."""
    from modules import a1111_defaults
    opts = Options(tmp_path / "config.json")
    before = opts.quicksettings_candidates()
    assert a1111_defaults.register(opts) > 100
    assert opts.quicksettings_candidates() == before + ["img2img_extra_noise"]
    opts.add_option("ext_internal", OptionInfo(1, "Internal", section=(None, "Hidden")))
    opts.add_option("ext_shown", OptionInfo(1, "Shown", section=("ext", "Ext")))
    assert "ext_internal" not in opts.quicksettings_candidates() and "ext_shown" in opts.quicksettings_candidates()
    with pytest.raises(OptionError, match="quicksettings_list.*save_txt"):
        opts.set("quicksettings_list", ["save_txt", "ext_shown"])
    opts.data["quicksettings_list"] = ["save_txt", "ext_shown"]   # e.g. a config.json edited by hand
    assert opts.quicksettings() == ["sd_model_checkpoint", "ext_shown"]
