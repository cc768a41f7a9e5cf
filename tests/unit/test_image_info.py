"""Reading an image's infotext: one function (modules.images.read_info) for the UI's PNG Info tab and the API's
/sdapi/v1/png-info, from a PNG text chunk or the EXIF UserComment A1111 writes into JPEG and WebP files."""
from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from modules import images

TEXT = "a red square, ünïcode\nNegative prompt: blur\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1234, Size: 16x16"
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def _encoded(fmt: str, text: str | None = TEXT, comment_code: bytes = b"UNICODE\x00",
             encoding: str = "utf-16-be") -> bytes:
    """`fmt` bytes as A1111 saves them: PNG with a "parameters" chunk, JPEG/WebP with EXIF UserComment."""
    image = Image.new("RGB", (16, 16), "red")
    buf = io.BytesIO()
    if fmt == "PNG":
        meta = PngImagePlugin.PngInfo()
        meta.add_text("Software", "test")
        if text is not None:
            meta.add_text("parameters", text)
        image.save(buf, "PNG", pnginfo=meta)
    else:
        exif = Image.Exif()
        if text is not None:
            exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment_code + text.encode(encoding)
        image.save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_read_info_finds_the_infotext(fmt):
    image = Image.open(io.BytesIO(_encoded(fmt)))
    assert image.format == fmt
    text, items = images.read_info(image)
    assert text == TEXT
    assert "parameters" not in items and all(isinstance(v, str) for v in items.values())


def test_read_info_png_keeps_other_text_fields():
    assert images.read_info(Image.open(io.BytesIO(_encoded("PNG")))) == (TEXT, {"Software": "test"})


@pytest.mark.parametrize("code, encoding", [(b"ASCII\x00\x00\x00", "ascii"), (b"\x00" * 8, "utf-8")])
def test_read_info_other_exif_character_codes(code, encoding):
    text = "plain prompt\nSteps: 4, Seed: 1"
    image = Image.open(io.BytesIO(_encoded("JPEG", text, code, encoding)))
    assert images.read_info(image)[0] == text


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_read_info_without_infotext(fmt):
    text, _items = images.read_info(Image.open(io.BytesIO(_encoded(fmt, None))))
    assert text is None


def test_png_info_tab_reads_a_jpeg_as_gradio_hands_it_over(tmp_path):
    """The tab's handler gets the upload through gr.Image(type="pil") and shows the EXIF infotext, as the API does."""
    import gradio as gr
    from gradio.data_classes import ImageData

    from modules.ui import pnginfo_tab

    path = tmp_path / "a1111.jpg"
    path.write_bytes(_encoded("JPEG"))
    uploaded = gr.Image(type="pil").preprocess(ImageData(path=str(path), orig_name=path.name))
    text, details = pnginfo_tab.read(uploaded)
    assert text == TEXT
    assert "No generation parameters" not in details
    assert pnginfo_tab.read(Image.open(io.BytesIO(_encoded("JPEG", None))))[0] == ""


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_api_png_info_reads_the_same(fmt):
    """/sdapi/v1/png-info answers with what the tab shows, in A1111's shape (the route alone, no model)."""
    import base64
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modules.api import routes_misc

    app = FastAPI()
    app.include_router(routes_misc.create_router(SimpleNamespace(args=SimpleNamespace(api_server_stop=False)), []))
    answer = TestClient(app).post("/sdapi/v1/png-info",
                                  json={"image": base64.b64encode(_encoded(fmt)).decode()}).json()
    assert answer["info"] == TEXT
    assert answer["parameters"]["Seed"] == 1234 and answer["parameters"]["Prompt"] == "a red square, ünïcode"
