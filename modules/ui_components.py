"""A1111's `modules.ui_components`: Gradio subclasses extensions import (ToolButton, FormRow, InputAccordion, ...).

Each returns its Gradio base's block name from get_block_name(): the frontend picks its widget by that name, and the
`gradio-<name>` CSS class follows it. The Gradio 3 shims are installed first: without them Gradio would write a .pyi
beside this file when the classes below are defined.
"""
from __future__ import annotations

import itertools
import weakref

import gradio as gr
from gradio.context import get_blocks_context

from modules import gradio_compat

gradio_compat.install()


class FormComponent:
    """Mixin: the component goes into the surrounding form (beside a dropdown, say) instead of breaking it."""

    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    """Small button with a single emoji, sized to sit inside a form (e.g. the refresh button next to a dropdown)."""

    def __init__(self, value="", *args, **kwargs):
        classes = kwargs.pop("elem_classes", None) or []
        classes = [classes] if isinstance(classes, str) else list(classes)
        kwargs.setdefault("scale", 0)
        kwargs.setdefault("min_width", 40)
        super().__init__(value, *args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class ResizeHandleRow(gr.Row):
    """A Row whose columns A1111's resizeHandle.js lets the user resize (class `resize-handle-row`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")

    def get_block_name(self):
        return "row"


class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"


class FormColorPicker(FormComponent, gr.ColorPicker):
    def get_block_name(self):
        return "colorpicker"


class DropdownMulti(FormComponent, gr.Dropdown):
    """A Dropdown that is always multiselect."""

    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class DropdownEditable(FormComponent, gr.Dropdown):
    """A Dropdown that also accepts typed values."""

    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


_ACCORDION_KEYS = ("label", "visible", "elem_classes", "height", "max_height", "render")
_accordion_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per page (root Blocks): ids in use
_accordion_counter = itertools.count()


def _unique_accordion_id(wanted: str | None) -> str:
    """A1111 makes the ids unique (two scripts may ask for the same one), per page so a rebuilt UI keeps them."""
    context = get_blocks_context()
    taken = _accordion_ids.setdefault(context.root_block, set()) if context is not None else set()
    base = wanted or f"input-accordion-{next(_accordion_counter)}"
    candidate = base
    for n in itertools.count(1):
        if candidate not in taken:
            break
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


class InputAccordion(gr.Checkbox):
    """An Accordion that is an input: its value is a checkbox that follows the accordion (open = True).

    The component itself is that checkbox (hidden, `#<id>-checkbox`), so it goes into event inputs like any
    Checkbox; `.accordion` is the Accordion (`#<id>`), `.checkbox` is self. Opening or closing the accordion sets
    the checkbox, and setting the checkbox (an event output, a pasted infotext) opens or closes the accordion.
    `with InputAccordion(False, label="Hires") as acc:` fills the accordion; `with acc.extra():` adds a column
    for controls beside the content (A1111 puts it in the header).
    """

    def __init__(self, value=False, **kwargs):
        self.accordion_id = accordion_id = _unique_accordion_id(kwargs.get("elem_id"))
        accordion_kwargs = {key: kwargs.pop(key) for key in _ACCORDION_KEYS if key in kwargs and key != "label"}
        render = accordion_kwargs.get("render", True)
        checkbox_kwargs = {**kwargs, "elem_id": f"{accordion_id}-checkbox", "visible": "hidden", "render": render}
        super().__init__(value, **checkbox_kwargs)
        self.checkbox = self
        classes = accordion_kwargs.pop("elem_classes", None) or []
        classes = [classes] if isinstance(classes, str) else list(classes)
        self.accordion = gr.Accordion(label=kwargs.get("label") or "Accordion", open=bool(value), elem_id=accordion_id,
                                      elem_classes=["input-accordion", *classes], **accordion_kwargs)
        if render and get_blocks_context() is not None:
            self._link()

    def _link(self):
        """Accordion → checkbox on expand/collapse; checkbox → accordion when something else sets the value."""
        self.accordion.expand(lambda: True, None, self, queue=False, show_progress="hidden")
        self.accordion.collapse(lambda: False, None, self, queue=False, show_progress="hidden")
        self.change(lambda checked: gr.update(open=bool(checked)), self, self.accordion, queue=False,
                    show_progress="hidden")

    def extra(self):
        """A column for extra controls (A1111 shows it in the accordion's header)."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
