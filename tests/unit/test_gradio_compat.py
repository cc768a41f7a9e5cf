"""Gradio 3 idioms of A1111 extensions on Gradio 6 (modules/gradio_compat.py), A1111's component hooks, and
modules.ui_components / the modules.ui helpers. Every test builds real Gradio objects and reads back what Gradio 6
made of them (the page config, or a real event run through Blocks.process_api)."""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import textwrap
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData
from gradio.state_holder import SessionState
from PIL import Image

from modules import gradio_compat

gradio_compat.install()


def config_of(demo: gr.Blocks, component) -> dict:
    return next(c for c in demo.get_config_file()["components"] if c["id"] == component._id)


def run_event(demo: gr.Blocks, dependency, *inputs):
    """Runs one event of `demo` the way the server does (preprocess, fn, postprocess) and returns its outputs."""
    answer = asyncio.run(demo.process_api(block_fn=dependency["id"], inputs=list(inputs), state=SessionState(demo)))
    return answer["data"]


def load_like_a1111(path):
    """A1111's script loading: the module is named after the file and is NOT put in sys.modules."""
    spec = importlib.util.spec_from_file_location(path.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def listeners():
    added = []

    def add(before=None, after=None):
        gradio_compat.add_component_listener(before=before, after=after)
        added.append((before, after))

    yield add
    for before, after in added:
        gradio_compat.remove_component_listener(before=before, after=after)


def test_install_is_idempotent():
    on_click = gr.Button.click
    gradio_compat.install()
    assert gr.Button.click is on_click and gr.Box is gradio_compat.gr.Box


def test_js_keyword_becomes_js_on_every_event_kind():
    with gr.Blocks() as demo:
        text, button, image = gr.Textbox(), gr.Button(), gr.Image()
        slider, gallery = gr.Slider(), gr.Gallery()
        deps = {
            "click": button.click(None, _js="() => 'click'"),
            "change": text.change(None, text, text, _js="(x) => 'change'"),
            "input": text.input(None, text, text, _js="(x) => 'input'"),
            "submit": text.submit(None, text, text, _js="(x) => 'submit'"),
            "blur": text.blur(None, _js="() => 'blur'"),
            "focus": text.focus(None, _js="() => 'focus'"),
            "select": gallery.select(None, _js="() => 'select'"),
            "upload": image.upload(None, _js="() => 'upload'"),
            "release": slider.release(None, _js="() => 'release'"),
            "load": demo.load(None, _js="() => 'load'"),
            "on": gr.on([button.click, text.submit], None, _js="() => 'on'"),
        }
        deps["then"] = deps["click"].then(None, _js="() => 'then'")
        deps["success"] = deps["click"].success(None, _js="() => 'success'")
    config = {d["id"]: d for d in demo.get_config_file()["dependencies"]}
    for name, dep in deps.items():
        assert config[dep["id"]]["js"] == f"() => '{name}'" or config[dep["id"]]["js"] == f"(x) => '{name}'", name
    assert "_js=" in gradio_compat.idioms_used[gradio_compat.UNKNOWN]


def test_js_keyword_is_kept_on_a_python_event_too():
    with gr.Blocks() as demo:
        text = gr.Textbox()
        dep = gr.Button().click(lambda x: x.upper(), text, text, _js="(x) => x")
    assert config_of_dep(demo, dep)["js"] == "(x) => x"
    assert run_event(demo, dep, "abc") == ["ABC"]


def test_every_on_an_event_becomes_a_timer():
    with gr.Blocks() as demo:
        out = gr.Textbox()
        demo.load(lambda: "tick", None, out, every=2)
    timers = [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    assert len(timers) == 1 and timers[0].value == 2
    assert run_event(demo, dep_on(demo, timers[0], "tick")) == ["tick"]
    assert "every=" in gradio_compat.idioms_used[gradio_compat.UNKNOWN]


def config_of_dep(demo, dep) -> dict:
    return next(d for d in demo.get_config_file()["dependencies"] if d["id"] == dep["id"])


def dep_on(demo, component, event: str) -> dict:
    """The page's dependency triggered by `component`'s `event` (e.g. a button's click)."""
    deps = demo.get_config_file()["dependencies"]
    return next(d for d in deps if [tuple(t) for t in d["targets"]] == [(component._id, event)])


def test_component_update_classmethods_return_gradio_6_updates():
    assert gr.Dropdown.update(choices=["a", "b"], value="b") == {"__type__": "update", "choices": ["a", "b"],
                                                                 "value": "b"}
    assert gr.Button.update(visible=False) == {"__type__": "update", "visible": False}
    assert gr.Textbox.update("positional value") == {"__type__": "update", "value": "positional value"}
    with pytest.raises(TypeError, match="only positional argument"):
        gr.Textbox.update("a", "b")
    with gr.Blocks() as demo:
        dropdown = gr.Dropdown(["a"], value="a")
        dep = gr.Button().click(lambda: gr.Dropdown.update(choices=["a", "b"], value="b"), None, dropdown)
    [update] = run_event(demo, dep)  # Gradio 6 takes the dict as a real update
    assert update["value"] == "b" and update["choices"] == [["a", "a"], ["b", "b"]]


def test_box_is_a_group_context():
    with gr.Blocks() as demo:
        with gr.Box(elem_id="box") as box:
            inner = gr.Button()
    assert inner.parent is box and isinstance(box, gr.Group)
    config = config_of(demo, box)
    assert config["type"] == "group" and config["props"]["elem_id"] == "box"
    assert {"gradio-group", "gradio-box"} <= set(config["props"]["elem_classes"])
    assert "Box" in gradio_compat.idioms_used[gradio_compat.UNKNOWN]


def test_gr_inputs_and_outputs_build_gradio_6_components():
    import gradio.inputs  # noqa: F401 - the alias module is importable too

    with gr.Blocks():
        slider = gr.inputs.Slider(0, 10, 1, 5, "Strength")
        textbox = gr.inputs.Textbox(lines=3, default="hi", label="Text", optional=True)
        out = gr.outputs.Textbox(label="Result")
    assert isinstance(slider, gr.Slider) and slider.label == "Strength"
    assert (slider.minimum, slider.maximum, slider.step, slider.value) == (0, 10, 1, 5)
    assert isinstance(textbox, gr.Textbox) and textbox.lines == 3 and textbox.value == "hi"
    assert isinstance(out, gr.Textbox) and out.label == "Result"
    with pytest.raises(TypeError, match="at most 2 positional"):
        gr.inputs.Checkbox(True, "a", "extra")


def test_iocomponent_alias():
    from gradio.components import IOComponent

    assert IOComponent is gr.components.Component and isinstance(gr.Textbox(render=False), IOComponent)
    assert issubclass(gr.Textbox, gr.components.FormComponent)
    with pytest.raises(AttributeError):
        gr.components.NoSuchThing  # noqa: B018


def test_unknown_keywords_are_dropped_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, "sd.gradio_compat")
    with gr.Blocks() as demo:
        boxes = [gr.Textbox(label="kept", bogus_option=1) for _ in range(2)]
        with gr.Row(bogus_row=True) as row:
            pass
        accordion = gr.Accordion("Acc", open=False, interactive=True)
    assert [b.label for b in boxes] == ["kept", "kept"] and not accordion.open
    warnings = [r.getMessage() for r in caplog.records if "bogus_option" in r.getMessage()]
    assert len(warnings) == 1 and "gr.Textbox" in warnings[0]
    assert any("bogus_row" in r.getMessage() for r in caplog.records)
    assert any("interactive" in r.getMessage() and "Accordion" in r.getMessage() for r in caplog.records)
    assert "bogus_row" not in config_of(demo, row)["props"]


def test_gradio_3_keywords_are_renamed_where_gradio_6_has_them():
    with gr.Blocks():
        copyable = gr.Textbox(show_copy_button=True)
        image = gr.Image(source="webcam", mirror_webcam=False, show_download_button=False, shape=(64, 64))
        explicit = gr.Image(show_share_button=False, buttons=["download"])
        upload = gr.File(type="file")
    assert list(copyable.buttons) == ["copy"]
    assert image.sources == ["webcam"] and image.webcam_options.mirror is False
    assert "download" not in image.buttons and "share" in image.buttons
    assert list(explicit.buttons) == ["download"]  # an explicit Gradio 6 list wins
    assert upload.type == "filepath"


def test_image_with_source_and_sketch_tool_constructs_and_returns_image_and_mask(tmp_path):
    with gr.Blocks() as demo:
        plain = gr.Image(type="pil", source="upload", tool="editor", label="Plain", elem_id="plain")
        sketch = gr.Image(type="numpy", source="upload", tool="sketch", label="Mask", elem_id="mask", brush_radius=8)
    assert isinstance(plain, gr.Image) and plain.sources == ["upload"]
    assert isinstance(sketch, gr.ImageEditor) and sketch.label == "Mask" and sketch.brush.default_size == 8
    config = config_of(demo, sketch)
    assert config["type"] == "imageeditor" and config["props"]["elem_id"] == "mask"
    assert "gradio-imageeditor" in config["props"]["elem_classes"]

    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "bg.png")
    layer = Image.new("RGBA", (8, 6), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (2, 1, 5, 3))
    layer.save(tmp_path / "layer.png")
    payload = EditorData(background=FileData(path=str(tmp_path / "bg.png")),
                         layers=[FileData(path=str(tmp_path / "layer.png"))],
                         composite=FileData(path=str(tmp_path / "bg.png")))
    value = sketch.preprocess(payload)
    assert set(value) == {"image", "mask"}
    assert value["image"].shape == (6, 8, 3) and (value["image"][0, 0] == (10, 20, 30)).all()
    expected = np.zeros((6, 8), np.uint8)
    expected[1:3, 2:5] = 255
    assert value["mask"].shape == (6, 8, 3) and (value["mask"][..., 0] == expected).all()
    assert sketch.postprocess({"image": np.zeros((4, 4, 3), np.uint8), "mask": None}).background is not None


