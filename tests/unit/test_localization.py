"""Localization files: A1111's format (third-party packs unchanged), bad files reported with line and column, the
names Settings offers, the shipped zh_CN packs, and the "localization" option over the API."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modules.localization import LoadError, Localizations, load_file
from modules.options import OptionError, Options
from tests.support import ROOT

PACKS = ROOT / "localizations"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a1111_pack_format(tmp_path):
    # written by hand, as third-party packs are: duplicate keys, icons, bilingual values, rtl, unknown keys
    path = write(tmp_path / "ar_AR.json", """{
        "rtl": true,
        "Prompt": "first",
        "⤡": "⤡",
        "Generate": "生成/Generate",
        "A string this UI does not have": "whatever",
        "Prompt": "last"
    }""")
    loc = load_file(path)
    assert not isinstance(loc, LoadError)
    assert loc.name == "ar_AR" and loc.rtl is True
    assert loc.translations["Prompt"] == "last"  # the last duplicate wins
    assert loc.translations["⤡"] == "⤡" and loc.translations["Generate"] == "生成/Generate"
    assert "rtl" not in loc.translations


def test_non_string_values_are_left_out_and_bom_is_accepted(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes('\ufeff{"Seed": "随机数种子", "count": 3, "nested": {"a": "b"}}'.encode("utf-8"))
    loc = load_file(path)
    assert loc.translations == {"Seed": "随机数种子"} and loc.rtl is False


@pytest.mark.parametrize("text, line, column", [
    ('{\n  "Prompt": "提示词",\n  "Seed" "种子"\n}', 3, 10),   # missing colon
    ('{\n  "Prompt": "提示词",\n}', 3, 1),                  # trailing comma
    ('["not", "an", "object"]', 1, 1),
])
def test_bad_file_reports_line_and_column(tmp_path, text, line, column, caplog):
    path = write(tmp_path / "bad.json", text)
    result = load_file(path)
    assert isinstance(result, LoadError)
    assert (result.path, result.line, result.column) == (path, line, column)
    assert f"bad.json:{line}:{column}:" in str(result)


def test_scan_skips_bad_files_and_logs_them_once(tmp_path, caplog):
    locs = write(tmp_path / "localizations" / "zh_TW.json", '{"Prompt": "提示詞"}').parent
    write(locs / "broken.json", '{"Prompt": }')
    ext = write(tmp_path / "extensions" / "sd-webui-foo" / "localizations" / "ja_JP.json", '{"Prompt": "プロンプト"}')
    write(tmp_path / "extensions" / "no-localizations" / "scripts" / "x.py", "")
    registry = Localizations([locs], [tmp_path / "extensions"])
    with caplog.at_level("ERROR", logger="sd.localization"):
        assert registry.choices() == ["None", "ja_JP", "zh_TW"]
        assert registry.choices() == ["None", "ja_JP", "zh_TW"]
    errors = registry.errors()
    assert [e.path.name for e in errors] == ["broken.json"] and errors[0].line == 1 and errors[0].column == 12
    assert sum("broken.json:1:12" in r.getMessage() for r in caplog.records) == 1
    assert registry.get("ja_JP").path == ext and registry.get("None") is None and registry.get("nope") is None


def test_files_are_reread_when_they_change(tmp_path):
    path = write(tmp_path / "l" / "de_DE.json", '{"Prompt": "Eingabe"}')
    registry = Localizations([path.parent])
    assert registry.get("de_DE").translations == {"Prompt": "Eingabe"}
    write(path, '{"Prompt": "Prompt-Text", "Seed": "Startwert"}')
    assert registry.get("de_DE").translations == {"Prompt": "Prompt-Text", "Seed": "Startwert"}
    write(path.parent / "fr_FR.json", "{}")
    assert "fr_FR" in registry.names()


def test_localization_option_accepts_only_existing_names(tmp_path):
    write(tmp_path / "l" / "zh_CN.json", '{"Prompt": "提示词"}')
    registry = Localizations([tmp_path / "l"])
    opts = Options(tmp_path / "config.json")
    opts.info["localization"].choices = registry.choices
    with pytest.raises(OptionError) as err:
        opts.set("localization", "klingon")
    assert "'localization'" in str(err.value) and "'zh_CN'" in str(err.value) and "'None'" in str(err.value)
    assert opts.set("localization", "zh_CN")
    assert json.loads((tmp_path / "config.json").read_text())["localization"] == "zh_CN"


# --- the packs we ship -------------------------------------------------------------------------------------------
def test_shipped_packs_parse_and_use_the_community_terms():
    zh = load_file(PACKS / "zh_CN.json")
    both = load_file(PACKS / "zh_CN-en.json")
    assert not isinstance(zh, LoadError) and not isinstance(both, LoadError)
    terms = {"txt2img": "文生图", "img2img": "图生图", "Prompt": "提示词", "Negative prompt": "反向提示词",
             "Generate": "生成", "Settings": "设置", "Sampling method": "采样方法", "Sampling steps": "迭代步数",
             "CFG Scale": "提示词引导系数", "Seed": "随机数种子", "Hires. fix": "高分辨率修复", "Inpaint": "局部重绘",
             "Denoising strength": "重绘幅度", "Extras": "后期处理", "PNG Info": "图片信息",
             "Checkpoint Merger": "模型融合", "Width": "宽度", "Height": "高度", "Interrupt": "中止", "Skip": "跳过"}
    for english, chinese in terms.items():
        assert zh.translations[english] == chinese
        assert both.translations[english] == f"{chinese}/{english}"
    assert set(zh.translations) == set(both.translations)
    # every message template keeps its placeholders in the translation
    for english, chinese in zh.translations.items():
        assert sorted(re.findall(r"\{\w*\}", english)) == sorted(re.findall(r"\{\w*\}", chinese)), english


def test_no_duplicate_keys_in_shipped_packs():
    for path in (PACKS / "zh_CN.json", PACKS / "zh_CN-en.json"):
        pairs = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=lambda p: p)
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), path


def test_bilingual_pack_is_generated_from_zh_cn():
    from tools.bilingual_localization import bilingual
    zh = json.loads((PACKS / "zh_CN.json").read_text(encoding="utf-8"))
    assert json.loads((PACKS / "zh_CN-en.json").read_text(encoding="utf-8")) == bilingual(zh), \
        "run: python -m tools.bilingual_localization localizations/zh_CN.json localizations/zh_CN-en.json"


# --- the API -----------------------------------------------------------------------------------------------------
@pytest.fixture()
def api(tmp_path):
    from fastapi.testclient import TestClient

    import webui
    from modules import cmd_args
    locs = tmp_path / "locs"
    write(locs / "zh_CN.json", (PACKS / "zh_CN.json").read_text(encoding="utf-8"))
    write(locs / "bad.json", '{\n  "Prompt": "x",\n  oops\n}')
    args = cmd_args.parse(["--nowebui", "--skip-load-model-at-start", "--data-dir", str(tmp_path),
                           "--localizations-dir", str(locs)])
    app, _rt = webui.create_app(args)
    with TestClient(app) as client:
        yield client, tmp_path


def test_api_options_show_and_validate_localization(api):
    client, data = api
    assert client.get("/sdapi/v1/options").json()["localization"] == "None"
    r = client.post("/sdapi/v1/options", json={"localization": "xx_XX"})
    assert r.status_code == 422
    assert "localization" in r.text and "zh_CN" in r.text and "None" in r.text and "bad" not in r.json()["detail"]
    assert client.post("/sdapi/v1/options", json={"localization": "zh_CN"}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["localization"] == "zh_CN"
    assert json.loads((data / "config.json").read_text(encoding="utf-8"))["localization"] == "zh_CN"
