"""The top bar's quicksettings (A1111's "Quicksettings list", Settings → User interface).

Gradio builds the page once, so the top bar holds a control for every setting that may be listed, each the same kind
of control as on the Settings page; every page load shows the ones in the list now and hides the others, so Apply
settings + Reload UI changes the top bar without a restart. The checkpoint dropdown (with its refresh button) is
built by app.py and always shown."""
from __future__ import annotations

import gradio as gr

from modules.options import QUICKSETTINGS_DEFAULT
from modules.ui import common, settings_tab


def keys(opts) -> list[str]:
    """Every setting that gets a top-bar control: the default ones first (today's top bar), then the others in the
    order of the Settings page. The order in the bar is this one, whatever the order in the list."""
    candidates = [k for k in opts.quicksettings_candidates() if k != "sd_model_checkpoint"]
    first = [k for k in QUICKSETTINGS_DEFAULT if k in candidates]
    return first + [k for k in candidates if k not in first]


def build(rt) -> dict:
    """Call inside the top bar's row. Returns {"controls": {key: component}, "boxes": {key: column}}. Each control
    sits in its own column, which is what is shown or hidden: a row sums the minimum widths of the form controls side
    by side, hidden ones included, and would wrap the whole bar."""
    opts = rt.options
    shown = set(opts.quicksettings())
    controls, boxes = {}, {}
    for key in keys(opts):
        info = opts.info[key]
        size = {"scale": 1, "min_width": 120} if isinstance(info.default, bool) else {"scale": 2, "min_width": 160}
        with gr.Column(visible=key in shown, elem_id=f"quicksettings_box_{key}", **size) as box:
            # a plain value, not a callable: Gradio gives each callable value its own load event, and ~170 of
            # them queued one by one made the page settle a minute late; `wire` refreshes all values in one load
            controls[key] = settings_tab.component(key, info, opts.get(key),
                                                   elem_id=settings_tab.topbar_elem_id(key))
        boxes[key] = box
    return {"controls": controls, "boxes": boxes}


def _choices_update(info) -> dict:
    # lists that follow the files on disk (SD VAE) are read again on load
    return {"choices": info.choices()} if callable(info.choices) and not isinstance(info.default, list) else {}


def wire(rt, demo: gr.Blocks, quick: dict, status, settings: dict) -> None:
    """A change in the top bar applies at once (errors in `status`) and shows on the Settings page too; Apply settings
    updates the top bar (values and which controls are shown); every page load shows the list now in force."""
    opts = rt.options
    controls, boxes = quick["controls"], quick["boxes"]
    page = settings.get("components", {})
    order = list(controls)

    def handler(key):
        info = opts.info[key]

        def apply(value):
            try:
                opts.set(key, settings_tab.coerce(info, value))
            except Exception as exc:  # noqa: BLE001 - shown in the page; the control goes back to the value in force
                return common.error_html(str(exc)), gr.update(value=opts.get(key)), gr.update()
            return "", gr.update(), gr.update(value=opts.get(key))
        return apply

    for key, control in controls.items():
        target = page.get(key)
        if target is not None:
            control.input(handler(key), control, [status, control, target])
        else:
            control.input(lambda v, f=handler(key): f(v)[:2], control, [status, control])

    outputs = [boxes[k] for k in order] + [controls[k] for k in order]

    def updates(with_values: bool):
        shown = set(opts.quicksettings())
        return [gr.update(visible=k in shown) for k in order] + \
            [gr.update(**_choices_update(opts.info[k]), **({"value": opts.get(k)} if with_values else {}))
             for k in order]

    applied = settings.get("applied")
    if applied is not None:
        applied.then(lambda: updates(True), None, outputs)
    # every page load: which controls are shown, and the values now in force (one event for the whole bar)
    demo.load(lambda: updates(True), None, outputs)
