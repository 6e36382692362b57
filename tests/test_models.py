"""Tests for sslkit.models: the linear model, the MLP backbone and the projector head."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslkit.models import MLP, Linear, Projector

# ------------------------------------------------------------------------------ Linear


@pytest.mark.parametrize("init_scale", [1.0, 1e-3])
def test_linear_init_std_and_no_bias(init_scale):
    torch.manual_seed(0)
    fan_in, out = 2000, 500  # 10⁶ weights: the std estimate is good to ≈ 0.07 %
    model = Linear((fan_in,), out, init_scale=init_scale)
    params = list(model.parameters())
    assert len(params) == 1, "the linear model has no bias"
    w = params[0].detach().double()
    assert tuple(w.shape) == (out, fan_in)
    assert w.std().item() == pytest.approx(init_scale / math.sqrt(fan_in), rel=0.01)
    assert abs(w.mean().item()) < 0.01 * init_scale / math.sqrt(fan_in)
    assert abs(excess_kurtosis(w)) < 0.05  # normal, not uniform (−1.2)
    assert model.out_dim == out
    assert torch.equal(model(torch.zeros(3, fan_in)), torch.zeros(3, out))


def test_linear_flattens_images():
    torch.manual_seed(0)
    model = Linear((1, 8, 8), 5, init_scale=0.5)
    (w,) = model.parameters()
    assert tuple(w.shape) == (5, 64)
    x = torch.randn(7, 1, 8, 8, dtype=torch.float32)
    y = model(x)
    assert y.shape == (7, 5)
    # y_bk = Σ_{c,i,j} W[k, 64c + 8i + j] · x[b, c, i, j], row-major flattening
    expected = torch.einsum("kcij,bcij->bk", w.detach().double().reshape(5, 1, 8, 8), x.double())
    torch.testing.assert_close(y.detach().double(), expected, rtol=1e-5, atol=1e-6)
    # linear: f(2x + x') = 2 f(x) + f(x')
    x2 = torch.randn(7, 1, 8, 8)
    torch.testing.assert_close(model(2 * x + x2), 2 * model(x) + model(x2), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------- MLP


def excess_kurtosis(w: torch.Tensor) -> float:
    """0 for a normal distribution, −1.2 for a uniform one."""
    w = w.detach().double().flatten()
    w = w - w.mean()
    return (w.pow(4).mean() / w.pow(2).mean() ** 2).item() - 3


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_structure_and_output(depth):
    torch.manual_seed(0)
    width, out = 32, 10
    model = MLP((1, 8, 8), width=width, depth=depth, out_dim=out, init_scale=1.0)
    layers = linears(model)
    assert len(layers) == depth + 1
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == depth
    assert [(lin.in_features, lin.out_features) for lin in layers] == [(64, width)] + [(width, width)] * (
        depth - 1
    ) + [(width, out)]
    for lin in layers[:-1]:
        assert lin.bias is not None and not bool(lin.bias.any()), "hidden biases start at zero"
    assert layers[-1].bias is None
    assert model.out_dim == out
    # forward equals the explicit chain relu(... relu(x W1ᵀ + b1) ...) Wᵀ_out
    x = torch.randn(6, 1, 8, 8)
    h = x.reshape(6, 64).double()
    for lin in layers[:-1]:
        h = torch.clamp(h @ lin.weight.detach().double().T + lin.bias.detach().double(), min=0)
    expected = h @ layers[-1].weight.detach().double().T
    y = model(x)
    assert y.shape == (6, out)
    torch.testing.assert_close(y.detach().double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init_scale", [1.0, 0.01])
def test_mlp_init_scales(init_scale):
    torch.manual_seed(0)
    fan_in, width, out = 300, 2000, 500
    model = MLP((fan_in,), width=width, depth=2, out_dim=out, init_scale=init_scale)
    hidden1, hidden2, readout = linears(model)
    # read-out N(0, init_scale²/width): 10⁶ weights
    readout_std = readout.weight.detach().double().std().item()
    assert readout_std == pytest.approx(init_scale / math.sqrt(width), rel=0.01)
    # hidden layers: He, N(0, 2/fan_in), independent of init_scale
    assert hidden1.weight.detach().double().std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
    assert hidden2.weight.detach().double().std().item() == pytest.approx(math.sqrt(2 / width), rel=0.01)
    # all three are normal, not merely of the right variance (sd of the estimate ≈ 0.005)
    for layer in (hidden1, hidden2, readout):
        assert abs(excess_kurtosis(layer.weight)) < 0.05


# -------------------------------------------------------------------------- Projector


def test_projector_layer_structure():
    torch.manual_seed(0)
    proj = Projector(32, [64, 48], 16)
    kinds = [type(m) for m in proj]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    lins = [m for m in proj if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lins] == [(32, 64), (64, 48), (48, 16)]
    assert all(m.bias is None for m in lins)
    assert [m.num_features for m in proj if isinstance(m, nn.BatchNorm1d)] == [64, 48]
    assert proj.out_dim == 16
    z = proj(torch.randn(10, 32))
    assert z.shape == (10, 16)


def test_projector_forward_in_training_mode_normalises_per_batch():
    torch.manual_seed(0)
    proj = Projector(12, [20], 5)
    x = torch.randn(64, 12, dtype=torch.float32) * 3 + 2
    lin1, bn, _, lin2 = proj
    h = x.double() @ lin1.weight.detach().double().T
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)  # BN at init: γ = 1, β = 0
    expected = torch.clamp(h, min=0) @ lin2.weight.detach().double().T
    torch.testing.assert_close(proj(x).detach().double(), expected, rtol=1e-4, atol=1e-5)


def test_projector_without_hidden_layers_is_one_linear():
    proj = Projector(32, [], 8)
    assert [type(m) for m in proj] == [nn.Linear]
    assert (proj[0].in_features, proj[0].out_features) == (32, 8) and proj.out_dim == 8


def test_projector_init_scale_scales_the_last_layer_only():
    torch.manual_seed(3)
    plain = Projector(32, [64], 16)
    torch.manual_seed(3)
    small = Projector(32, [64], 16, init_scale=1e-3)
    torch.testing.assert_close(small[-1].weight, 1e-3 * plain[-1].weight, rtol=1e-6, atol=0)
    torch.testing.assert_close(small[0].weight, plain[0].weight, rtol=0, atol=0)
    x = torch.randn(8, 32)
    torch.testing.assert_close(small(x), 1e-3 * plain(x), rtol=1e-5, atol=1e-9)
