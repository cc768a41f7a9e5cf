"""Progress in the page (bar with step/ETA and live preview), reattaching to a running job after a reload, Save and
Zip, the ↙ paste button, the Sketch and Inpaint sketch modes and a narrow screen, in a real browser against the real
server; plus quick checks of the progress helpers without a browser."""
from __future__ import annotations

import csv
import io
import zipfile
from urllib.parse import urljoin

import numpy as np
import pytest
import requests
from PIL import Image

from modules.engine import image_ops
from tests.support.browser import (GENERATE_TIMEOUT, browser_page, find_image, gallery_image, open_tab, open_ui, poll,
                                   screenshot, set_number, small_txt2img, wait_info)


# --- helpers ------------------------------------------------------------------------------------------------------
def start_txt2img(page, prompt: str, seed: int, steps: int, size: int = 64, batch_size: int = 1,
                  batch_count: int = 1) -> None:
    """Start a txt2img job from the page (64 px: larger sizes are many times slower on this shared CPU)."""
    page.locator("#txt2img_prompt textarea").fill(prompt)
    for elem_id, value in (("txt2img_width", size), ("txt2img_height", size), ("txt2img_steps", steps),
                           ("txt2img_batch_size", batch_size), ("txt2img_batch_count", batch_count)):
        set_number(page, elem_id, value)
    page.locator("#txt2img_seed input").fill(str(seed))
    page.locator("#txt2img_generate").click()


def wait_progress(page, tab: str, with_preview: bool, timeout: float = GENERATE_TIMEOUT) -> str:
    """Wait until the tab's bar shows a sampling step and an ETA (and a live preview); returns the bar's text."""
    page.wait_for_function(
        """([tab, withPreview]) => {
             const text = document.querySelector(`#${tab}_progressbar .sd-progress-text`);
             if (!text || !/Step \\d+\\/\\d+/.test(text.textContent) || !text.textContent.includes('ETA')) return false;
             const img = document.querySelector(`#${tab}_live_preview`);
             return !withPreview || (img && img.complete && img.naturalWidth > 0);
           }""", arg=[tab, with_preview], timeout=timeout)
    return page.locator(f"#{tab}_progressbar .sd-progress-text").inner_text()


def download(server, page, elem_id: str) -> bytes:
    """The file a gr.File download link offers."""
    link = page.locator(f"#{elem_id} a[href]").first
    link.wait_for(state="attached")
    response = requests.get(urljoin(server.url + "/", link.get_attribute("href")), timeout=30)
    response.raise_for_status()
    return response.content