def test_style_is_a_no_op_returning_the_component():
    with gr.Blocks():
        gallery = gr.Gallery(columns=2)
        assert gallery.style(grid=4, height="auto") is gallery and gallery.columns == 2
        assert gr.Row().style(equal_height=True) is not None


A1111_SUBCLASSES = textwrap.dedent('''
    import gradio as gr
    from modules.ui_components import ToolButton

    class ARButton(ToolButton):
        def __init__(self, value=1.0, **kwargs):
            super().__init__(**kwargs)
            self.ratio = value

    class Labeled(gr.Button):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

        def get_block_name(self):
            return "button"
''')


@pytest.mark.parametrize("registered", [False, True], ids=["a1111-style", "in-sys-modules"])
def test_component_subclass_in_an_extension_script_builds_and_writes_no_pyi(tmp_path, registered):
    script = tmp_path / "sd-webui-ar" / "scripts" / "ar.py"
    script.parent.mkdir(parents=True)
    script.write_text(A1111_SUBCLASSES)
    if registered:  # Gradio writes its .pyi when it can find the module's file
        spec = importlib.util.spec_from_file_location("ar.py", script)
        module = importlib.util.module_from_spec(spec)
        sys.modules["ar.py"] = module
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules["ar.py"]
    else:
        module = load_like_a1111(script)
    with gr.Blocks() as demo:
        ratio = module.ARButton(value=1.5, elem_id="ar_16_9", visible=False)
        labeled = module.Labeled("Go", elem_id="labeled")
    assert ratio.ratio == 1.5 and labeled.value == "Go"
    ratio_config, labeled_config = config_of(demo, ratio), config_of(demo, labeled)
    assert ratio_config["type"] == "button" and ratio_config["props"]["elem_id"] == "ar_16_9"
    assert ratio_config["props"]["visible"] is False and "tool" in ratio_config["props"]["elem_classes"]
    assert labeled_config["props"]["value"] == "Go"  # positional *args reach the subclass's base
    assert not list(tmp_path.rglob("*.pyi"))
    assert not list(Path(gradio_compat.__file__).parent.glob("*.pyi"))  # nor for modules/ui_components.py


