"""Training helpers of the demo model that guard the result: the compiled-step gradient check."""

from __future__ import annotations

import torch

from tools.demo_model import common


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