def _gradient(size: int = 64) -> Image.Image:
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = np.arange(size)[None, :] * (256 // size)
    arr[..., 1] = np.arange(size)[:, None] * (256 // size)
    arr[..., 2] = 128
    return Image.fromarray(arr)


def _red_strokes(canvas, left: float, top: float, scale: float, size: int):
    """Where the (red, default-colour) brush shows on the image, in image pixels, as a 1-tuple (poll needs a plain
    truth value); None while nothing shows."""
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    centres = ((np.arange(size) + 0.5) * scale).astype(int)
    view = shot[int(top) + centres[:, None], int(left) + centres[None, :]]
    mask = (view[..., 0] >= 200) & (view[..., 1] <= 60) & (view[..., 2] <= 60)
    return (mask,) if mask.any() else None


def sketch_on(page, editor_id: str, source_path, size: int):
    """Upload the image into a sketch editor and draw a short stroke in its top-left corner; returns the stroke's
    mask as seen on the screen."""
    editor = page.locator(f"#{editor_id}")
    editor.locator(".pixi-target canvas").wait_for(state="visible")
    editor.locator("input[type=file]").set_input_files(str(source_path))
    editor.locator(".empty").wait_for(state="detached")
    canvas = editor.locator(".pixi-target canvas")
    left, top, scale = poll(lambda: find_image(canvas, size), 60, "the image never showed in the editor")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + left + 3 * scale, box["y"] + top + 3 * scale)
    page.mouse.down()
    for i in range(1, 4):
        page.mouse.move(box["x"] + left + (3 + i) * scale, box["y"] + top + (3 + i) * scale, steps=2)
    page.mouse.up()
    return poll(lambda: _red_strokes(canvas, left, top, scale, size), 60, "nothing was drawn")[0]


def small_img2img_settings(page, seed: int, denoise: float) -> None:
    set_number(page, "img2img_width", 64)
    set_number(page, "img2img_height", 64)
    set_number(page, "img2img_steps", 2)
    set_number(page, "img2img_denoising_strength", denoise)
    page.locator("#img2img_seed input").fill(str(seed))


# --- progress without a browser -----------------------------------------------------------------------------------
class _FakeQueue:
    current = None


def test_progress_html_and_failed_job_message():
    from modules.jobs import QueuedJob
    from modules.ui import progress

    queue = _FakeQueue()
    job = QueuedJob("txt2img", {}, "task(test)")
    view = progress.ProgressView("txt2img", queue)
    assert "Waiting..." in view.render(job)  # not started yet: queued
    queue.current = job
    st = job.state
    st.time_start, st.job_count, st.sampling_steps, st.sampling_step = 0.0, 1, 20, 5
    st.current_image, st.current_image_step = Image.new("RGB", (8, 8), "red"), 5
    text = view.render(job)
    assert "Step 5/20" in text and "25%" in text and "ETA: " in text
    assert 'id="txt2img_live_preview"' in text and "data:image/png;base64," in text
    assert progress.format_eta(75) == "1m 15s" and progress.format_eta(4.2) == "4s"

    # a job that fails in an unexpected way: the last yield hides the bar and shows one readable line
    job.error = ZeroDivisionError("division by zero")
    job.done.set()
    queue.current = None
    *_, last = progress.follow(job, view, lambda j: (progress.job_error(j),), 1)
    assert last[0] == "" and last[2] == {"task": ""}
    assert last[1] == "Generation failed: ZeroDivisionError: division by zero"
    assert "Traceback" not in last[1]
    job.error = MemoryError("cannot allocate 12 GiB")
    message = progress.job_error(job)
    assert message.startswith("Out of memory: try a smaller width/height") and "12 GiB" in message


def test_sketch_composite_and_mask():
    from modules.ui.img2img_tab import sketch_from_editor

    background = _gradient(16).convert("RGBA")
    layer = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (2, 3, 6, 8))
    image, mask = sketch_from_editor({"background": background, "layers": [layer], "composite": None})
    arr, src, m = np.asarray(image), np.asarray(background.convert("RGB")), np.asarray(mask) > 0
    assert image.mode == "RGB" and image.size == (16, 16)
    assert (arr[3:8, 2:6] == [255, 0, 0]).all()            # the strokes' colour is in the init image ...
    assert m[3:8, 2:6].all() and m.sum() == 4 * 5          # ... and they are the mask
    assert (arr[~m] == src[~m]).all()                      # everything else is the picture, untouched
    assert sketch_from_editor({"background": background, "layers": []})[1] is None  # nothing drawn: no mask
    assert sketch_from_editor(None) == (None, None)


# --- browser tests ------------------------------------------------------------------------------------------------
pytest_browser = pytest.mark.browser


@pytest_browser
def test_progress_bar_with_eta_and_live_preview(server):
    requests.post(server.api("options"), json={"show_progress_every_n_steps": 2}, timeout=30).raise_for_status()
    try:
        with browser_page() as page:
            open_ui(page, server)
            start_txt2img(page, "a progress bar", seed=1212, steps=40)
            text = wait_progress(page, "txt2img", with_preview=True)
            assert "/40" in text, text
            screenshot(page, "progress_txt2img")
            info = wait_info(page, "txt2img", "Seed: 1212")
            assert "Steps: 40" in info
            # the bar goes away with the job
            page.locator("#txt2img_progressbar").wait_for(state="detached", timeout=30_000)
            assert page.locator("#txt2img_live_preview").count() == 0
            assert gallery_image(page, server, "txt2img").size == (64, 64)
    finally:
        requests.post(server.api("options"), json={"show_progress_every_n_steps": 5}, timeout=30)


@pytest_browser
def test_reload_reattaches_to_the_running_job(server):
    with browser_page() as page:
        open_ui(page, server)
        # two images of 150 steps: long enough to outlast the reload on an idle machine too
        start_txt2img(page, "a job that outlives its page", seed=4242, steps=150, batch_count=2)
        wait_progress(page, "txt2img", with_preview=False)
        task_id = page.locator("#txt2img_progressbar").get_attribute("data-task-id")
        assert task_id.startswith("task(")
        page.reload()
        page.locator("#txt2img_prompt textarea").wait_for(state="visible")
        # the same job's bar comes back (it was sampling when the page went away, and is still)
        page.wait_for_function("(id) => { const bar = document.getElementById('txt2img_progressbar');"
                               "return bar && bar.dataset.taskId === id; }", arg=task_id, timeout=60_000)
        text = wait_progress(page, "txt2img", with_preview=False)
        assert "/150" in text, text
        screenshot(page, "progress_after_reload")
        # ... and when the job ends, its images and infotext appear in the reloaded page
        info = wait_info(page, "txt2img", "Seed: 4242")
        assert info.startswith("a job that outlives its page\n") and "Steps: 150" in info
        assert page.locator("#txt2img_gallery img").count() == 3          # A1111: the batch's grid first
        assert gallery_image(page, server, "txt2img").size == (128, 64)
        page.locator("#txt2img_progressbar").wait_for(state="detached", timeout=30_000)
        # the page forgot the finished job: another reload shows no bar and an empty gallery
        page.reload()
        open_ui(page, server)
        assert page.locator("#txt2img_progressbar").count() == 0
        assert page.locator("#txt2img_gallery img").count() == 0


