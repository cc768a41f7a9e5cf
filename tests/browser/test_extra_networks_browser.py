"""The Lora tab of Extra Networks in a real browser against a real server: the cards are not in the page until the
tab is opened, and then open fast with 2,000 LoRAs in the folder; search, folders and sort filter them; a click
puts `<lora:ink:0.8>` (the preferred weight from ink.json) into the prompt and a second click takes it out; the
metadata editor saves ink.json; refresh finds a new file; previews come from the thumb route, which refuses files
outside the Lora folders."""
from __future__ import annotations

import json
import time

import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.paths import DEMO_LORA_DIR
from tests.support.browser import browser_page, open_ui, screenshot
from tests.support.server import make_data_dir, start_server

BULK = 2000
# the bundled demo LoRA(s) are listed with any --data-dir
DEMO = len(list(DEMO_LORA_DIR.glob("*.safetensors")))
OPEN_LIMIT_MS = 1000


def _lora(path, seed=0):
    """A small LoRA in kohya's key layout (one down/up pair of a UNet attention projection, and its alpha)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    save_file({f"{key}.lora_down.weight": torch.randn(2, 8, generator=g),
               f"{key}.lora_up.weight": torch.randn(8, 2, generator=g), f"{key}.alpha": torch.tensor(2.0)},
              str(path), metadata={"ss_network_module": "networks.lora"})
    return path


@pytest.fixture
def lora_server(tmp_path, tiny_sd1, tiny_sd1_b):
    data = make_data_dir(tmp_path / "data", tiny_sd1, tiny_sd1_b)
    (data / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, str(data / "embeddings" / "goodcolor.safetensors"))  # fits
    save_file({"emb_params": torch.randn(1, 64)}, str(data / "embeddings" / "widexl.safetensors"))  # too wide
    lora = data / "models" / "Lora"
    _lora(lora / "ink.safetensors")
    (lora / "ink.json").write_text(json.dumps({"preferred weight": 0.8}), encoding="utf8")
    Image.new("RGB", (32, 48), (20, 20, 160)).save(lora / "ink.preview.png")
    _lora(lora / "styles" / "flat.safetensors", 1)
    for i in range(BULK):   # the big folder: tiny files, each a valid safetensors file
        save_file({"w": torch.zeros(1)}, str(lora / "bulk" / f"net_{i:04d}.safetensors")) if i else \
            _lora(lora / "bulk" / "net_0000.safetensors", 2)
    (tmp_path / "outside.png").write_bytes((lora / "ink.preview.png").read_bytes())
    srv = start_server(data)
    try:
        yield srv, lora
    finally:
        srv.stop()


OPEN_TAB_JS = """(tab) => new Promise((resolve) => {
  const t0 = performance.now();
  document.addEventListener("extra-networks-loaded", (e) => {
    if (e.target.dataset.page !== "lora" || e.target.dataset.tabname !== tab) return;
    // measured once the browser has laid the cards out and painted them
    requestAnimationFrame(() => requestAnimationFrame(() => resolve({
      ms: performance.now() - t0, cards: e.target.querySelectorAll(".card").length,
      server: Number(e.target.dataset.fetchMs), insert: Number(e.target.dataset.insertMs),
      ready: Number(e.target.dataset.loadMs)})));
  });
  document.getElementById(`${tab}_lora-button`).click();
})"""


def _visible_names(page) -> list[str]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('#txt2img_lora_cards > .card'))
                              .filter(c => !c.hidden).map(c => c.dataset.name)""")


