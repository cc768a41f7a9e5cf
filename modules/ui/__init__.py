"""The Gradio face. The package itself also offers the helpers A1111 extensions import from `modules.ui`
(create_refresh_button, plaintext_to_html, gr_show); Gradio is imported inside them so importing the package
stays light."""
from __future__ import annotations

import html

refresh_symbol = "\U0001f504"  # 🔄


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """Plain text as one HTML paragraph: escaped, line breaks kept."""
    content = "<br>\n".join(html.escape(line) for line in (text or "").split("\n"))
    return f"<p class='{html.escape(classname, quote=True)}'>{content}</p>" if classname else f"<p>{content}</p>"


def gr_show(visible: bool = True) -> dict:
    """An update that shows or hides a component (A1111's helper from Gradio 3 times)."""
    return {"visible": visible, "__type__": "update"}


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id):
    """A 🔄 ToolButton that calls `refresh_method()`, then sets `refreshed_args` (a dict, or a function returning
    one, e.g. {"choices": [...]}) on `refresh_component` (one component or a list) and sends them to the page."""
    import gradio as gr

    from modules.ui_components import ToolButton

    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]
    label = next((c.label for c in components if getattr(c, "label", None)), None)

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        args = dict(args or {})
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)
        updates = [gr.update(**args) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = ToolButton(value=refresh_symbol, elem_id=elem_id, tooltip=f"{label}: refresh" if label else "Refresh")
    button.click(fn=refresh, inputs=[], outputs=components)
    return button