@pytest_browser
def test_save_and_zip_the_batch(server):
    save_dir = server.data_dir / "outputs" / "save"
    log_rows = len(list(csv.reader(open(save_dir / "log.csv", encoding="utf-8")))) if (save_dir / "log.csv").exists() \
        else 0
    with browser_page() as page:
        open_ui(page, server)
        start_txt2img(page, "two little squares", seed=777, steps=2, size=64, batch_size=2)
        wait_info(page, "txt2img", "Seed: 777")
        page.locator("#txt2img_gallery img").nth(2).wait_for(state="visible")
        # Save with the second image selected (after the batch's grid, as A1111 shows it): that image (seed 778) is
        # copied and logged; the selection reaches the server's session state with the answer to the select event
        with page.expect_response(lambda r: r.request.method == "POST" and "/gradio_api/" in r.url):
            page.locator("#txt2img_gallery img").nth(2).click()
        page.locator("#txt2img_save").click()
        page.wait_for_function("() => document.querySelector('#html_info_txt2img').innerText.includes('Saved: ')")
        saved_name = page.locator("#html_info_txt2img").inner_text().split("Saved: ", 1)[1].strip()
        saved = save_dir / saved_name
        assert saved.is_file(), saved
        assert "-778-two little squares" in saved_name, saved_name
        with Image.open(saved) as im:
            assert "Seed: 778" in im.info["parameters"]
        assert download(server, page, "download_files_txt2img")[:8] == b"\x89PNG\r\n\x1a\n"
        rows = list(csv.reader(open(save_dir / "log.csv", encoding="utf-8")))
        assert rows[0][:3] == ["prompt", "seed", "width"]
        assert len(rows) == max(log_rows, 1) + 1
        assert rows[-1][:4] == ["two little squares", "778", "64", "64"] and rows[-1][7] == saved_name
        screenshot(page, "saved")

        page.locator("#txt2img_zip").click()
        page.wait_for_function("() => document.querySelector('#html_info_txt2img').innerText.includes('.zip')")
        data = download(server, page, "download_files_txt2img")
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            assert len(names) == 3, names                                 # the grid and both images
            seeds, sizes = [], []
            for name in names:
                with Image.open(io.BytesIO(z.read(name))) as im:
                    sizes.append(im.size)
                    if im.size == (64, 64):
                        seeds.append(im.info["parameters"].split("Seed: ", 1)[1].split(",", 1)[0])
            assert sorted(seeds) == ["777", "778"] and sorted(sizes) == [(64, 64), (64, 64), (128, 64)]
        assert list(save_dir.glob("images-*.zip")), "the zip is not kept in outputs/save"


