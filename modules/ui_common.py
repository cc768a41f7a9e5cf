"""A1111's `modules.ui_common`: small UI helpers extensions import (plaintext_to_html, create_refresh_button,
save_files)."""
from __future__ import annotations

import html
import json
import os

refresh_symbol = "\U0001f504"  # 🔄
folder_symbol = "\U0001f4c2"   # 📂


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    content = "<br>\n".join(html.escape(x) for x in (text or "").split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id: str):
    """A 🔄 button that calls refresh_method() and then updates the component(s) with refreshed_args (a dict, or a
    callable returning one, e.g. lambda: {"choices": names()})."""
    import gradio as gr
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        args = args or {}
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)  # later page loads start from the new values
        updates = [gr.update(**args) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = gr.Button(value=refresh_symbol, elem_id=elem_id, elem_classes=["tool"], size="sm", min_width=40,
                       scale=0)
    button.click(fn=refresh, inputs=[], outputs=components)
    return button


def save_files(js_data, images, do_make_zip: bool = False, index: int = -1):
    """A1111's Save button, minimal: the chosen image (all when index < 0) saved with its infotext into the
    outdir_save folder (data/outputs/save by default); a .zip of them too with do_make_zip. Returns
    (the files written, an HTML line naming them)."""
    import zipfile

    from modules import images as images_mod
    from modules import infotext_utils, shared
    data = json.loads(js_data) if isinstance(js_data, str) and js_data else (js_data or {})
    infotexts = data.get("infotexts") or []
    folder = (shared.opts.data.get("outdir_save") if shared.bound() else None) or "outputs/save"
    if not os.path.isabs(folder):
        folder = os.path.join(shared.data_path, folder)
    seeds = data.get("all_seeds") or []
    chosen = list(enumerate(images)) if index is None or index < 0 else [(index, images[index])]
    written = []
    for i, item in chosen:
        image = infotext_utils.image_from_url_text(item)
        info = infotexts[i] if i < len(infotexts) else None
        seed = seeds[i] if i < len(seeds) else None
        fullfn, _txt = images_mod.save_image(image, folder, "", seed=seed, prompt=data.get("prompt"), info=info,
                                             save_to_dirs=False)
        written.append(fullfn)
    if do_make_zip and written:
        zip_path = os.path.join(folder, "images.zip")
        with zipfile.ZipFile(zip_path, "w") as z:
            for fn in written:
                z.write(fn, os.path.basename(fn))
        written.append(zip_path)
    return written, plaintext_to_html(f"Saved: {os.path.basename(written[0]) if written else 'none'}")
