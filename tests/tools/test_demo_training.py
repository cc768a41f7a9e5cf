"""Training helpers of the demo model that guard the result: the compiled-step gradient check and the colour
oversampling of the draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.demo_model import common, data
from tools.demo_model.unet import oversample_weights


def _model_and_inputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.SiLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    return net, (x, y)


def test_same_gradients_pass_the_compile_check():
    net, inputs = _model_and_inputs()

    def loss(x, y):
        return torch.nn.functional.mse_loss(net(x), y)

    def reordered(x, y):  # the same loss, computed another way
        return ((net(x) - y) ** 2).sum() / y.numel()

    err, _ = common.compiled_grad_error(loss, reordered, list(net.parameters()), inputs)
    assert err < 1e-5
    assert all(p.grad is None for p in net.parameters())


def test_a_wrong_bias_gradient_is_caught_and_named():
    net, inputs = _model_and_inputs()
    params = list(net.parameters())

    def loss(x, y):
        return torch.nn.functional.mse_loss(net(x), y)

    def wrong(x, y):  # same value, but the last bias gets 5x its gradient (what the miscompiled step did)
        b = net[2].bias
        out = net(x) + 4 * (b - b.detach())
        return torch.nn.functional.mse_loss(out, y) + 0 * b.sum()

    err, where = common.compiled_grad_error(loss, wrong, params, inputs)
    assert err > 1.0
    assert params[where] is net[2].bias


def test_oversampled_colours_are_drawn_that_much_more_often():
    rng = np.random.default_rng(3)
    captions = [data.random_scene(rng).caption for _ in range(600)]
    assert oversample_weights(captions, []) is None
    w = oversample_weights(captions, ["orange=3", "black=2"])
    for cap, weight in zip(captions, w.tolist()):
        colours = {o["color"] for o in data.parse_caption(cap)[1]}
        assert weight == (3.0 if "orange" in colours else 2.0 if "black" in colours else 1.0)
    torch.manual_seed(0)
    drawn = torch.multinomial(w, 20_000, replacement=True)
    has_orange = torch.tensor(["orange" in c for c in captions])
    share = has_orange[drawn].float().mean().item()
    expected = float((w * has_orange).sum() / w.sum())
    assert abs(share - expected) < 0.02 and share > 1.5 * has_orange.float().mean().item()


def test_oversample_rejects_unknown_colours_and_bad_factors():
    caps = ["a large red circle on the left, blue background"]
    for bad, words in (("pink=2", "COLOUR one of red"), ("orange", "COLOUR=FACTOR"), ("orange=x", "number"),
                       ("orange=0", "above 0")):
        with pytest.raises(SystemExit, match=words):
            oversample_weights(caps, [bad])