def test_component_listeners_get_kwargs_before_and_the_built_component_after(listeners):
    calls = []

    def before(component, **kwargs):
        calls.append(("before", component, kwargs, hasattr(component, "label")))

    def after(component, **kwargs):
        calls.append(("after", component, kwargs, component.label))

    listeners(before=before, after=after)
    with gr.Blocks():
        prompt = gr.Textbox(label="Prompt", elem_id="txt2img_prompt")
        gr.Button("Generate")
    first, second = calls[0], calls[1]
    assert first[0] == "before" and first[1] is prompt and first[3] is False
    assert first[2]["elem_id"] == "txt2img_prompt" and first[2]["label"] == "Prompt"
    assert second[0] == "after" and second[1] is prompt and second[3] == "Prompt"
    assert "gradio-textbox" in second[1].elem_classes
    assert calls[2][2]["elem_id"] is None and calls[2][2]["value"] == "Generate"  # defaults are there as in A1111


def test_a_failing_listener_is_reported_and_the_component_still_builds(listeners, caplog):
    def broken(component, **kwargs):
        raise RuntimeError("listener bug")

    listeners(before=broken, after=broken)
    with caplog.at_level(logging.ERROR, "sd.gradio_compat"):
        with gr.Blocks() as demo:
            slider = gr.Slider(1, 150, value=20, elem_id="txt2img_steps")
    assert slider.value == 20 and config_of(demo, slider)["props"]["elem_id"] == "txt2img_steps"
    failures = [r for r in caplog.records if "txt2img_steps" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info and "listener bug" in str(r.exc_info[1]) for r in failures)


