"""The bundled demo model in a real browser (issue 3): on an empty data dir the UI comes up on the demo model with
64x64 defaults and draws what the prompt asks for."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.browser import browser_page, gallery_image, open_ui, set_number, wait_info
from tests.support.server import start_server
from tools.demo_model import analysis

pytestmark = pytest.mark.browser


def test_first_run_without_models_draws_the_prompt(tmp_path):
    """An empty data dir (the air-gapped first run): the UI comes up on the demo model with 64x64 defaults and the
    default generation follows the prompt."""
    srv = start_server(tmp_path)
    try:
        with browser_page() as page:
            open_ui(page, srv)
            for slider in ("txt2img_width", "txt2img_height"):
                assert page.locator(f"#{slider} input[type=number]").input_value() == "64"
            page.locator("#txt2img_prompt textarea").fill("a large yellow square at the top, blue background")
            set_number(page, "txt2img_steps", 20)
            page.locator("#txt2img_seed input").fill("7")
            page.locator("#txt2img_generate").click()
            info = wait_info(page, "txt2img", "Size: 64x64")
            assert "Model: demo-shapes" in info
            img = np.asarray(gallery_image(page, srv, "txt2img").convert("RGB"))
        res = analysis.analyze(img)
        assert (res.color, res.shape, res.position) == ("yellow", "square", "top"), res
    finally:
        srv.stop()