@pytest.mark.browser
def test_lora_cards(lora_server, tmp_path):
    srv, lora = lora_server
    config = requests.get(srv.url + "/config", timeout=30).text
    assert "net_0000" not in config and "ink.preview" not in config   # nothing of the cards is in the page config
    with browser_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_ui(page, srv)
        assert page.locator(".card").count() == 0   # lazy: no card exists before the tab is opened

        opened = page.evaluate(OPEN_TAB_JS, "txt2img")
        print(f"\nLora tab with {BULK + 2 + DEMO} LoRAs: opened in {opened['ms']:.0f} ms (pane answered after "
              f"{opened['server']} ms, inserted {opened['insert']} ms, ready {opened['ready']} ms), "
              f"{opened['cards']} cards")
        assert opened["cards"] == BULK + 2 + DEMO
        assert opened["ms"] < OPEN_LIMIT_MS, f"the Lora tab took {opened['ms']:.0f} ms to open"
        demo_previews = len(list(DEMO_LORA_DIR.glob("*.preview.png")))
        assert page.locator("#txt2img_lora_cards img.preview").count() == 1 + demo_previews
        assert page.locator("#txt2img_lora_cards .card[data-name=ink] img.preview").get_attribute("loading") == "lazy"

        # search filters the cards; folders filter by subfolder; "all" shows them again
        page.locator("#txt2img_lora_extra_search").fill("fla")
        page.wait_for_function("() => document.querySelectorAll('#txt2img_lora_cards > .card:not([hidden])').length"
                               " === 1")
        assert _visible_names(page) == ["flat"]
        page.locator("#txt2img_lora_extra_search").fill("")
        page.locator("#txt2img_lora_dirs .extra-network-dir[data-path=styles]").click()
        assert _visible_names(page) == ["flat"]
        page.locator("#txt2img_lora_dirs .extra-network-dir[data-path='']").click()
        assert len(_visible_names(page)) == BULK + 2 + DEMO
        # sort by name, descending
        page.locator("#txt2img_lora_extra_sort").select_option("name")
        page.locator("#txt2img_lora_extra_sortdir").click()
        assert _visible_names(page)[:2] == ["net_1999", "net_1998"]

        # the preview is served by the thumb route; a picture outside the Lora folders is refused
        page.locator("#txt2img_lora_extra_search").fill("ink")
        page.wait_for_function("() => { const i = document.querySelector('#txt2img_lora_cards .card[data-name=ink] img.preview');"
                               " return i && i.complete && i.naturalWidth === 32; }")
        refused = requests.get(srv.url + "/sd_extra_networks/thumb",
                               params={"filename": str(tmp_path / "outside.png")}, timeout=30)
        assert refused.status_code == 403 and "not inside the Extra Networks folders" in refused.json()["detail"]

        # a click inserts the token with the preferred weight; a second click takes it out
        prompt = page.locator("#txt2img_prompt textarea")
        prompt.fill("a cat")
        card = page.locator("#txt2img_lora_cards .card[data-name=ink]")
        card.click(position={"x": 20, "y": 60})
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.includes('<lora:')")
        assert prompt.input_value() == "a cat <lora:ink:0.8>"
        card.click(position={"x": 20, "y": 60})
        assert prompt.input_value() == "a cat"
        card.click(position={"x": 20, "y": 60})

        # the metadata editor saves ink.json in A1111's format, and the card shows the new description
        card.hover()
        card.locator(".edit-button").click()
        dialog = page.locator("#extra_networks_dialog")
        dialog.locator("[data-key=description]").wait_for(state="visible")
        assert dialog.locator("[data-key='preferred weight']").input_value() == "0.8"
        dialog.locator("[data-key=description]").fill("Ink wash lines")
        dialog.locator("[data-key='activation text']").fill("inkwash")
        screenshot(page, "extra_networks_editor")
        dialog.locator(".extra-network-save").click()
        page.wait_for_function("() => !document.getElementById('extra_networks_dialog').open")
        saved = json.loads((lora / "ink.json").read_text(encoding="utf8"))
        assert saved["description"] == "Ink wash lines" and saved["preferred weight"] == 0.8
        assert saved["activation text"] == "inkwash" and set(saved) >= {"negative text", "notes", "sd version"}
        assert "Ink wash lines" in card.locator(".description").inner_text()
        # the clicked token now brings its activation text, and a second click removes both
        card.click(position={"x": 20, "y": 60})   # removes the earlier <lora:ink:0.8>
        card.click(position={"x": 20, "y": 60})
        assert prompt.input_value() == "a cat <lora:ink:0.8> inkwash"
        card.click(position={"x": 20, "y": 60})
        assert prompt.input_value() == "a cat"

        # refresh finds a file added since, and keeps the search typed
        _lora(lora / "late.safetensors", 3)
        page.locator("#txt2img_lora_extra_search").fill("late")
        page.locator("#txt2img_lora_extra_refresh").click()
        page.locator("#txt2img_lora_cards .card[data-name=late]").wait_for(state="visible")
        assert _visible_names(page) == ["late"]
        assert page.locator("#txt2img_lora_extra_search").input_value() == "late"
        screenshot(page, "extra_networks_lora")

        # Textual Inversion: loaded and skipped embeddings; a click adds the name to the prompt box last focused
        page.locator("#txt2img_neg_prompt textarea").fill("blurry")
        page.locator("#txt2img_neg_prompt textarea").focus()
        page.locator("#txt2img_textual_inversion-button").click()
        page.locator("#txt2img_textual_inversion_cards .card[data-name=goodcolor]").wait_for(state="visible")
        skipped = page.locator("#txt2img_textual_inversion_cards .card-skipped").evaluate_all(
            "cs => cs.map(c => c.dataset.name)")
        assert "widexl" in skipped and "goodcolor" not in skipped   # (the bundled demo-pink, width 64, too)
        page.locator("#txt2img_textual_inversion_cards .card[data-name=goodcolor]").click()
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry goodcolor"
        assert prompt.input_value() == "a cat"

        # Checkpoints: a click loads that checkpoint (through the top bar's dropdown)
        page.locator("#txt2img_checkpoints-button").click()
        page.locator("#txt2img_checkpoints_cards .card[data-name=tiny_sd1_b]").click()
        page.wait_for_function("() => document.querySelector('#setting_sd_model_checkpoint input').value"
                               ".startsWith('tiny_sd1_b')")
        deadline = time.monotonic() + 120
        while "tiny_sd1_b" not in requests.get(srv.api("options"), timeout=30).json()["sd_model_checkpoint"]:
            assert time.monotonic() < deadline, "the checkpoint card did not load tiny_sd1_b"
            time.sleep(0.2)   # polling interval; the loop ends on the condition

        # the img2img tab has its own pane, built on its first opening
        page.locator("#tab_img2img-button").click()
        opened = page.evaluate(OPEN_TAB_JS, "img2img")
        assert opened["cards"] == BULK + 3 + DEMO
        assert errors == []