def test_listeners_skip_components_rebuilt_for_an_update(listeners):
    seen = []
    listeners(after=lambda component, **kwargs: seen.append(kwargs.get("elem_id")))
    with gr.Blocks() as demo:
        text = gr.Textbox(elem_id="target")
        dep = gr.Button().click(lambda: gr.Textbox(visible=False), None, text)
    seen.clear()
    [update] = run_event(demo, dep)
    assert update["visible"] is False and seen == []


def test_css_classes_on_components_and_layout_blocks():
    with gr.Blocks() as demo:
        with gr.Tab("One") as tab:
            with gr.Row() as row:
                multi = gr.Dropdown(["a"], multiselect=True, elem_classes=["mine"])
                single = gr.Dropdown(["a"])
            with gr.Accordion("More") as accordion:
                pass
    assert multi.elem_classes == ["gradio-dropdown", "mine", "multiselect"]
    assert single.elem_classes == ["gradio-dropdown"]
    assert "gradio-accordion" in accordion.elem_classes and "gradio-row" in row.elem_classes
    assert "gradio-tabitem" in tab.elem_classes
    assert config_of(demo, multi)["props"]["elem_classes"] == ["gradio-dropdown", "mine", "multiselect"]


def test_idioms_are_recorded_per_extension_and_reported(tmp_path, caplog):
    root = tmp_path / "sd-webui-sample"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "sample.py").write_text(textwrap.dedent('''
        import gradio as gr

        def build():
            with gr.Box():
                button = gr.Button("Go").style(full_width=True)
            button.click(None, _js="() => 1")
    '''))
    gradio_compat.register_extension_root("sd-webui-sample", root)
    module = load_like_a1111(root / "scripts" / "sample.py")
    with gr.Blocks():
        module.build()
        gr.Button("ours").style()  # this file is under no registered root: "unknown"
    assert gradio_compat.idioms_used["sd-webui-sample"] == {"Box", ".style()", "_js="}
    with caplog.at_level(logging.INFO, "sd.gradio_compat"):
        lines = gradio_compat.report()
    expected = "extension sd-webui-sample uses Gradio 3 idioms: Box, .style(), _js= (shimmed; see docs)"
    assert expected in lines and expected in caplog.messages


def test_an_extensions_hidden_blocks_stay_in_the_page_hidden(tmp_path):
    """Gradio 3 rendered visible=False blocks with display: none; extension page scripts find their hidden message
    textboxes and buttons by id (sd-dynamic-prompts' Wildcards Manager). Our own visible=False stays False."""
    root = tmp_path / "sd-webui-hidden"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "hidden.py").write_text(textwrap.dedent('''
        import gradio as gr

        def build():
            inbox = gr.Textbox("", elem_id="ext-inbox", visible=False)
            action = gr.Button("Action", elem_id="ext-action", visible=False)
            with gr.Group(visible=False) as group:
                shown_later = gr.Slider(label="Scale", visible=False)
            action.click(lambda text: gr.update(visible=True), inbox, shown_later)
            return inbox, action, group, shown_later
    '''))
    gradio_compat.register_extension_root("sd-webui-hidden", root)
    module = load_like_a1111(root / "scripts" / "hidden.py")
    with gr.Blocks() as demo:
        inbox, action, group, shown_later = module.build()
        ours = gr.Textbox(visible=False)
    for block in (inbox, action, group, shown_later):
        assert config_of(demo, block)["props"]["visible"] == "hidden", block
    assert config_of(demo, ours)["props"]["visible"] is False
    dependency = next(d for d in demo.get_config_file()["dependencies"] if d["targets"][0][0] == action._id)
    (update,) = run_event(demo, dependency, "x")
    assert update["visible"] is True   # shown later by an update, as in Gradio 3


# --- modules.ui_components and the modules.ui helpers ---------------------------------------------------------

