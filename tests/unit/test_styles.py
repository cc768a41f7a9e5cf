"""styles.csv in A1111's format and the {prompt} rule."""
from __future__ import annotations

import pytest

from modules.engine.params import ParamError
from modules.styles import Style, StyleDatabase


def test_styles_apply_with_and_without_placeholder(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\n'
                    'Cinematic,"cinematic still of {prompt}, film grain",blurry\n'
                    '"Sharp, clean","ultra sharp",\n', encoding="utf-8")
    db = StyleDatabase(path)
    assert list(db.styles) == ["Cinematic", "Sharp, clean"]
    assert db.apply("a cat", "ugly", ["Cinematic"]) == ("cinematic still of a cat, film grain", "ugly, blurry")
    assert db.apply("a cat", "", ["Sharp, clean"]) == ("a cat, ultra sharp", "")
    assert db.apply("a cat", "", ["Cinematic", "Sharp, clean"])[0] == \
        "cinematic still of a cat, film grain, ultra sharp"
    with pytest.raises(ParamError, match="styles: unknown style\\(s\\) \\['Nope'\\]"):
        db.apply("a", "", ["Nope"])
    db.save([Style("Only", "x {prompt} y", "z")])
    assert StyleDatabase(path).apply("cat", "", ["Only"]) == ("x cat y", "z")
