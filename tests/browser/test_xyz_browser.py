"""X/Y/Z plot in the page, driven as a user drives it: pick it in txt2img's Script dropdown, choose Steps for X and
CFG Scale for Y, type A1111's range and list syntax, generate; the gallery shows the labelled grid (and, with
"Include Sub Images", each cell after it), the grid is saved to outputs/txt2img-grids with its infotext, and a bad
value shows an error naming the axis."""
from __future__ import annotations

import pytest
from PIL import Image

from tests.support.browser import browser_page, choose, gallery_image, open_ui, screenshot, set_number, wait_info
from tests.support.server import make_data_dir, start_server

pytestmark = pytest.mark.browser
SCRIPT = "script_txt2img_xyz_plot"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd1):
    data = make_data_dir(tmp_path_factory.mktemp("xyz-page"), tiny_sd1)
    srv = start_server(data)
    yield srv
    srv.stop()


def pick_plot(page) -> None:
    values = page.locator(f"#{SCRIPT}_x_values textarea")
    assert values.count() == 0 or not values.is_visible()          # hidden until the script is picked
    choose(page, "txt2img_script", "X/Y/Z plot")
    values.wait_for(state="visible")


def test_steps_by_cfg_grid_in_the_gallery_and_saved(server):
    with browser_page(1280, 1000) as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_ui(page, server)
        pick_plot(page)
        choose(page, f"{SCRIPT}_x_type", "Steps")
        page.locator(f"#{SCRIPT}_x_values textarea").fill("1-2")
        choose(page, f"{SCRIPT}_y_type", "CFG Scale")
        page.locator(f"#{SCRIPT}_y_values textarea").fill("5, 9")
        page.locator(f"#{SCRIPT}_include_lone_images input[type=checkbox]").check()
        page.locator("#txt2img_prompt textarea").fill("a red circle")
        set_number(page, "txt2img_width", 64)
        set_number(page, "txt2img_height", 64)
        page.locator("#txt2img_seed input").fill("21")
        page.locator("#txt2img_generate").click()
        info = wait_info(page, "txt2img", "X Type: Steps")
        assert "X Values: 1-2" in info and "Y Type: CFG Scale" in info and "Seed: 21" in info, info
        grid = gallery_image(page, server, "txt2img")
        assert grid.width > 2 * 64 and grid.height > 2 * 64               # two by two cells with label bands
        assert page.locator("#txt2img_gallery img").count() == 5          # the grid, then the four cells
        saved = sorted((server.data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
        assert len(saved) == 1
        with Image.open(saved[0]) as im:
            assert im.size == grid.size and "X Type: Steps" in im.info["parameters"]
        screenshot(page, "xyz_plot_txt2img")
        assert errors == []


def test_a_bad_value_is_reported_naming_the_axis(server):
    with browser_page() as page:
        open_ui(page, server)
        pick_plot(page)
        choose(page, f"{SCRIPT}_x_type", "Steps")
        page.locator(f"#{SCRIPT}_x_values textarea").fill("1-x")
        page.locator("#txt2img_generate").click()
        error = page.locator("#html_info_txt2img .sd-error")
        error.wait_for(state="visible", timeout=60_000)
        assert "Steps" in error.inner_text(), error.inner_text()