def test_input_accordion_is_a_checkbox_input_that_follows_the_accordion():
    from modules.ui_components import FormHTML, InputAccordion

    with gr.Blocks() as demo:
        with InputAccordion(False, label="Hires. fix", elem_id="txt2img_hr") as acc:
            with acc.extra():
                FormHTML("extra", min_width=0)
            inside = gr.Button()
        with InputAccordion(True, label="Again", elem_id="txt2img_hr") as twin:
            pass
        out = gr.Textbox()
        dep = gr.Button().click(lambda enabled: f"enabled={enabled}", [acc], out)
    assert acc.checkbox is acc and isinstance(acc, gr.Checkbox) and inside.parent is acc.accordion
    assert twin.accordion.elem_id == "txt2img_hr-1"  # A1111 makes repeated ids unique
    checkbox, accordion = config_of(demo, acc), config_of(demo, acc.accordion)
    assert checkbox["type"] == "checkbox" and checkbox["props"]["elem_id"] == "txt2img_hr-checkbox"
    assert checkbox["props"]["visible"] == "hidden"
    assert accordion["props"]["elem_id"] == "txt2img_hr" and accordion["props"]["open"] is False
    assert {"gradio-accordion", "input-accordion"} <= set(accordion["props"]["elem_classes"])
    assert run_event(demo, dep, True) == ["enabled=True"]

    expand, collapse = dep_on(demo, acc.accordion, "expand"), dep_on(demo, acc.accordion, "collapse")
    follow = dep_on(demo, acc, "change")
    assert expand["outputs"] == [acc._id] and run_event(demo, expand) == [True]
    assert run_event(demo, collapse) == [False]
    assert follow["outputs"] == [acc.accordion._id] and run_event(demo, follow, True)[0]["open"] is True


def test_ui_components_block_names_and_classes():
    from modules import ui_components as uc

    with gr.Blocks() as demo:
        with uc.FormRow() as row:
            multi = uc.DropdownMulti(choices=["a", "b"], label="Many")
            editable = uc.DropdownEditable(choices=["a"], label="Edit")
            button = uc.ToolButton("🔄", elem_id="refresh", elem_classes="mine")
        with uc.ResizeHandleRow() as resize:
            colour = uc.FormColorPicker()
    assert button.get_block_name() == "button" and config_of(demo, button)["type"] == "button"
    assert config_of(demo, button)["props"]["value"] == "🔄"
    assert button.elem_classes == ["gradio-button", "tool", "mine"]
    assert multi.multiselect and "multiselect" in multi.elem_classes and editable.allow_custom_value
    assert config_of(demo, row)["type"] == "row" and "resize-handle-row" in resize.elem_classes
    assert config_of(demo, colour)["type"] == "colorpicker"


def test_ui_helpers():
    from modules.ui import create_refresh_button, gr_show, plaintext_to_html

    assert plaintext_to_html("a<b\nc") == "<p>a&lt;b<br>\nc</p>"
    assert plaintext_to_html("x", classname="info") == "<p class='info'>x</p>"
    assert gr_show(False) == {"visible": False, "__type__": "update"}
    choices = ["one"]
    with gr.Blocks() as demo:
        dropdown = gr.Dropdown(choices, label="Model")
        button = create_refresh_button(dropdown, lambda: choices.append("two"), lambda: {"choices": list(choices)},
                                       "refresh_model")
    assert button.elem_id == "refresh_model" and button.webui_tooltip == "Model: refresh"
    [update] = run_event(demo, dep_on(demo, button, "click"))
    assert update["choices"] == [["one", "one"], ["two", "two"]] and dropdown.choices == ["one", "two"]


@pytest.mark.slow
def test_our_own_ui_builds_unchanged_with_the_shims(tmp_path, listeners):
    from modules import cmd_args
    from modules.runtime import Runtime
    from modules.ui import app

    rt = Runtime(cmd_args.parse(["--data-dir", str(tmp_path), "--no-half"], env={}))
    try:
        from modules import extension_host
        extension_host._register_settings(rt)  # the Extensions tab reads these settings
    except ImportError:
        pass
    ids = []
    listeners(after=lambda component, **kwargs: ids.append(kwargs.get("elem_id")))
    before = {ext: set(used) for ext, used in gradio_compat.idioms_used.items()}
    demo = app.build(rt)
    assert {ext: set(used) for ext, used in gradio_compat.idioms_used.items()} == before  # no Gradio 3 idiom used
    assert {"txt2img_prompt", "txt2img_width", "img2img_prompt", "txt2img_generate"} <= set(ids)
    config = demo.get_config_file()
    prompt = next(c for c in config["components"] if c["props"].get("elem_id") == "txt2img_prompt")
    assert prompt["type"] == "textbox" and "gradio-textbox" in prompt["props"]["elem_classes"]