@pytest_browser
def test_paste_infotext_from_the_prompt_box(server):
    infotext = ("a pasted castle, (stone:1.2)\nNegative prompt: fog\nSteps: 7, Sampler: Euler a, Schedule type: "
                "Karras, CFG scale: 4.5, Seed: 86420, Size: 96x80, Model: tiny_sd1, Version: v1.10.1")
    with browser_page() as page:
        open_ui(page, server)
        page.locator("#txt2img_prompt textarea").fill(infotext)
        page.locator("#txt2img_paste").click()
        page.wait_for_function("() => document.querySelector('#txt2img_seed input').value === '86420'")
        assert page.locator("#txt2img_prompt textarea").input_value() == "a pasted castle, (stone:1.2)"
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == "fog"
        assert page.locator("#txt2img_steps input[type=number]").input_value() == "7"
        assert page.locator("#txt2img_sampling input[role=combobox]").input_value() == "Euler a"
        assert page.locator("#txt2img_scheduler input[role=combobox]").input_value() == "Karras"
        assert page.locator("#txt2img_width input[type=number]").input_value() == "96"
        assert page.locator("#txt2img_height input[type=number]").input_value() == "80"
        assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "4.5"

        # with an empty prompt box, ↙ takes the last generation's parameters (here one made over the API)
        body = {"prompt": "the last one", "steps": 3, "seed": 13579, "width": 64, "height": 72,
                "sampler_name": "Heun", "cfg_scale": 6}
        requests.post(server.api("txt2img"), json=body, timeout=300).raise_for_status()
        page.locator("#txt2img_prompt textarea").fill("")
        page.locator("#txt2img_paste").click()
        page.wait_for_function("() => document.querySelector('#txt2img_seed input').value === '13579'")
        assert page.locator("#txt2img_prompt textarea").input_value() == "the last one"
        assert page.locator("#txt2img_steps input[type=number]").input_value() == "3"
        assert page.locator("#txt2img_sampling input[role=combobox]").input_value() == "Heun"
        assert page.locator("#txt2img_width input[type=number]").input_value() == "64"
        assert page.locator("#txt2img_height input[type=number]").input_value() == "72"


@pytest_browser
def test_sketch_draws_colour_into_the_init_image(server, tmp_path):
    source = _gradient()
    source.save(tmp_path / "source.png")
    with browser_page() as page:
        open_ui(page, server)
        open_tab(page, "tab_img2img")
        open_tab(page, "img2img_img2img_sketch_tab")
        sketch_on(page, "img2img_sketch", tmp_path / "source.png", source.width)
        small_img2img_settings(page, seed=6161, denoise=0.3)
        page.locator("#img2img_generate").click()
        text = wait_info(page, "img2img", "Seed: 6161")
        assert "Denoising strength: 0.3" in text and "Mask blur" not in text
        assert gallery_image(page, server, "img2img").size == (64, 64)
        screenshot(page, "img2img_sketch")


@pytest_browser
def test_inpaint_sketch_repaints_only_the_strokes(server, tmp_path):
    source = _gradient()
    source.save(tmp_path / "source.png")
    with browser_page() as page:
        open_ui(page, server)
        open_tab(page, "tab_img2img")
        open_tab(page, "img2img_inpaint_sketch_tab")
        painted = sketch_on(page, "inpaint_sketch", tmp_path / "source.png", source.width)
        small_img2img_settings(page, seed=7171, denoise=1)
        page.locator("#img2img_generate").click()
        text = wait_info(page, "img2img", "Seed: 7171")
        assert "Mask blur: 4" in text
        out = np.asarray(gallery_image(page, server, "img2img").convert("RGB")).astype(int)
        screenshot(page, "img2img_inpaint_sketch")
    src = np.asarray(source).astype(int)
    changed = np.any(out != src, axis=2)
    assert changed[painted].mean() > 0.9, changed[painted].mean()
    # outside the blurred mask (the stroke read off the screen, grown by 2 px for its soft edge) the final composite
    # is the input, pixel for pixel
    grown = np.pad(painted, 2)
    grown = np.any([grown[2 + dy:2 + dy + 64, 2 + dx:2 + dx + 64] for dy in range(-2, 3) for dx in range(-2, 3)], 0)
    blurred = np.asarray(image_ops.prepare_mask(Image.fromarray((grown * 255).astype(np.uint8)), False, 4))
    outside = blurred == 0
    assert outside.mean() > 0.25, "the stroke covered too much of the image to check anything"
    assert not changed[outside].any(), np.argwhere(changed & outside)[:10]


@pytest_browser
def test_narrow_screen_keeps_generate_reachable(server):
    with browser_page(width=400, height=800) as page:
        open_ui(page, server)
        for tab in ("txt2img", "img2img"):
            if tab == "img2img":
                open_tab(page, "tab_img2img")
            generate = page.locator(f"#{tab}_generate")
            generate.scroll_into_view_if_needed()
            assert generate.is_visible() and generate.is_enabled()
            box = generate.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 400 + 2, box
            for button in (f"#{tab}_save", f"#{tab}_zip", f"#{tab}_paste"):
                assert page.locator(button).is_visible(), button
            overflow = page.evaluate("() => document.documentElement.scrollWidth") - 400
            assert overflow <= 4, f"{tab}: the page is {overflow} px wider than a 400 px screen"
            screenshot(page, f"narrow_{tab}")
        # a generation started on the narrow screen shows its result there too
        open_tab(page, "tab_txt2img")
        small_txt2img(page, "a narrow square", seed=9191)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 404
