"""Extra Networks pages (A1111's page API): items and cards from real files in a tmp folder, the token a click
inserts, previews and the thumb route's folder rule, the metadata editor's name.json, and an extension's own page."""
from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules import ui_extra_networks
from modules.networks.network_files import NetworkCatalog
from modules.options import Options
from modules.ui import extra_networks, extra_networks_metadata
from modules.ui_extra_networks import ExtraNetworksPage, quote_js
from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks
from modules.ui_extra_networks_textual_inversion import ExtraNetworksPageTextualInversion
from tests.support import ROOT

LORA_PAGE = ROOT / "extensions-builtin" / "Lora" / "ui_extra_networks_lora.py"


def _lora_module():
    spec = importlib.util.spec_from_file_location("ui_extra_networks_lora_under_test", LORA_PAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lora_file(path: Path, metadata: dict | None = None) -> Path:
    """A small LoRA in kohya's key layout (one down/up pair and its alpha)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(32, 4),
               "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}
    save_file(tensors, str(path), metadata=metadata)
    return path


def _png(path: Path, color=(200, 30, 30)) -> Path:
    Image.new("RGB", (8, 8), color).save(path)
    return path


@pytest.fixture
def opts(monkeypatch):
    """The settings the pages read (defaults, no runtime); tests change them in .data."""
    options = Options(None)
    monkeypatch.setattr(ui_extra_networks, "_fallback_options", options)
    monkeypatch.setattr(ui_extra_networks.shared, "bound", lambda: False)
    return options


@pytest.fixture
def lora_dir(tmp_path):
    root = tmp_path / "Lora"
    _lora_file(root / "ink.safetensors", {"ss_output_name": "inkwash", "ss_network_module": "networks.lora"})
    _png(root / "ink.preview.png")
    (root / "ink.json").write_text(json.dumps({"preferred weight": 0.8, "activation text": "ink lines",
                                               "negative text": "colour", "custom key": [1, 2]}), encoding="utf8")
    _lora_file(root / "styles" / "flat.safetensors")
    _png(root / "styles" / "flat.png", (10, 200, 10))
    (root / "styles" / "flat.txt").write_text("Flat colours <b>bold</b>", encoding="utf8")
    _lora_file(root / "styles" / "deep" / "plain.safetensors")
    (root / "styles" / "deep" / "notes.md").write_text("not a network")
    return root


@pytest.fixture
def lora_page(lora_dir, opts):
    page = _lora_module().ExtraNetworksPageLora(NetworkCatalog(lambda: [lora_dir]))
    ui_extra_networks.initialize()
    ui_extra_networks.register_page(page)
    yield page
    ui_extra_networks.initialize()


def _items(page) -> dict:
    html_text = page.create_html("txt2img")
    assert html_text
    return page.items


def test_lora_items_token_preview_and_description(lora_page, lora_dir):
    items = _items(lora_page)
    assert list(items) == ["ink", "plain", "flat"]   # by path (the default sort setting): styles/deep before flat
    ink, flat, plain = items["ink"], items["flat"], items["plain"]
    # the token: alias from the file, preferred weight from ink.json, activation text after, negative as (text:1)
    assert ink["prompt"] == quote_js("<lora:inkwash:") + " + 0.8 + " + quote_js(">") + " + " + quote_js(" ink lines")
    assert ink["negative_prompt"] == quote_js("(colour:1)")
    # no preferred weight: the default multiplier setting at click time (A1111's expression)
    assert flat["prompt"] == quote_js("<lora:flat:") + " + opts.extra_networks_default_multiplier + " + quote_js(">")
    assert flat["negative_prompt"] == quote_js("")
    assert ink["user_metadata"]["custom key"] == [1, 2]
    # previews: name.preview.png and name.png, as thumb links; none for the third
    assert ink["preview"].startswith("./sd_extra_networks/thumb?filename=") and "ink.preview.png" in ink["preview"]
    assert "styles/flat.png" in flat["preview"]
    assert plain["preview"] is None
    assert flat["description"] == "Flat colours <b>bold</b>"
    assert ink["sd_version"] == "SD1" and plain["sd_version"] == "Unknown"
    assert "Lora/styles/deep/plain.safetensors" in plain["search_terms"][0]
    assert ink["local_path"] == "" and flat["local_path"] == "styles" and plain["local_path"] == "styles/deep"
    assert set(ink["sort_keys"]) == {"default", "date_created", "date_modified", "name", "path"}


def test_lora_preferred_name_setting_uses_file_name(lora_page, opts):
    opts.data["lora_preferred_name"] = "Filename"
    assert _items(lora_page)["ink"]["prompt"].startswith(quote_js("<lora:ink:"))


def test_pane_html_cards_are_lazy_and_escaped(lora_page):
    pane = lora_page.create_html("img2img")
    cards = re.findall(r'<div class="card[^"]*"', pane)
    assert len(cards) == 3
    assert pane.count('loading="lazy"') == 2 and pane.count("no preview") == 1
    # the click handler carries the tab and the JavaScript expression, HTML-escaped inside the attribute
    onclick = re.search(r'data-name="ink"', pane) and re.search(r'onclick="(cardClicked[^"]*)" data-name="ink"', pane)
    assert html.unescape(onclick.group(1)).startswith('cardClicked("img2img", "<lora:inkwash:" + 0.8 + ">"')
    # descriptions are text unless the setting says HTML
    assert "Flat colours &lt;b&gt;bold&lt;/b&gt;" in pane
    # folders: the subfolders holding networks, for the folder filter
    assert re.findall(r"data-path='([^']*)'", pane) == ["", "styles", "styles/deep"]
    assert re.findall(r'data-name="([^"]*)"', pane) == ["ink", "plain", "flat"]
    assert "data-sorted='path|False'" in pane
    # controls: search, sort (Path by default, as A1111), direction, folder view, refresh
    for ident in ("img2img_lora_extra_search", "img2img_lora_extra_sort", "img2img_lora_extra_sortdir",
                  "img2img_lora_extra_tree_view", "img2img_lora_extra_refresh", "img2img_lora_cards"):
        assert f"id='{ident}'" in pane
    assert "<option value='path' selected>Path</option>" in pane


def test_pane_route_refresh_picks_up_a_new_file(lora_page, lora_dir):
    first = extra_networks.pane_html("lora", "txt2img")
    assert 'data-name="late"' not in first
    _lora_file(lora_dir / "late.safetensors")
    assert 'data-name="late"' not in extra_networks.pane_html("lora", "txt2img")  # the catalog is not rescanned
    assert 'data-name="late"' in extra_networks.pane_html("lora", "txt2img", refresh=True)
    with pytest.raises(extra_networks.RouteError, match="page='nope'.*lora"):
        extra_networks.pane_html("nope", "txt2img")
    with pytest.raises(extra_networks.RouteError, match="tabname='extras'"):
        extra_networks.pane_html("lora", "extras")


def test_thumb_route_serves_previews_only_inside_page_folders(lora_page, lora_dir, tmp_path):
    _items(lora_page)
    ok = extra_networks.thumb_path(str(lora_dir / "ink.preview.png"))
    assert ok == str((lora_dir / "ink.preview.png").resolve())
    outside = _png(tmp_path / "secret.png")
    with pytest.raises(extra_networks.RouteError) as refused:
        extra_networks.thumb_path(str(outside))
    assert refused.value.status == 403 and "not inside the Extra Networks folders" in str(refused.value)
    with pytest.raises(extra_networks.RouteError) as escaped:
        extra_networks.thumb_path(str(lora_dir / "styles" / ".." / ".." / "secret.png"))
    assert escaped.value.status == 403
    with pytest.raises(extra_networks.RouteError) as not_image:
        extra_networks.thumb_path(str(lora_dir / "ink.json"))
    assert not_image.value.status == 403 and "only images" in str(not_image.value)
    link = outside.parent / "Lora" / "link.png"
    link.symlink_to(outside)   # a link inside the folder to a picture outside it is refused too
    with pytest.raises(extra_networks.RouteError):
        extra_networks.thumb_path(str(link))
    with pytest.raises(extra_networks.RouteError) as missing:
        extra_networks.thumb_path(str(lora_dir / "gone.png"))
    assert missing.value.status == 404


def test_metadata_editor_saves_a1111_json_and_the_card_follows(lora_page, lora_dir):
    _items(lora_page)
    data = extra_networks_metadata.editor_data(lora_page, "flat")
    fields = {f["key"]: f for f in data["fields"]}
    assert list(fields) == ["description", "sd version", "activation text", "preferred weight", "negative text",
                            "notes"]
    assert fields["description"]["value"] == "Flat colours <b>bold</b>"   # from flat.txt until saved
    assert fields["sd version"]["choices"] == ["Unknown", "SD1", "SD2", "SDXL"]
    ink = extra_networks_metadata.editor_data(lora_page, "ink")
    assert json.loads(ink["file_metadata"])["ss_output_name"] == "inkwash"   # the file's own metadata, read-only

    saved = extra_networks_metadata.save(lora_page, "flat", {"description": "Edited", "preferred weight": "0.6",
                                                             "activation text": "flat shading", "sd version": "SD1",
                                                             "negative text": "", "notes": "n"})
    on_disk = json.loads((lora_dir / "styles" / "flat.json").read_text(encoding="utf8"))
    assert on_disk == saved == {"description": "Edited", "preferred weight": 0.6, "activation text": "flat shading",
                                "sd version": "SD1", "negative text": "", "notes": "n"}
    card = extra_networks.single_card("lora", "txt2img", "flat")
    assert "Edited" in card and html.escape(quote_js("<lora:flat:") + " + 0.6 + ") in card
    # unknown keys already in the file are kept
    extra_networks_metadata.save(lora_page, "ink", {"notes": "x"})
    assert json.loads((lora_dir / "ink.json").read_text(encoding="utf8"))["custom key"] == [1, 2]

    with pytest.raises(extra_networks_metadata.MetadataError, match="preferred weight: '3' is outside 0 to 2"):
        extra_networks_metadata.save(lora_page, "flat", {"preferred weight": "3"})
    with pytest.raises(extra_networks_metadata.MetadataError, match="preferred weight: 'heavy' is not a number"):
        extra_networks_metadata.save(lora_page, "flat", {"preferred weight": "heavy"})
    with pytest.raises(extra_networks_metadata.MetadataError, match=r"sd version: 'SD3' is not one of"):
        extra_networks_metadata.save(lora_page, "flat", {"sd version": "SD3"})
    with pytest.raises(extra_networks_metadata.MetadataError, match=r"\['rating'\] are not editable.*description"):
        extra_networks_metadata.save(lora_page, "flat", {"rating": 5})
    with pytest.raises(extra_networks_metadata.MetadataError, match="item 'nope'"):
        extra_networks_metadata.save(lora_page, "nope", {})
    assert json.loads((lora_dir / "styles" / "flat.json").read_text(encoding="utf8"))["preferred weight"] == 0.6


def test_lora_cards_follow_the_loaded_model_family(lora_page, opts, monkeypatch):
    module_globals = type(lora_page)._settings.__globals__
    monkeypatch.setitem(module_globals, "_loaded_family", lambda: "SDXL")   # an SDXL model is loaded
    assert list(_items(lora_page)) == ["plain", "flat"]   # the SD1 file hidden; unknown ones shown (A1111's default)
    opts.data["lora_hide_unknown_for_versions"] = ["SDXL"]
    assert list(_items(lora_page)) == []
    assert lora_page.create_item("ink", enable_filter=False)["name"] == "ink"   # the editor still finds it
    opts.data["lora_show_all"] = True
    assert list(_items(lora_page)) == ["ink", "plain", "flat"]
    monkeypatch.setitem(module_globals, "_loaded_family", lambda: "SD1")
    opts.data["lora_show_all"] = False
    assert list(_items(lora_page)) == ["ink", "plain", "flat"]


def _embedding(name, filename, shape=768, vectors=1):
    return SimpleNamespace(name=name, filename=str(filename), shape=shape, vectors=vectors, step=None,
                           sd_checkpoint_name=None, hash="abcdef0123456789", shorthash="abcdef012345")


def test_textual_inversion_lists_loaded_and_skipped(tmp_path, opts):
    folder = tmp_path / "embeddings"
    (folder / "sub").mkdir(parents=True)
    for name in ("goodcolor.pt", "sub/widexl.safetensors"):
        (folder / name).write_bytes(b"x")
    _png(folder / "goodcolor.preview.png")
    db = SimpleNamespace(word_embeddings={"goodcolor": _embedding("goodcolor", folder / "goodcolor.pt")},
                         skipped_embeddings={"widexl": _embedding("widexl", folder / "sub/widexl.safetensors", 1280)},
                         embedding_dirs={str(folder): None}, expected_shape=768)
    page = ExtraNetworksPageTextualInversion(db)
    pane = page.create_html("txt2img")
    assert list(page.items) == ["goodcolor", "widexl"]
    assert page.items["goodcolor"]["prompt"] == quote_js("goodcolor")
    assert page.allow_negative_prompt is True
    assert "skipped" not in page.items["goodcolor"]
    assert page.items["widexl"]["skipped"] == "skipped: width 1280, the model takes 768"
    assert pane.count('class="card card-skipped"') == 1 and "abcdef0123456789" in pane
    assert page.items["goodcolor"]["preview"] is not None and page.items["widexl"]["local_path"] == "sub"


def test_hypernetwork_token(tmp_path, opts):
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    (folder / "anime_3.pt").write_bytes(b"x")
    page = ExtraNetworksPageHypernetworks(NetworkCatalog(lambda: [folder], (".pt",), kind="hypernet"))
    page.create_html("txt2img")
    assert page.items["anime_3"]["prompt"] == (quote_js("<hypernet:anime_3:") +
                                               " + opts.extra_networks_default_multiplier + " + quote_js(">"))


def test_checkpoints_select_on_click(tmp_path, opts):
    from modules.models.hashing import HashCache
    from modules.models.registry import ModelRegistry
    folder = tmp_path / "Stable-diffusion"
    (folder / "sd15").mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, str(folder / "sd15" / "base.safetensors"))
    _png(folder / "sd15" / "base.png")
    registry = ModelRegistry([folder], tmp_path / "VAE", HashCache(tmp_path / "h.json"), hashing=False)
    from modules.ui_extra_networks_checkpoints import ExtraNetworksPageCheckpoints
    page = ExtraNetworksPageCheckpoints(registry)
    pane = page.create_html("txt2img")
    item = page.items["sd15/base"]
    assert html.unescape(item["onclick"]) == 'return selectCheckpoint("sd15/base.safetensors")'
    assert page.allow_prompt is False and item["preview"] is not None
    assert "selectCheckpoint(&quot;sd15/base.safetensors&quot;)" in pane


class ExtensionPage(ExtraNetworksPage):
    """An extension's page written against A1111's API (old-style `search_term` string, its own onclick)."""

    def __init__(self, folder):
        super().__init__("My Styles")
        self.folder = folder

    def list_items(self):
        for index, path in enumerate(sorted(self.folder.glob("*.txt"))):
            yield {"name": path.stem, "filename": str(path), "preview": self.find_preview(str(path.with_suffix(""))),
                   "description": path.read_text(), "search_term": self.search_terms_from_path(str(path)),
                   "prompt": quote_js(f"style of {path.stem}"), "local_preview": str(path.with_suffix(".png")),
                   "sort_keys": {"default": index, **self.get_sort_keys(str(path))}}

    def allowed_directories_for_previews(self):
        return [str(self.folder)]


def test_an_extension_page_registers_and_renders(tmp_path, opts, lora_page):
    folder = tmp_path / "mystyles"
    folder.mkdir()
    (folder / "noir.txt").write_text("black and white")
    _png(folder / "noir.png")
    page = ExtensionPage(folder)
    ui_extra_networks.register_page(page)
    assert page.extra_networks_tabname == "my_styles" and ui_extra_networks.find_page("my_styles") is page
    assert str(folder) in ui_extra_networks.allowed_dirs
    pane = extra_networks.pane_html("my_styles", "txt2img")
    assert 'data-name="noir"' in pane and "mystyles/noir.txt" in pane and "black and white" in pane
    assert extra_networks.thumb_path(str(folder / "noir.png")).endswith("noir.png")
    # A1111's tab order setting: pages whose name contains an earlier entry come first
    opts.data["ui_extra_networks_tab_reorder"] = "my styles, lora"
    assert [p.name for p in ui_extra_networks.pages_in_preferred_order(ui_extra_networks.extra_pages)] == \
        ["my styles", "lora"]

    class Broken(ExtensionPage):
        def list_items(self):
            raise RuntimeError("disk on fire")
    broken = Broken(folder)
    broken.title, broken.name, broken.extra_networks_tabname = "Broken", "broken", "broken"
    ui_extra_networks.register_page(broken)
    assert "Broken: disk on fire" in extra_networks.pane_html("broken", "txt2img")   # shown in its pane, not a 500


def test_cards_come_in_the_order_the_settings_ask(lora_page, opts):
    opts.data["extra_networks_card_order_field"] = "Name"
    opts.data["extra_networks_card_order"] = "Descending"
    pane = lora_page.create_html("txt2img")
    assert re.findall(r'data-name="([^"]*)"', pane) == ["plain", "ink", "flat"]
    assert "data-sorted='name|True'" in pane and "<option value='name' selected>Name</option>" in pane
    assert "data-sortdir='Descending'" in pane


def test_warm_up_scans_the_lora_folder_in_the_background(lora_page):
    assert not lora_page.catalog.refreshed

    class Failing(ExtraNetworksPage):
        def warm(self):
            raise OSError("unreadable folder")
    ui_extra_networks.register_page(Failing("Failing"))
    extra_networks.warm_up().join(timeout=30)   # a failing page is logged; the others are still warmed
    assert lora_page.catalog.refreshed and "ink" in lora_page.catalog.available
