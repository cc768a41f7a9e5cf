"""Token merging (A1111's token_merging_ratio, through tomesd) on a tiny real model."""
from __future__ import annotations

import numpy as np
import pytest

from modules.engine import speedups
from modules.engine.run import RunOptions
from tests.support.engine_helpers import load_tiny, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("tome"))


def _blocks(model):
    return [type(m).__name__ for m in model.unet.modules() if type(m).__name__.endswith("TransformerBlock")
            or type(m).__name__ == "ToMeBlock"]


def test_ratio_changes_the_image_patches_only_during_the_pass_and_is_recorded(model):
    seen = []
    hooks = None
    plain = run(model, width=64, height=64)
    from modules.engine.hooks import Hooks
    hooks = Hooks()
    hooks.add("after_step", lambda args: seen.append(sorted(set(_blocks(model)))))
    merged = run(model, RunOptions(speed=speedups.SpeedOptions(token_merging_ratio=0.5)), hooks=hooks,
                 width=64, height=64)
    assert seen and all(names == ["ToMeBlock"] for names in seen)  # patched while sampling
    assert "ToMeBlock" not in _blocks(model)                        # and restored after
    a, b = (np.asarray(r.images[0]).astype(np.int16) for r in (plain, merged))
    assert np.abs(a - b).max() > 0
    assert "Token merging ratio: 0.5" in merged.infotexts[0] and "Token merging" not in plain.infotexts[0]
    again = run(model, width=64, height=64)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(plain.images[0]))


def test_a1111_ratio_rules():
    s = speedups.SpeedOptions(token_merging_ratio=0.3, token_merging_ratio_img2img=0.2, token_merging_ratio_hr=0.5)
    assert (s.ratio("txt2img"), s.ratio("img2img"), s.ratio("txt2img", hires=True)) == (0.3, 0.2, 0.5)
    assert speedups.SpeedOptions(token_merging_ratio=0.3).ratio("txt2img", hires=True) == 0.3
    assert speedups.SpeedOptions(token_merging_ratio=0.3).ratio("img2img") == 0.3
    over = speedups.SpeedOptions(0.3, 0.2, 0.0, ratio_overridden=True)
    assert over.ratio("img2img") == 0.3


def test_settings_are_checked_with_the_key_named():
    values = {"token_merging_ratio": 0.95}
    with pytest.raises(ValueError, match="token_merging_ratio: expected a number from 0 to 0.9"):
        speedups.from_settings(lambda k, d: values.get(k, d))
    ok = speedups.from_settings(lambda k, d: {"token_merging_ratio_hr": "0.4"}.get(k, d), {"token_merging_ratio": 0})
    assert ok == speedups.SpeedOptions(0.0, 0.0, 0.4, ratio_overridden=True)


def test_feature_cache_runs_the_deep_blocks_every_nth_call_only(model):
    from modules.engine.hooks import Hooks
    inner = model.unet.down_blocks[1].resnets[0]
    calls = []
    handle = inner.register_forward_hook(lambda *a: calls.append(1))
    steps = []
    hooks = Hooks()
    hooks.add("after_step", lambda args: steps.append(1))
    try:
        plain = run(model, steps=6, width=64, height=64)
        full_calls = len(calls)
        calls.clear()
        cached = run(model, RunOptions(speed=speedups.SpeedOptions(feature_cache_interval=3)), hooks=hooks,
                     steps=6, width=64, height=64)
    finally:
        handle.remove()
    assert len(steps) == 6 and full_calls == 6 and len(calls) == 2      # calls 0 and 3 of 6 ran the deep blocks
    assert "forward" not in model.unet.down_blocks[1].__dict__           # restored after the pass
    a, b = (np.asarray(r.images[0]).astype(np.int16) for r in (plain, cached))
    assert np.abs(a - b).max() > 0 and np.abs(a - b).mean() < 40         # an approximation, not another image
    assert "Feature cache interval: 3" in cached.infotexts[0]
    again = run(model, steps=6, width=64, height=64)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(plain.images[0]))


def test_feature_cache_setting_is_checked():
    with pytest.raises(ValueError, match="feature_cache_interval: expected a whole number from 0 to 10"):
        speedups.from_settings(lambda k, d: {"feature_cache_interval": 11}.get(k, d))
    assert speedups.from_settings(lambda k, d: {"feature_cache_interval": "3"}.get(k, d)).feature_cache_interval == 3


def test_settings_are_a1111_keys_with_translated_labels():
    import json
    from pathlib import Path
    templates = speedups.option_templates()
    assert list(templates) == ["token_merging_ratio", "token_merging_ratio_img2img", "token_merging_ratio_hr",
                               "feature_cache_interval"]
    assert all(t.default == 0 and t.section[1] == "Optimizations" for t in templates.values())
    zh = json.loads((Path(__file__).resolve().parents[2] / "localizations" / "zh_CN.json").read_text("utf-8"))
    assert all(t.label in zh for t in templates.values())
